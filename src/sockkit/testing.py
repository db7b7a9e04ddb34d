"""Run sockkit servers as real subprocesses and watch what they leave behind.

Used by the tests, the reliability suite and the benchmarks. A server is started with
``--port 0`` and is ready when it prints ``listening on HOST:PORT`` (no fixed ports, no sleeps);
it is stopped with SIGTERM and must exit 0 with no process of its left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sockkit.services.getfile.root import is_reserved

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
    """A ``sockkit serve`` subprocess and what it printed."""

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
                 wrap: tuple[str, ...] = ()) -> RunningServer:
    """``sockkit serve ARGS`` started and ready; its listening addresses parsed from stdout.

    ``wrap``: a command that runs the server in some changed setting and then ``exec``s it (so the
    server keeps the pid it was started with), e.g. ``unshare`` with a shell that unmounts /proc.
    """
    proc = subprocess.Popen([*wrap, *sockkit_command("serve", *args)], stdout=subprocess.PIPE, stderr=None,
                            text=True, bufsize=1, env=env)
    ports: list[int] = []
    host = "127.0.0.1"
    wanted = max(1, sum(1 for a in args if a == "--port"))
    deadline = time.monotonic() + timeout
    while len(ports) < wanted:
        line = proc.stdout.readline()
        if not line or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"server {args} did not start (last line {line!r})")
        match = LISTENING.search(line)
        if match:
            host, port = match.group(1), int(match.group(2))
            ports.append(port)
    return RunningServer(proc, host, ports)


@contextmanager
def running(*args: str, **kwargs) -> Iterator[RunningServer]:
    server = start_server(*args, **kwargs)
    try:
        yield server
    except BaseException:
        server.kill()
        raise
    else:
        assert server.stop() == 0, "server did not exit 0 on SIGTERM"


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (state is [0], utime [11], stime [12])."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids) -> float:
    """User + system CPU of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError):
            fields = proc_stat(pid)
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


def held_uploads(root: str | Path, pids: Iterable[int]) -> list[str]:
    """The files uploads hold under ``root``: names reserved for uploads on disk, and unnamed
    (``O_TMPFILE``) files one of ``pids`` has open there (/proc shows ``DIR/#INODE (deleted)``)."""
    held = [name for _, _, names in os.walk(root) for name in names if is_reserved(name)]
    for pid in pids:
        with suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith(f"{root}/") and target.endswith(" (deleted)"):
                        held.append(target)
    return held
