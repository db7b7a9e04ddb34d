"""A process per client, with dead children reaped (``fork``) or ignored (``fork-signal``).

Rule: the parent stays single-threaded and only accepts, counts and reaps; every child closes
the listeners, serves its one client and leaves with ``os._exit`` so it never returns into the
parent's loop (the chapter's point about ``os._exit``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from sockkit.lifecycle import StopSignal
from sockkit.models.accept import Refuser, accept_forever
from sockkit.models.blocking import Tracker, serve_connection
from sockkit.models.settings import Server
from sockkit.procs import die_with_parent

#: How often the parent looks for dead children when no SIGCHLD woke it.
REAP_TICK = 1.0


class Children:
    """The parent's view of its children."""

    def __init__(self, auto_reaped: bool) -> None:
        self.pids: set[int] = set()
        self.auto_reaped = auto_reaped

    def reap(self) -> None:
        """Collect every child that has exited, in one pass (cpython#90093: not one per wake)."""
        if self.auto_reaped:
            # SIGCHLD = SIG_IGN: the kernel removed them already; waitpid would fail with ECHILD.
            for pid in list(self.pids):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    self.pids.discard(pid)
            return
        while self.pids:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            self.pids.discard(pid)

    def signal_all(self, signum: int) -> None:
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def wait_all(self, seconds: float, hurry=lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self.reap()
            if not self.pids or time.monotonic() >= deadline or hurry():
                return not self.pids
            time.sleep(0.02)


def _child(server: Server, sock, peer) -> None:
    """In the child: serve one client, then leave without running the parent's cleanup."""
    status = 0
    try:
        die_with_parent(parent=server.pid)
        for listener in server.listeners:
            listener.close()
        tracker = Tracker()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        stop = StopSignal().install()
        tracker.follow(stop)
        serve_connection(sock, peer, server, tracker)
    except BaseException:
        status = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(status)


def serve(server: Server, *, auto_reap: bool = False) -> None:
    """``fork`` (dead children reaped with waitpid) or, with ``auto_reap``, ``fork-signal``
    (SIGCHLD = SIG_IGN: the kernel reaps them)."""
    children = Children(auto_reap)
    if auto_reap:
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    else:
        # A child's exit pokes the wake-up descriptor, so zombies are reaped at once.
        signal.signal(signal.SIGCHLD, lambda signum, frame: server.stop.poke())

    # No refusal threads here: every child would inherit a copy of one caught inside OpenSSL.
    refuse = Refuser(server.service.busy_reply(), server.limits.tls, threads=False)

    def on_client(sock, peer):
        children.reap()
        if len(children.pids) >= server.limits.max_connections:
            refuse(sock)
            return
        sys.stdout.flush()  # else the child inherits unflushed output and prints it twice
        pid = os.fork()
        if pid == 0:
            _child(server, sock, peer)
        children.pids.add(pid)
        sock.close()

    accept_forever(server.listeners, server.stop, server.log, on_client, on_wake=children.reap, tick=REAP_TICK)
    children.signal_all(signal.SIGTERM)  # each child drains its own client
    if not children.wait_all(server.limits.drain_seconds, lambda: server.stop.hurry):
        children.signal_all(signal.SIGKILL)
        children.wait_all(2.0)

