"""Several pre-forked worker processes sharing one port with ``SO_REUSEPORT``.

Each worker runs the fastest single-process model (uvloop, else asyncio) on its own listening
socket bound to the same address; the kernel spreads new connections across them. The parent
opens every worker's socket and keeps them all open: a socket closed with connections in its
queue resets them, so no socket ever closes while the server runs -- a worker that dies is
restarted on the same socket (the clients queued there wait, then are served), and a reload
(SIGHUP) hands all of them to the new server, whose worker i takes socket i. Sockets handed over
without SO_REUSEPORT (a systemd socket unit without ReusePort=yes) are shared by every worker.
The parent only supervises: it restarts a worker that dies, forwards SIGTERM, waits out the drain
and leaves no zombie or orphan (workers die with their parent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
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


def _worker(server: Server, listeners: list[socket.socket], index: int) -> None:
    status = 0
    try:
        die_with_parent(parent=server.pid)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        server.stop.close()
        for listener in server.listeners:
            if listener not in listeners:
                listener.close()  # this process's copy only: the parent keeps every socket open
        # --max-connections applies per worker, as nginx's worker_connections does: the kernel
        # spreads clients unevenly, so a split limit would turn clients away while a worker idles.
        worker = dataclasses.replace(server, listeners=listeners, stop=StopSignal(), pid=os.getpid())
        event_loop.serve(worker, loop="uvloop" if uvloop_installed() else "asyncio")
    except BaseException as exc:
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            server.log.error(f"worker {index} failed: {exc!r}")
        status = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(status)


def assign(listeners: list[socket.socket], workers: int) -> list[list[socket.socket]]:
    """Each worker's sockets: for every address, one socket per worker, opened here (SO_REUSEPORT)
    where fewer were given; a socket given without SO_REUSEPORT is shared by all. Extra sockets
    (handed over by a server that had more workers) go round the workers, so none is left unserved.
    Opened sockets are appended to ``listeners``, which the parent keeps (and a reload hands over)."""
    groups: dict[tuple, list[socket.socket]] = {}
    for listener in list(listeners):
        groups.setdefault(listener.getsockname()[:2], []).append(listener)
    shares: list[list[socket.socket]] = [[] for _ in range(workers)]
    for (host, port), group in groups.items():
        if group[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            while len(group) < workers:
                group.append(open_listener(host, port, reuse_port=True))
                listeners.append(group[-1])
            for position, sock in enumerate(group):
                shares[position % workers].append(sock)
        else:
            for share in shares:
                share.extend(group)
    return shares


def serve(server: Server) -> None:
    workers = max(1, server.limits.workers)
    shares = assign(server.listeners, workers)
    children = Children(auto_reaped=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: server.stop.poke())
    roles: dict[int, int] = {}
    last_start: dict[int, float] = {}

    def start(index: int) -> None:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _worker(server, shares[index], index)
        children.pids.add(pid)
        roles[pid] = index
        last_start[index] = time.monotonic()

    for index in range(workers):
        start(index)

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
            wait = last_start.get(index, 0) + RESTART_BACKOFF - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            server.log.error(f"worker {index} (pid {pid}) exited; starting a new one")
            start(index)
    selector.close()
    for listener in server.listeners:
        listener.close()  # no new client for this server; the workers drain what they accepted
    children.signal_all(signal.SIGTERM)
    if not children.wait_all(server.limits.drain_seconds + 1.0, lambda: server.stop.hurry):
        children.signal_all(signal.SIGKILL)
        children.wait_all(2.0)
