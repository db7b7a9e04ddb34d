"""The receive loop: socket -> file descriptor, hashing on the way, with bounded memory.

Rules this module keeps:
* One pre-allocated buffer per transfer (``Buffer``), filled with ``recv_into`` and written with
  ``os.write`` of a memoryview slice: no bytes object is created per chunk, and memory does not
  grow with the file size.
* Never reads past the body: each ``recv_into`` asks for at most the bytes still owed, so whatever
  the server sends afterwards (the next answer when pipelining, or junk) stays in the socket.
* Cancellation and stalls are noticed between chunks: the socket gets a short timeout
  (``POLL_SECONDS``) so a cancel is seen within ~0.2 s even when the server sends nothing, and a
  silence longer than ``idle_timeout`` ends the transfer.

Measured on this machine (loopback, 1 GiB): hashing with xxh3-128 costs a few percent of the
time; the write to the page cache dominates. See docs/getfile-client.md for the figures.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
import time
from collections.abc import Callable

from sockkit.errors import Cancelled, DestinationError, TransferInterrupted, describe_os_error, loaded_ssl

#: 1 MiB: loopback hands over several hundred KiB per recv; a bigger buffer saves syscalls, a
#: smaller one costs them; memory per transfer stays this size whatever the file size.
BUFFER_SIZE = 1 << 20
#: How often a blocked recv wakes up to look at the cancel event.
POLL_SECONDS = 0.2
#: A partly filled buffer is written (and progress reported) at least this often.
FILL_SECONDS = 0.1
#: Start the disk writing every this many bytes received (``sync_file_range(SYNC_FILE_RANGE_WRITE)``,
#: asynchronous), so the fsync before the rename finds little left to do. Measured here for 1 GiB:
#: write + fsync 1.2-2.3 s without it, 0.6-0.7 s with it.
WRITEBACK_BYTES = 32 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range():
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return call


_start_writeback = _sync_file_range()


class Writeback:
    """Asks the kernel to start writing a file's dirty pages every WRITEBACK_BYTES (never waits)."""

    def __init__(self, fd: int, position: int) -> None:
        self.fd = fd
        self.mark = position    # start of the range not yet handed to writeback
        self.position = position

    def advance(self, count: int) -> None:
        self.position += count
        if self.position - self.mark >= WRITEBACK_BYTES and _start_writeback is not None:
            _start_writeback(self.fd, self.mark, self.position - self.mark, _SYNC_FILE_RANGE_WRITE)
            self.mark = self.position


def start_writeback(fd: int) -> None:
    """Start writing all of ``fd``'s dirty pages now, without waiting (the fsync later finds them
    written); a no-op where ``sync_file_range`` is missing."""
    if _start_writeback is not None:
        _start_writeback(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class Buffer:
    """A reusable receive buffer (one per connection; download_tree reuses it for every file)."""

    def __init__(self, size: int = BUFFER_SIZE) -> None:
        self.data = bytearray(size)
        self.view = memoryview(self.data)


class RateLimiter:
    """Token bucket: at most ``rate`` bytes/s on average, bursts up to ``rate``/10 bytes."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.chunk = max(4096, int(rate / 10))
        self.start = time.monotonic()
        self.allowed = 0.0

    def pace(self, nbytes: int, cancel: threading.Event | None) -> None:
        """Sleep until ``nbytes`` more are within the rate; wakes every POLL_SECONDS for cancel."""
        self.allowed += nbytes
        for _ in range(100_000):  # bounded: each turn sleeps up to POLL_SECONDS
            ahead = self.allowed / self.rate - (time.monotonic() - self.start)
            if ahead <= 0:
                return
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            time.sleep(min(ahead, POLL_SECONDS))


def write_all(fd: int, view: memoryview) -> None:
    """``os.write`` until the whole slice is written; disk errors become DestinationError."""
    for _ in range(len(view) + 1):  # bounded: every turn writes at least one byte or raises
        if not view:
            return
        try:
            written = os.write(fd, view)
        except OSError as exc:
            raise DestinationError(describe_os_error(exc)) from exc
        view = view[written:]
    raise DestinationError("the disk accepted no bytes")


def receive_exactly(sock: socket.socket, fd: int | None, count: int, *, buffer: Buffer,
                    hasher=None, idle_timeout: float = 30.0, cancel: threading.Event | None = None,
                    limiter: RateLimiter | None = None, on_chunk: Callable[[int], None] | None = None,
                    writeback: Writeback | None = None) -> None:
    """Receive exactly ``count`` bytes from ``sock`` into ``fd`` (None: discard), hashing them.

    ``on_chunk(n)`` is told after each chunk. Raises TransferInterrupted when the stream ends or
    stalls for ``idle_timeout`` s, Cancelled when ``cancel`` is set, DestinationError when the disk fails.
    """
    if count <= 0:
        return  # a small body already arrived with its header: no socket calls at all
    view = buffer.view
    chunk_max = len(view) if limiter is None else min(len(view), limiter.chunk)
    update = hasher.update if hasher is not None else None
    sock.settimeout(min(POLL_SECONDS, idle_timeout) if cancel is not None else idle_timeout)
    left = count
    last_data = time.monotonic()

    def flush(filled: int) -> None:
        # One hash update and one write per buffer-full, not per recv: a TLS record is 16 KiB,
        # so per-recv writes cost 64 syscalls per MiB.
        nonlocal left
        piece = view[:filled]
        if update is not None:
            update(piece)
        if fd is not None:
            write_all(fd, piece)
            if writeback is not None:
                writeback.advance(filled)
        left -= filled
        if on_chunk is not None:
            on_chunk(filled)

    while left > 0:
        want = min(left, chunk_max)
        filled = 0
        fill_started = time.monotonic()
        try:
            # Fill the buffer (the bytes are owed, so waiting for them is fine), but hand over at
            # least every FILL_SECONDS so progress and writes keep moving on a slow link.
            while filled < want:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                got = receive_some(sock, view[filled:want], count - left + filled, count, last_data, idle_timeout)
                if got is not None:
                    filled += got
                    last_data = time.monotonic()
                if filled and time.monotonic() - fill_started >= FILL_SECONDS:
                    break
        finally:
            if filled:
                flush(filled)  # even on failure: every byte that arrived goes into the part file
        if limiter is not None:
            limiter.pace(filled, cancel)


def receive_some(sock: socket.socket, into: memoryview, done: int, count: int, last_data: float,
                 idle_timeout: float) -> int | None:
    """One ``recv_into``: the byte count, or None after a poll timeout; errors become TransferInterrupted."""
    try:
        got = sock.recv_into(into)
    except TimeoutError:
        if time.monotonic() - last_data >= idle_timeout:
            raise TransferInterrupted(
                f"the server sent nothing for {idle_timeout:g} s after {done} of {count} bytes") from None
        return None
    except OSError as exc:
        ssl = loaded_ssl()
        if ssl is not None and isinstance(exc, ssl.SSLError):
            raise TransferInterrupted(f"TLS error after {done} of {count} bytes: {exc.reason}") from exc
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT):
            raise TransferInterrupted(f"the server reset the connection after {done} of {count} bytes") from exc
        raise
    if got == 0:
        raise TransferInterrupted(f"the server closed the connection after {done} of {count} bytes")
    return got


def receive_to_eof(sock: socket.socket, fd: int, *, buffer: Buffer, hasher=None, idle_timeout: float = 30.0,
                   cancel: threading.Event | None = None, limiter: RateLimiter | None = None,
                   on_chunk: Callable[[int], None] | None = None) -> int:
    """The chapter's protocol: everything until the server closes; the byte count."""
    view = buffer.view
    chunk_max = len(view) if limiter is None else min(len(view), limiter.chunk)
    sock.settimeout(min(POLL_SECONDS, idle_timeout) if cancel is not None else idle_timeout)
    total = 0
    last_data = time.monotonic()
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        try:
            got = sock.recv_into(view, chunk_max)
        except TimeoutError:
            if time.monotonic() - last_data >= idle_timeout:
                raise TransferInterrupted(f"the server sent nothing for {idle_timeout:g} s after {total} bytes") \
                    from None
            continue
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                raise TransferInterrupted(f"the server reset the connection after {total} bytes") from exc
            raise
        if got == 0:
            return total
        last_data = time.monotonic()
        if hasher is not None:
            hasher.update(view[:got])
        write_all(fd, view[:got])
        total += got
        if on_chunk is not None:
            on_chunk(got)
        if limiter is not None:
            limiter.pace(got, cancel)
