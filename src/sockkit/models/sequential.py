"""One client at a time: the chapter's first echo server."""

from __future__ import annotations

from sockkit.models.accept import accept_forever
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server


def serve(server: Server) -> None:
    tracker = Tracker()
    tracker.follow(server.stop)

    def on_client(sock, peer):
        serve_connection(sock, peer, server, tracker)

    accept_forever(server.listeners, server.stop, server.log, on_client)
