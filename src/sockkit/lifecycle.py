"""How a server starts talking, logs its clients and stops.

Rule: signal handlers only set a flag and poke a wake-up descriptor; the loops that select on
that descriptor do the work, so SIGTERM is noticed at once rather than at the next poll. The one
exception is SIGHUP (``Reload``), whose handler starts the new server itself: see there why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from sockkit.activation import REPLACES, successor_command
from sockkit.services.actions import Peer

#: How long in-flight clients may take to finish after SIGTERM/SIGINT before they are cut off.
DEFAULT_DRAIN_SECONDS = 10.0


def now_text() -> str:
    """The server's time in the chapter's format: ``Sun Jun 18 22:52:52 2000``."""
    return time.ctime()


def printable(text: str) -> str:
    """``text`` with control characters escaped, so a peer cannot forge log lines."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class Log:
    """The chapter's console log: one line per client, flushed at once."""

    def __init__(self, quiet: bool = False, stream=None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self._refusals: RefusalLog | None = None

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def connected(self, peer: Peer) -> None:
        if not self.quiet:
            self.line(f"Server connected by ({printable(repr(peer.host))}, {peer.port}) at {now_text()}")

    def error(self, text: str) -> None:
        with self._lock:
            sys.stderr.write(f"sockkit: {printable(text)}\n")
            sys.stderr.flush()

    def refused(self, text: str) -> None:
        """A connection closed before its service started (an untrusted peer, a bad or missing PROXY
        header): at most one line a second, so a flood of bad connections cannot flood the log."""
        if self._refusals is None:
            self._refusals = RefusalLog(self, time.monotonic)
        self._refusals(text)


#: Refusals are logged at most once per this many seconds; the line after a quiet spell counts the rest.
REFUSAL_LOG_SECONDS = 1.0


class RefusalLog:
    """Refusal lines, at most one a second (as accept errors are), with the count of those not shown."""

    def __init__(self, log, clock: Callable[[], float]) -> None:
        self.log = log
        self.clock = clock
        self.last = float("-inf")
        self.suppressed = 0

    def __call__(self, text: str) -> None:
        now = self.clock()
        if now - self.last < REFUSAL_LOG_SECONDS:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more refused since the last line)" if self.suppressed else ""
        self.last, self.suppressed = now, 0
        self.log.error(text + more)


def peer_of(address) -> Peer:
    if isinstance(address, tuple):
        return Peer(str(address[0]), int(address[1]))
    return Peer(str(address), 0)


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag plus a readable wake-up descriptor.

    The first signal asks for a graceful stop (stop accepting, drain); a second one asks to
    exit at once. ``fileno()`` becomes readable on every signal, so a selector wakes up.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = 0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        os.set_blocking(self._read_fd, False)
        self._listeners: list[Callable[[int], None]] = []
        self._installed = False

    def install(self) -> StopSignal:
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        # The kernel may deliver the signal to any thread; Python runs the handler only when the
        # main thread next runs bytecode. If the main thread sits in select() on our pipe, it would
        # never wake: let the C-level handler write to the pipe itself.
        signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._installed = True
        return self

    def on_signal(self, callback: Callable[[int], None]) -> None:
        """Also call ``callback(count)`` from the handler (it must only set flags or poke fds)."""
        self._listeners.append(callback)

    def _handle(self, signum, frame) -> None:
        self.requested += 1
        self.poke()
        for callback in self._listeners:
            callback(self.requested)

    def poke(self) -> None:
        with contextlib.suppress(OSError):  # pipe full: the reader is already due to wake up
            os.write(self._write_fd, b"!")

    def fileno(self) -> int:
        return self._read_fd

    def drain_pipe(self) -> None:
        try:
            while os.read(self._read_fd, 512):
                pass
        except OSError:
            pass

    @property
    def stopping(self) -> bool:
        return self.requested > 0

    @property
    def hurry(self) -> bool:
        """A second signal: skip the drain."""
        return self.requested > 1

    def close(self) -> None:
        if self._installed:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Reload:
    """SIGHUP: a new server process on the very same listening sockets, then this one stops.

    The handler starts the successor itself -- a fork and exec that returns at once (through
    ``sockkit.activation``, which passes the listeners as LISTEN_FDS) -- because it is the one
    piece of code that runs under every model: the accept loops, epoll, asyncio and uvloop, the
    forking parents. Everything after is the ordinary stop: once the successor serves, it sends
    this process SIGTERM, and this one stops accepting and drains exactly as for any SIGTERM. No
    socket is closed in between, so no connect is refused: clients wait in the listen queue.

    A successor that fails (a broken configuration, a bad upgrade) never sends that SIGTERM: this
    server keeps serving, and the next SIGHUP tries again. Forked children inherit the handler
    and ignore it; a SIGHUP while a successor is starting, or once stopping began, is ignored.
    """

    def __init__(self, argv: list[str], listeners: list[socket.socket], stop: StopSignal) -> None:
        self.argv = argv
        #: The server's own list: a model that opens more listeners (prefork) adds them to it.
        self.listeners = listeners
        self.stop = stop
        self.pid = os.getpid()
        self.successor: subprocess.Popen | None = None

    def install(self) -> Reload:
        signal.signal(signal.SIGHUP, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return  # a forked child: only the server itself reloads
        if self.stop.stopping:
            return _say("SIGHUP ignored: this server is already stopping")
        if self.successor is not None and self.successor.poll() is None:
            return _say(f"SIGHUP ignored: a new server (pid {self.successor.pid}) is still starting")
        self.start_successor()

    def start_successor(self) -> subprocess.Popen | None:
        listeners = [sock for sock in self.listeners if sock.fileno() >= 0]
        try:
            self.successor = subprocess.Popen(successor_command(self.argv, listeners),
                                              pass_fds=[sock.fileno() for sock in listeners],
                                              env={**os.environ, REPLACES: str(self.pid)})
        except OSError as exc:
            _say(f"reload failed: cannot start a new server ({exc.strerror or exc}); still serving")
            return None
        _say(f"reloading: new server pid {self.successor.pid} on the same {len(listeners)} listening "
             f"socket{'s' * (len(listeners) != 1)}; this one (pid {self.pid}) drains once it serves")
        return self.successor


def _say(text: str) -> None:
    """One line in the server's log (stdout) without a lock: this runs in a signal handler, possibly
    while the main thread holds ``Log``'s lock, which is not reentrant. Printed even with --quiet,
    which silences the line per client only."""
    with contextlib.suppress(OSError):
        os.write(1, f"sockkit: {text}\n".encode())
