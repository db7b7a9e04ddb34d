"""``sockkit.serve()`` and ``sockkit.background()``: a service of your own under any model, from Python.

``serve`` blocks exactly as ``sockkit serve`` does (same checks, same listening line, SIGTERM/SIGINT
drain). ``background`` runs the same thing in a forked child process and hands back its address.

Why a child process and not a thread: the fork models fork per client, prefork forks workers, and
every model turns SIGTERM/SIGINT into its drain -- signal handlers, and forking safely, belong to
the main thread of a process. A process of its own is the one way that runs every model alike, and
it is stopped the way a real server is (SIGTERM, drain, exit 0, nothing left behind). A *fork*
rather than a new interpreter, so the service object need be neither importable nor picklable: the
child serves a copy of it. What follows: state the server changes lives in the child (look at it
through a client), and the child starts from a copy of the caller's memory and descriptors.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator

from sockkit import serving
from sockkit.affinity import parse_cpus
from sockkit.procs import die_with_parent
from sockkit.services.actions import Service
from sockkit.testing import RunningServer, _await_listening


def serve(service: Service, *, model: str | None = None, host: str = "127.0.0.1",
          port: int | Iterable[int] | None = None, tls_cert: str | None = None, tls_key: str | None = None,
          cpus: str = "auto", insecure: bool = False, quiet: bool = False, **limits: float | int | bool) -> None:
    """Serve ``service`` under ``model`` until SIGTERM or SIGINT, then drain and return.

    As ``sockkit serve``: ``model`` defaults to the fastest here; ``port`` (one or several) to the
    service's ``default_port``, else a free one; the limits are ``idle_timeout``,
    ``request_timeout``, ``min_rate``, ``min_rate_window``, ``max_connections``, ``drain_timeout``,
    ``workers`` and ``fork``
    (socketserver's ForkingTCPServer). Prints ``sockkit NAME server (MODEL) listening on HOST:PORT``
    per listener. Raises ValueError when the model cannot run the service (the sentence says why)
    or an option is wrong, ``OSError`` when a port cannot be bound, RuntimeError outside the main thread.
    """
    chosen = serving.plan(service, model=model, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                          cpus=parse_cpus(cpus), insecure=insecure, quiet=quiet, **limits)
    serving.run(chosen, serving.bind(chosen))


@contextlib.contextmanager
def background(service: Service, *, model: str | None = None, host: str = "127.0.0.1",
               port: int | Iterable[int] = 0, tls_cert: str | None = None, tls_key: str | None = None,
               cpus: str = "auto", insecure: bool = False, quiet: bool = False, timeout: float = 20.0,
               **limits: float | int | bool) -> Iterator[RunningServer]:
    """Run ``service`` in a forked child process for the ``with`` block; yields its ``RunningServer``
    (``.host``, ``.port``, ``.ports``, ``.address``, ``.lines`` it printed, ``.pid``).

    The same options as ``serve``, but ``port`` defaults to a free one. Refusals and bind errors
    are raised here, before the child exists. Leaving the block sends SIGTERM; the server must
    drain and exit 0 with no process of its left behind (AssertionError otherwise). An exception
    inside the block kills it instead.
    """
    chosen = serving.plan(service, model=model, host=host, port=port, tls_cert=tls_cert, tls_key=tls_key,
                          cpus=parse_cpus(cpus), insecure=insecure, quiet=quiet, **limits)
    listeners = serving.bind(chosen)
    try:
        child = _fork_server(chosen, listeners)
    finally:
        for listener in listeners:
            listener.close()  # the child holds its own copies
    server = _await_listening(child, len(listeners), timeout, what=f"{service.name} ({chosen.model.name})")
    try:
        yield server
    except BaseException:
        server.kill()
        raise
    code = server.stop(timeout=chosen.limits.drain_seconds + 10)
    if code != 0:
        raise RuntimeError(f"the {service.name} server ({chosen.model.name}) exited with status {code} on SIGTERM; "
                           f"it printed: {server.lines[-10:]}")


def _fork_server(chosen: serving.Plan, listeners: list[socket.socket]) -> ForkedChild:
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    on_main_thread = threading.current_thread() is threading.main_thread()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # else the child inherits unflushed output and prints it again
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _serve_in_child(chosen, listeners, write_fd, parent if on_main_thread else None)
    os.close(write_fd)
    return ForkedChild(pid, open(read_fd, encoding="utf-8", errors="replace"))


def _serve_in_child(chosen: serving.Plan, listeners: list[socket.socket], write_fd: int, parent: int | None) -> None:
    """In the child: stdout to the parent's pipe, default signal handling, serve, leave with _exit."""
    status = 1
    try:
        os.dup2(write_fd, 1)
        os.close(write_fd)
        # Fresh stream objects: the inherited ones may hold a lock taken by another of the
        # parent's threads at the fork, which nothing in this process would ever release.
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGALRM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        if parent is not None:
            # Tied to the thread that forked: only when that is the caller's main thread, which
            # lives as long as the caller, so a killed test run leaves no server behind.
            die_with_parent(parent=parent)
        serving.run(chosen, listeners, announce=False)  # nobody's main process: no service manager to tell
        status = 0
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


class ForkedChild:
    """A forked child process with the part of ``subprocess.Popen``'s interface a ``RunningServer`` uses."""

    def __init__(self, pid: int, stdout: io.TextIOBase) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)  # readable once the child exits: a wait with a timeout, no polling

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is None:
            ready, _, _ = select.select([self._pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            self._reaped(os.waitpid(self.pid, 0)[1])
        return self.returncode  # type: ignore[return-value]

    def _reaped(self, status: int) -> None:
        self.returncode = os.waitstatus_to_exitcode(status)
        os.close(self._pidfd)

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
