"""A thread per client, and a bounded pool of worker threads.

Both keep the accepting thread free: a slow client occupies its own thread, never the loop that
takes new clients. The pool caps threads (memory) at the price of queueing clients when every
worker is busy; a client arriving with the queue full gets the busy reply.
"""

from __future__ import annotations

import queue
import threading

from sockkit.models.accept import Refuser, accept_forever
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server

#: Thread stacks: a served connection needs little; this keeps 10,000 idle threads affordable.
STACK_BYTES = 256 * 1024


def _stop_on_signal(server: Server, tracker: Tracker) -> None:
    server.stop.on_signal(lambda count: tracker.stop() if count == 1 else tracker.cut())


def _drain(server: Server, tracker: Tracker) -> None:
    """After accepting stops: let in-flight clients finish, then cut whoever is left."""
    tracker.stop()
    if not tracker.wait_empty(server.limits.drain_seconds, lambda: server.stop.hurry):
        tracker.cut()
        tracker.wait_empty(1.0)


def serve_threads(server: Server) -> None:
    tracker = Tracker()
    _stop_on_signal(server, tracker)
    limits = server.limits
    refuse = Refuser(server.service.busy_reply(), limits.tls)
    threading.stack_size(STACK_BYTES)

    def on_client(sock, peer):
        if len(tracker.live) >= limits.max_connections:
            refuse(sock)
            return
        server.log.connected(peer)
        conn = server.service.connect(peer)
        tracker.live.add(sock)  # counted now, not when the thread gets scheduled
        threading.Thread(target=serve_connection, args=(sock, conn, limits, tracker),
                         daemon=True).start()

    accept_forever(server.listeners, server.stop, server.log, on_client)
    _drain(server, tracker)


def serve_pool(server: Server) -> None:
    tracker = Tracker()
    _stop_on_signal(server, tracker)
    limits = server.limits
    workers = max(1, limits.workers)
    # Clients waiting for a worker; beyond this they are told we are busy rather than queued
    # behind connections that may stay open for a long time.
    backlog: queue.Queue = queue.Queue(maxsize=workers * 4)

    def work():
        while (item := backlog.get()) is not None:
            sock, peer = item
            serve_connection(sock, server.service.connect(peer), limits, tracker)

    threading.stack_size(STACK_BYTES)
    pool = [threading.Thread(target=work, daemon=True, name=f"worker-{i}") for i in range(workers)]
    for thread in pool:
        thread.start()

    refuse = Refuser(server.service.busy_reply(), limits.tls)

    def on_client(sock, peer):
        if len(tracker.live) + backlog.qsize() >= limits.max_connections:
            refuse(sock)
            return
        try:
            backlog.put_nowait((sock, peer))
        except queue.Full:
            refuse(sock)
            return
        server.log.connected(peer)

    accept_forever(server.listeners, server.stop, server.log, on_client)
    tracker.stop()
    for _ in pool:  # queued clients are still served (their request may be in flight)
        backlog.put(None)
    _drain(server, tracker)
