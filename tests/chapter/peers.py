"""Running the chapter's own programs (``programs/``, ported to Python 3) and sockkit side by side.

The chapter's programs hard-wire their ports (50007, 50008, 50001), so every conversation here
happens inside a private network namespace the test creates (``sockkit.netlab``): its loopback
is ours alone, and tests running at the same time never meet. Processes are started from this
thread while it is inside the namespace, so they and their children stay there; each is stopped
by its own PID (a chapter server with its forked children: by its own process group).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

import pytest

from sockkit import netlab
from sockkit.testing import LISTENING

PROGRAMS = Path(__file__).parent / "programs"
#: ``time.ctime()``: what the chapter's servers (and sockkit's --stamp) put after `` at ``.
CTIME = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"
ENV = dict(os.environ)
ENV.pop("SOCKKIT_TOKEN", None)
ENV.pop("PYTHONUNBUFFERED", None)
#: For servers: unbuffered output, so their lines can be read while they run and none is lost when they
#: are stopped. Clients keep Python's buffering: each writes its lines at exit in one piece, so eight of
#: them sharing testecho.py's stdout do not interleave within a line.
SERVER_ENV = {**ENV, "PYTHONUNBUFFERED": "1"}
#: Longest any one conversation here may take (the chapter's servers sleep 5 s per client).
TIMEOUT = 60.0

why_no_namespace = netlab.unavailable()
#: Every test of the chapter's programs: they use fixed ports, so they need a namespace of their own.
needs_namespace = pytest.mark.skipif(why_no_namespace is not None, reason="the chapter's programs use fixed ports, "
                                     f"so they run in a private network namespace: {why_no_namespace}")


def py3(book_line: str) -> str:
    """A line as the chapter prints it, as its Python 3 port prints it: ``repr`` of bytes gains a ``b``."""
    return book_line.replace("Client received: '", "Client received: b'")


def stamp_pattern(line: str) -> re.Pattern[str]:
    """``line`` (a book line) as a pattern in which each `` at <ctime>`` matches any server time."""
    pieces = re.split(rf" at {CTIME}", line)
    return re.compile(f" at {CTIME}".join(re.escape(piece) for piece in pieces))


def ctime_seconds(text: str) -> float:
    return time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y"))


class Net:
    """One private network namespace, and the processes started in it."""

    def __init__(self, lab: netlab.Lab) -> None:
        self.lab = lab
        self.procs: list[subprocess.Popen] = []

    def popen(self, argv: list[str], cwd: Path | None = None, server: bool = False) -> subprocess.Popen:
        with self.lab.inside(self.lab.front):
            proc = subprocess.Popen(argv, cwd=cwd, env=SERVER_ENV if server else ENV, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        return proc

    def chapter(self, program: str, *args: str, cwd: Path = PROGRAMS, server: bool = False) -> subprocess.Popen:
        """One of the chapter's programs, as ``python program args`` run where the programs are (the
        book's ``C:\\...\\Sockets>``: testecho.py starts ``echo-client.py`` from there)."""
        return self.popen([sys.executable, str(PROGRAMS / program), *args], cwd=cwd, server=server)

    def sockkit(self, *args: str, cwd: Path | None = None, server: bool = False) -> subprocess.Popen:
        return self.popen([sys.executable, "-m", "sockkit", *args], cwd=cwd, server=server)

    def getfile(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        """sockkit's ``getfile`` console script (the chapter's Example 10-10 command line)."""
        return self.popen([sys.executable, "-m", "sockkit.commands.getfile_chapter", *args], cwd=cwd)

    def serve(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        """``sockkit serve ARGS``, returned once it has said where it listens (one line per ``--port``)."""
        proc = self.sockkit("serve", *args, cwd=cwd, server=True)
        wanted = max(1, args.count("--port"))
        while wanted:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"sockkit serve {args} did not start: {finish(proc)[1][-500:]}")
            wanted -= bool(LISTENING.search(line))
        return proc

    def server(self, program: str, *args: str, port: int, cwd: Path = PROGRAMS) -> subprocess.Popen:
        """A chapter server, returned once it listens on ``port`` (seen in its namespace's socket table)."""
        proc = self.chapter(program, *args, cwd=cwd, server=True)
        deadline = time.monotonic() + TIMEOUT
        while not listening(proc.pid, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{program} never listened on {port}: {finish(proc)[1][-500:]}")
            time.sleep(0.01)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the program and its children
            finish(proc)


@contextmanager
def private_net():
    with netlab.Lab() as lab:
        net = Net(lab)
        try:
            yield net
        finally:
            net.close()


def listening(pid: int, port: int) -> bool:
    """Whether ``pid``'s network namespace has a TCP socket listening on ``port``."""
    try:
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in table)


def listening_port(pid: int) -> int | None:
    """The port ``pid`` listens on (TCP, IPv4), found through its descriptors: for a chapter program
    started with ``-port 0``, which picks a free port and does not say which."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    for row in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and fields[9] in inodes:
            return int(fields[1].rsplit(":", 1)[1], 16)
    return None


@contextmanager
def chapter_getfile_server(root: Path):
    """Example 10-10's server (``getfile.py -mode server -host 127.0.0.1 -port 0``) sharing ``root``,
    on the ordinary loopback -- it takes a port argument, so no namespace is needed; yields its port."""
    proc = subprocess.Popen([sys.executable, str(PROGRAMS / "getfile.py"), "-mode", "server", "-host", "127.0.0.1",
                             "-port", "0"], cwd=root, env=SERVER_ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while (port := listening_port(proc.pid)) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"getfile.py -mode server never listened: {finish(proc)[1][-500:]}")
            time.sleep(0.01)
        yield port
    finally:
        proc.kill()  # by its PID: it has threads, no children
        finish(proc)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[str, str]:
    """Wait for ``proc`` to end; its whole stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    except ValueError:  # already read to the end
        return "", ""
    return out, err


def output(proc: subprocess.Popen) -> list[str]:
    """A client's printed lines, after checking it ended well."""
    out, err = finish(proc)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err[-800:]}"
    return out.splitlines()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[int, list[str]]:
    """Signal a server (its own PID only), wait; its exit status and what it printed."""
    if proc.poll() is None:
        proc.send_signal(sig)
    out, _ = finish(proc, timeout=20)
    return proc.returncode, out.splitlines()


class Together(NamedTuple):
    """Clients started at the same moment, and how they ended."""

    clients: list[tuple[int | None, list[str], str]]  # per client: exit status, lines, stderr
    seconds: float  # from the start until the last of them had ended
    wall: float  # time.time() at the start


def run_together(starts: dict[str, Callable[[], list[subprocess.Popen]]]) -> dict[str, Together]:
    """Start every group's clients at once (``starts[key]()`` starts one group); wait for them all."""
    began, wall = time.monotonic(), time.time()
    groups = {key: start() for key, start in starts.items()}
    ended: dict[str, float] = {}
    while len(ended) < len(groups) and time.monotonic() < began + TIMEOUT:
        for key, procs in groups.items():
            if key not in ended and all(proc.poll() is not None for proc in procs):
                ended[key] = time.monotonic() - began
        time.sleep(0.05)  # measuring when each group ended, not synchronising with it
    results = {}
    for key, procs in groups.items():
        runs = []
        for proc in procs:
            out, err = finish(proc)
            runs.append((proc.returncode, out.splitlines(), err))
        results[key] = Together(runs, ended.get(key, float("inf")), wall)
    return results


def stamps_of(together: Together, book: list[list[str]]) -> list[float]:
    """Check each client's lines against the book's (``book[i]`` for client i, stamps matching any
    time); the server times stamped on them, as seconds since the epoch."""
    stamps = []
    for (code, lines, err), book_lines in zip(together.clients, book, strict=True):
        assert code == 0, err
        assert len(lines) == len(book_lines), lines
        for line, book_line in zip(lines, book_lines, strict=True):
            assert stamp_pattern(book_line).fullmatch(line), (line, book_line)
            stamps.append(ctime_seconds(re.search(f" at ({CTIME})'$", line).group(1)))
    return stamps
