"""How a server starts talking, logs its clients and stops.

Rule: signal handlers only set a flag and poke a wake-up descriptor; the loops that select on
that descriptor do the work, so SIGTERM is noticed at once rather than at the next poll.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

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
