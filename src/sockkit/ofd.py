"""State shared by every process of one server: bytes of an anonymous file locked with OFD locks.

Rule: a bound that must hold server-wide under the fork and prefork models (a process per client,
or per worker) cannot live in one process's memory. Instead each unit of the bound is one byte of
an anonymous file (``memfd``) created before any fork; taking a unit is a Linux open-file-
description lock (``F_OFD_SETLK``) on that byte through a descriptor of one's own. The kernel drops
the lock when that descriptor closes -- also when its process is killed with SIGKILL -- so a crash
can never leak a unit. One descriptor may hold many units (each a byte of its own), and threads of
one process each use their own descriptor, so they count apart as processes do.

``Records`` uses the same file and locks for small records that must be read and changed as
one step by any process (getfile's count of wrong tokens per address): the file is mapped shared
before any fork, and a record is changed only under an OFD lock on its bytes.

Used by getfile's transfer slots (``--max-transfers``) and wrong-token throttle, and the echo
line-memory pool (handed to the service already made, as a clock is: services do no I/O of their
own).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Collection, Iterator

# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+pad).
_FLOCK = "hhqqi4x"
#: errnos of F_OFD_SETLK that mean "another description holds it".
_HELD = (errno.EAGAIN, errno.EACCES)


class Units:
    """``count`` units shared by every process forked after this object was made."""

    def __init__(self, name: str, count: int) -> None:
        self.count = count
        self.memfd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, count)
        # Fail now, not on first use, where OFD locks are unavailable (the caller falls back).
        holder = self.holder()
        try:
            if self.take(holder) is None:
                raise OSError("OFD locks unusable")
        finally:
            os.close(holder)

    def holders(self) -> Holder:
        """A new holder of units (for ``line_memory.LinePool``)."""
        return Holder(self)

    def holder(self) -> int:
        """A new descriptor (a new open file description) to take units through."""
        return os.open(f"/proc/self/fd/{self.memfd}", os.O_RDWR | os.O_CLOEXEC)

    def take(self, holder: int, mine: Collection[int] = ()) -> int | None:
        """Lock one free unit through ``holder``: its index, or None when every unit is taken.
        ``mine``: the units ``holder`` already has (a lock never conflicts with its own
        description, so they would look free). Probing starts at a random unit, so takers do not
        all try the same busy bytes first."""
        start = int.from_bytes(os.urandom(4), "little") % self.count
        for step in range(self.count):
            index = (start + step) % self.count
            if index in mine:
                continue
            try:
                fcntl.fcntl(holder, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, index, 1, 0))
            except OSError as exc:
                if exc.errno in _HELD:
                    continue
                raise
            return index
        return None

    @staticmethod
    def give_back(holder: int, index: int) -> None:
        """Unlock unit ``index`` held through ``holder`` (closing ``holder`` gives back all of them)."""
        with contextlib.suppress(OSError):
            fcntl.fcntl(holder, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, fcntl.F_UNLCK, os.SEEK_SET, index, 1, 0))


class Holder:
    """Some units of one ``Units``, held through one descriptor of this holder's own."""

    __slots__ = ("fd", "held", "units")

    def __init__(self, units: Units) -> None:
        self.units = units
        self.fd = -1  # opened for the first unit: most holders never need one
        self.held: list[int] = []

    def hold(self, count: int) -> bool:
        """Hold exactly ``count`` units; False (holding what it could) when too few are free."""
        held = self.held
        while len(held) > count:
            Units.give_back(self.fd, held.pop())
        while len(held) < count:
            if self.fd < 0:
                self.fd = self.units.holder()
            index = self.units.take(self.fd, held)
            if index is None:
                return False
            held.append(index)
        return True

    def release(self) -> None:
        self.held.clear()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # drops every unit it held


class Records:
    """``count`` records of ``size`` bytes (zeroed at first), shared by every process forked after
    this object was made; ``locked(index)`` gives one record to read and change as one step."""

    def __init__(self, name: str, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.memfd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, count * size)
        self.map = mmap.mmap(self.memfd, count * size, mmap.MAP_SHARED)
        with self.locked(0):  # fail now, not on first use, where OFD locks are unavailable
            pass

    @contextlib.contextmanager
    def locked(self, index: int) -> Iterator[memoryview]:
        """Record ``index``, locked against every other thread and process until the block ends.
        A descriptor of our own per lock: OFD locks on one description never exclude each other."""
        fd = os.open(f"/proc/self/fd/{self.memfd}", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLKW,
                        struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, index * self.size, self.size, 0))
            with memoryview(self.map)[index * self.size:(index + 1) * self.size] as record:
                yield record
        finally:
            os.close(fd)  # drops the lock


class LocalRecords:
    """``Records`` for one process only (where OFD locks or memfd are unavailable)."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.data = bytearray(count * size)
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def locked(self, index: int) -> Iterator[memoryview]:
        with self.lock, memoryview(self.data)[index * self.size:(index + 1) * self.size] as record:
            yield record


def records(name: str, count: int, size: int) -> Records | LocalRecords:
    """Shared records where the kernel allows, else records for this process only."""
    try:
        return Records(name, count, size)
    except (OSError, AttributeError):
        return LocalRecords(count, size)
