"""Several pre-forked worker processes sharing one port with ``SO_REUSEPORT``.

Each worker runs the fastest single-process model (uvloop, else asyncio) on its own listening
socket bound to the same address; the kernel spreads new connections across them. Worker 0
inherits the socket the parent bound, so no connection that arrived before the workers were up
is lost. The parent only supervises: it restarts a worker that dies, forwards SIGTERM, waits
out the drain and leaves no zombie or orphan (workers die with their parent).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from sockkit.catalog import uvloop_installed
from sockkit.lifecycle import StopSignal
from sockkit.models import event_loop
from sockkit.models.forking import Children
from sockkit.models.settings import Server
from sockkit.net import open_listener
from sockkit.procs import die_with_parent

#: A worker dying more often than this is a crash loop: back off before restarting it.
RESTART_BACKOFF = 1.0


def _worker(server: Server, index: int) -> None:
    status = 0
    try:
        die_with_parent(parent=server.pid)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        server.stop.close()
        if index == 0:
            listeners = server.listeners
        else:
            for listener in server.listeners:
                listener.close()
            listeners = [open_listener(host, port, reuse_port=True) for host, port in server.addresses]
        # --max-connections applies per worker, as nginx's worker_connections does: the kernel
        # spreads clients unevenly, so a split limit would turn clients away while a worker idles.
        worker = Server(server.service, listeners, server.limits, server.log, StopSignal())
        event_loop.serve(worker, loop="uvloop" if uvloop_installed() else "asyncio")
    except BaseException as exc:
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            server.log.error(f"worker {index} failed: {exc!r}")
        status = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(status)


def serve(server: Server) -> None:
    # Addresses to rebind in workers 1..N (the parent's sockets carry SO_REUSEPORT already).
    server.addresses = [listener.getsockname()[:2] for listener in server.listeners]  # type: ignore[attr-defined]
    children = Children(auto_reaped=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: server.stop.poke())
    roles: dict[int, int] = {}
    last_start: dict[int, float] = {}

    def start(index: int) -> None:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _worker(server, index)
        children.pids.add(pid)
        roles[pid] = index
        last_start[index] = time.monotonic()

    for index in range(max(1, server.limits.workers)):
        start(index)
    for listener in server.listeners:
        listener.close()  # worker 0 holds the inherited copy

    import selectors

    selector = selectors.DefaultSelector()
    selector.register(server.stop.fileno(), selectors.EVENT_READ)
    while not server.stop.stopping:
        selector.select(1.0)
        server.stop.drain_pipe()
        before = set(children.pids)
        children.reap()
        if server.stop.stopping:
            break
        for pid in before - children.pids:
            index = roles.pop(pid)
            if index == 0:
                index = _renumber(roles)  # the inherited socket is gone; the new one binds its own
            wait = last_start.get(index, 0) + RESTART_BACKOFF - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            server.log.error(f"worker {index} (pid {pid}) exited; starting a new one")
            start(index)
    selector.close()
    children.signal_all(signal.SIGTERM)
    if not children.wait_all(server.limits.drain_seconds + 1.0, lambda: server.stop.hurry):
        children.signal_all(signal.SIGKILL)
        children.wait_all(2.0)


def _renumber(roles: dict[int, int]) -> int:
    used = set(roles.values())
    index = 1
    while index in used:
        index += 1
    return index
