"""sockkit's test kit: run servers as real processes on loopback, talk to them, and check what
they leave behind. sockkit's own tests, its reliability suite and benchmarks use it, and so can
yours; its pytest fixtures are in ``sockkit.pytest_plugin`` (loaded by pytest on its own).

A server is started with ``--port 0`` (or bound by ``sockkit.background()``) and is ready when it
prints ``listening on HOST:PORT`` (no fixed ports, no sleeps); it is stopped with SIGTERM and must
exit 0 with no process of its left behind. The kit's public names are ``__all__``; the rest is
private (docs/api.md).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sockkit import catalog

__all__ = [
    "LISTENING",
    "MODELS",
    "PARALLEL_MODELS",
    "RunningServer",
    "alive",
    "cpu_seconds",
    "descendants",
    "exchange_line",
    "ipv6_available",
    "models_for",
    "open_fds",
    "read_line",
    "reload",
    "running",
    "sockkit_command",
    "start_server",
    "status_field",
    "stop_pid",
    "worker_options",
    "zombies_of",
]

#: Every server model, in the registry's order.
MODELS: tuple[str, ...] = tuple(catalog.MODELS)
#: The models that serve several clients at once (all but ``sequential``).
PARALLEL_MODELS: tuple[str, ...] = tuple(catalog.models_where(concurrent=True))
LISTENING = re.compile(r"listening on \[?([^\]\s]*?)\]?:(\d+)\s*$")


def sockkit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sockkit", *args]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), zombies included."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def zombies_of(pid: int) -> list[int]:
    result = []
    for child in descendants(pid):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            result.append(child)
    return result


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningServer:
    """A server process (a ``sockkit serve`` subprocess, or a child of ``sockkit.background()``) and
    what it printed."""

    proc: subprocess.Popen
    #: The address it listens on, and every port (one per listener).
    host: str
    ports: list[int]
    #: Every line it printed to stdout so far.
    lines: list[str]

    def __init__(self, proc: subprocess.Popen, host: str, ports: list[int]) -> None:
        self.proc = proc
        self.host = host
        self.ports = ports
        self.lines: list[str] = []
        self.seen: set[int] = set()  # every descendant pid ever observed
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the first listener, ready for ``socket.create_connection``."""
        return self.host, self.ports[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def note_children(self) -> set[int]:
        kids = descendants(self.pid)
        self.seen |= kids
        return kids

    def wait_for_log(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if re.search(pattern, line)]
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"server never logged {count} x {pattern!r}; it printed: {self.lines[-10:]}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM; the exit status. Fails the test if anything it started outlives it."""
        if self.proc.poll() is None:
            self.note_children()
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("server did not exit after SIGTERM") from None
        self._reader.join(2)
        deadline = time.monotonic() + 5
        while (left := [p for p in self.seen if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes left behind after the server exited: {left}"
        return code

    def kill(self) -> None:
        for pid in self.note_children():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def reload(server: RunningServer, timeout: float = 30.0) -> int:
    """SIGHUP ``server``; once its old process has drained and exited, the pid of the new one (which
    goes on printing into ``server.lines``). The new process is not our child: stop it with
    ``stop_pid``."""
    seen = len(server.lines)
    server.note_children()
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while True:
        found = [re.search(r"new server pid (\d+)", line) for line in server.lines[seen:]]
        found = [match for match in found if match]
        if found:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"no reload line after SIGHUP; the server printed {server.lines[-5:]}")
        time.sleep(0.02)
    code = server.proc.wait(timeout)
    assert code == 0, f"the old server exited {code} after the reload"
    return int(found[0].group(1))


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a server we did not start ourselves (a reload's successor) and wait until it and its
    processes are gone."""
    kids = descendants(pid)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in (pid, *kids)):
        if time.monotonic() > deadline:
            raise AssertionError(f"server {pid} did not exit after SIGTERM")
        time.sleep(0.05)


def start_server(*args: str, timeout: float = 20.0, env: dict | None = None,
                 cwd: str | os.PathLike | None = None, command: list[str] | None = None,
                 wrap: tuple[str, ...] = ()) -> RunningServer:
    """``sockkit serve ARGS`` started and ready; its listening addresses parsed from stdout.

    ``command``: run that instead (a program of yours that prints the same listening line, such as
    one calling ``sockkit.serve()``); it is ready after as many lines as ``--port`` options in ARGS.
    ``wrap``: a command that runs the server in some changed setting and then ``exec``s it (so the
    server keeps the pid it was started with), e.g. ``unshare`` with a shell that unmounts /proc.
    """
    proc = subprocess.Popen([*wrap, *(command or sockkit_command("serve", *args))], stdout=subprocess.PIPE,
                            stderr=None, text=True, bufsize=1, env=env, cwd=cwd)
    wanted = max(1, sum(1 for a in args if a == "--port"))
    return _await_listening(proc, wanted, timeout, what=" ".join(args) or str(command))


def _await_listening(proc, wanted: int, timeout: float, what: str) -> RunningServer:
    """``proc`` (a ``Popen``, or anything with its ``stdout``, ``poll``, ``wait``, ``send_signal``,
    ``kill`` and ``pid``) as a ``RunningServer``, once it printed ``wanted`` listening lines."""
    ports: list[int] = []
    host = "127.0.0.1"
    early: list[str] = []
    deadline = time.monotonic() + timeout
    while len(ports) < wanted:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"server {what} did not start (it printed {[*early, line][-5:]!r})")
        early.append(line.rstrip("\n"))
        match = LISTENING.search(line)
        if match:
            host, port = match.group(1), int(match.group(2))
            ports.append(port)
    server = RunningServer(proc, host, ports)
    server.lines[:0] = early
    return server


@contextmanager
def running(*args: str, **kwargs) -> Iterator[RunningServer]:
    """``start_server(*args, **kwargs)`` for a ``with`` block: stopped at its end (exit 0, nothing
    left behind), killed if the block raises."""
    server = start_server(*args, **kwargs)
    try:
        yield server
    except BaseException:
        server.kill()
        raise
    else:
        assert server.stop() == 0, "server did not exit 0 on SIGTERM"


def models_for(service) -> list[str]:
    """The models that can run ``service`` (what it ``needs``), in the registry's order."""
    return catalog.permitted_models(catalog.needs_of(service))


def worker_options(model: str, threads: int, processes: int = 1) -> list[str]:
    """``--workers`` for the models that take it: ``threads`` where each worker thread holds one
    client (pool), ``processes`` where each worker process serves many (prefork); else nothing."""
    kind = catalog.MODELS[model].workers
    return ["--workers", str(threads if kind == "threads" else processes)] if kind else []


def exchange_line(port: int, message: bytes, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """One connection, one line out, the whole reply line back."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(message + b"\n")
        return read_line(sock)


def read_line(sock: socket.socket) -> bytes:
    """Bytes up to and including the next newline (or to the end of the stream), and not one byte
    more: what follows (a file's body, the next answer) stays in the socket for the next read."""
    if isinstance(sock, ssl.SSLSocket):  # no MSG_PEEK through TLS: a byte at a time
        line = bytearray()
        while not line.endswith(b"\n") and (byte := sock.recv(1)):
            line += byte
        return bytes(line)
    line = bytearray()
    while True:
        seen = sock.recv(65536, socket.MSG_PEEK)
        if not seen:
            return bytes(line)
        end = seen.find(b"\n")
        line += sock.recv(len(seen) if end < 0 else end + 1)  # already here: takes exactly that much
        if end >= 0:
            return bytes(line)


def ipv6_available() -> bool:
    """This machine can listen on ``::1``."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state is [0], utime [11], stime [12])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids) -> float:
    """User + system CPU of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError):
            fields = _proc_stat(pid)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def status_field(pid: int, name: str) -> int:
    """A number from /proc/PID/status (``VmRSS`` in KiB, ``Threads``...); 0 if the process is gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0
