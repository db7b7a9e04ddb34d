"""The standard library's ``socketserver`` framework running a sockkit service.

``ThreadingTCPServer`` by default, ``ForkingTCPServer`` with ``--fork``. Each listener gets its
own server object fed our already-bound socket (bind first, serve second). What the framework
does badly is left visible on purpose, so it can be compared: its ``shutdown()`` polls every
``poll_interval`` seconds, and ``ForkingTCPServer`` blocks accepting at ``max_children``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socketserver
import threading
import time

from sockkit.lifecycle import peer_of
from sockkit.models.accept import AcceptThrottle, Refuser
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server

POLL_SECONDS = 0.2


def _server_class(fork: bool, server: Server, tracker: Tracker):
    base = socketserver.ForkingTCPServer if fork else socketserver.ThreadingTCPServer
    limit = server.limits.max_connections
    throttle = AcceptThrottle(server.log)
    refuse = Refuser(server.service.busy_reply(), server.limits.tls, threads=not fork)

    class Wrapped(base):  # type: ignore[misc, valid-type]
        daemon_threads = True
        block_on_close = False

        def verify_request(self, request, client_address):
            """Past the connection limit: the busy reply, instead of a thread per extra client."""
            live = len(self.active_children or ()) if fork else len(tracker.live)
            if live >= limit:
                self.refused = request
                refuse(request)
                return False
            return True

        def shutdown_request(self, request):
            if request is self.refused:  # the refuser owns it (under TLS its thread is still talking)
                self.refused = None
                return
            super().shutdown_request(request)

        def __init__(self, listener, handler):
            self.refused = None  # the socket just handed to the refuser, which closes it itself
            super().__init__(listener.getsockname()[:2], handler, bind_and_activate=False)
            self.socket.close()
            self.socket = listener
            self.address_family = listener.family

        def get_request(self):
            try:
                return super().get_request()
            except OSError as exc:
                # socketserver retries a failed accept at once: out of descriptors, that is a busy
                # loop. Back off (and log at most once a second) as the other models do.
                pause = throttle.failed(exc)
                if pause:
                    time.sleep(pause)
                raise

        def handle_error(self, request, client_address):
            pass  # one client's failure is that client's; serve_connection already closed it

    return Wrapped


def serve(server: Server) -> None:
    tracker = Tracker()
    tracker.follow(server.stop)
    limits = server.limits

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            if limits.fork:
                # In the forked child: our own drain on SIGTERM, a fresh tracker state.
                signal.signal(signal.SIGTERM, lambda s, f: tracker.stop())
            serve_connection(self.request, peer_of(self.client_address), server, tracker)

    cls = _server_class(limits.fork, server, tracker)
    servers = [cls(listener, Handler) for listener in server.listeners]
    for srv in servers:
        if limits.fork:
            srv.max_children = limits.max_connections + 1  # our verify_request refuses first
        threading.Thread(target=srv.serve_forever, args=(POLL_SECONDS,), daemon=True).start()

    while not server.stop.stopping:
        select.select([server.stop.fileno()], [], [], None)
        server.stop.drain_pipe()
    for srv in servers:
        srv.shutdown()
    tracker.stop()
    if limits.fork:
        _drain_children(servers, server)
    else:
        tracker.drain(limits.drain_seconds, lambda: server.stop.hurry)
    for srv in servers:
        srv.server_close()


def _drain_children(servers, server: Server) -> None:
    for srv in servers:
        for pid in list(srv.active_children or ()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + server.limits.drain_seconds
    while any(srv.active_children for srv in servers) and time.monotonic() < deadline and not server.stop.hurry:
        for srv in servers:
            srv.collect_children()
        time.sleep(0.02)
    for srv in servers:
        for pid in list(srv.active_children or ()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.block_on_close = True
