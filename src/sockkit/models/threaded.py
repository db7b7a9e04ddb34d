"""A thread per client.

The accepting thread stays free: a slow client occupies its own thread, never the loop that takes
new clients. Clients are counted at accept, so ``--max-connections`` holds before any thread runs.
"""

from __future__ import annotations

import threading

from sockkit.models.accept import Refuser, accept_forever
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server

#: Thread stacks: a served connection needs little; this keeps 10,000 idle threads affordable.
STACK_BYTES = 256 * 1024


def serve(server: Server) -> None:
    tracker = Tracker()
    tracker.follow(server.stop)
    limits = server.limits
    refuse = Refuser(server.service.busy_reply(), limits.tls)
    threading.stack_size(STACK_BYTES)

    def on_client(sock, peer):
        if len(tracker.live) >= limits.max_connections:
            refuse(sock)
            return
        tracker.live.add(sock)  # counted now, not when the thread gets scheduled
        threading.Thread(target=serve_connection, args=(sock, peer, server, tracker), daemon=True).start()

    accept_forever(server.listeners, server.stop, server.log, on_client)
    tracker.drain(server.limits.drain_seconds, lambda: server.stop.hurry)
