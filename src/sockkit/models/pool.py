"""A bounded pool of worker threads.

The pool caps threads (memory) at the price of queueing clients when every worker is busy; a
client arriving with the queue full gets the busy reply rather than waiting behind connections
that may stay open for a long time.
"""

from __future__ import annotations

import queue
import threading

from sockkit.models.accept import Refuser, accept_forever
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server
from sockkit.models.threaded import STACK_BYTES

#: Clients waiting for a worker, per worker.
QUEUED_PER_WORKER = 4


def serve(server: Server) -> None:
    tracker = Tracker()
    tracker.follow(server.stop)
    limits = server.limits
    workers = max(1, limits.workers)
    backlog: queue.Queue = queue.Queue(maxsize=workers * QUEUED_PER_WORKER)

    def work():
        while (item := backlog.get()) is not None:
            serve_connection(*item, server, tracker)

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

    accept_forever(server.listeners, server.stop, server.log, on_client)
    tracker.stop()
    for _ in pool:  # queued clients are still served (their request may be in flight)
        backlog.put(None)
    tracker.drain(server.limits.drain_seconds, lambda: server.stop.hurry)
