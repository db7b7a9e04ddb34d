"""The server-wide bound on concurrent transfers (``--max-transfers``).

Rule: the bound holds across threads *and* processes, so it means the same under the fork and
prefork models as under threads or one event loop. Each slot is one byte of an anonymous file
(``memfd``) created before any fork; taking a slot is an open-file-description lock (Linux OFD
lock, ``F_OFD_SETLK``) on that byte through a fresh descriptor. The kernel releases it when the
descriptor closes -- including when a worker is killed with SIGKILL mid-transfer, so a crash can
never leak a slot. Where OFD locks or /proc are missing, a per-process count is used instead
(and the bound is then per process; the log says so once at start-up).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from typing import Protocol

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+pad).
_FLOCK = "hhqqi4x"


class Slot(Protocol):
    def release(self) -> None: ...


class Slots(Protocol):
    limit: int

    def acquire(self) -> Slot | None:
        """A held slot, or None when ``limit`` transfers are already running."""
        ...


class _NoSlot:
    __slots__ = ()

    def release(self) -> None:
        pass


NO_SLOT = _NoSlot()


class Unlimited:
    """``--max-transfers 0``: no bound."""

    limit = 0

    def acquire(self) -> Slot | None:
        return NO_SLOT


class _LocalSlot:
    __slots__ = ("owner", "released")

    def __init__(self, owner: LocalSlots) -> None:
        self.owner = owner
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.owner.held.discard(self)


class LocalSlots:
    """A count in this process (set operations are atomic under the GIL; no lock needed).

    Add-then-check never lets more than ``limit`` through: two racing takers may both back off,
    never both succeed past the bound.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: set[_LocalSlot] = set()

    def acquire(self) -> Slot | None:
        slot = _LocalSlot(self)
        self.held.add(slot)
        if len(self.held) > self.limit:
            slot.release()
            return None
        return slot


class _SharedSlot:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops its lock


class SharedSlots:
    """Slots shared by every process forked after this object was made."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.memfd = os.memfd_create("sockkit-getfile-slots", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, limit)
        # Fail now, not on the first transfer, if OFD locks are not available here.
        slot = self.acquire()
        if slot is None:
            raise OSError("transfer slots unusable")
        slot.release()

    def acquire(self) -> Slot | None:
        # A new open file description: OFD locks belong to it, not to the process, so threads of
        # one process each hold their own slot.
        fd = os.open(f"/proc/self/fd/{self.memfd}", os.O_RDWR | os.O_CLOEXEC)
        # Start at a random slot so takers do not all probe the same busy bytes first.
        start = int.from_bytes(os.urandom(4), "little") % self.limit
        for step in range(self.limit):
            index = (start + step) % self.limit
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, index, 1, 0))
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):  # held by another
                    continue
                os.close(fd)
                raise
            return _SharedSlot(fd)
        os.close(fd)
        return None


def make_slots(limit: int) -> Slots:
    """Shared slots where the kernel supports them, else a per-process count."""
    if limit <= 0:
        return Unlimited()
    try:
        return SharedSlots(limit)
    except (OSError, AttributeError):
        return LocalSlots(limit)
