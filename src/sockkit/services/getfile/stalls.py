"""Stalled uploads give their disk space back as soon as another upload needs it, in every model.

Rule: an upload whose client has sent nothing for ``after`` seconds (``--upload-stall``, default
30) must not hold the disk against others until the idle timeout (300 s) ends its connection. So
every upload in progress is listed in records shared by every process of the server
(``ofd.Records``, made before any fork): the owner's pid, the descriptor of its file, that file's
device and inode, and when its last body bytes came. Whenever an upload finds too little room --
the free-space check before it begins, or a full disk mid-body -- the stalled ones are
*reclaimed*: their file is opened again through ``/proc/PID/fd/FD``, checked to be the very same
file (device and inode: a pid or descriptor used again since can never be mistaken for it) and
truncated to nothing, which frees its blocks at once; its record is marked. The owner finds the
mark with its next body bytes and answers its client ``busy`` ("stalled; send it again"); nothing
it sends after lands in the file.

Why truncate from outside: under the fork models each upload has a process of its own, blocked
reading its silent client, that nothing in the service can wake; the kernel's own handle on the
file is the only thing every process can reach. A process is never signalled, and a file is never
closed, by another.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from typing import Protocol

#: Seconds without body bytes after which an upload gives its disk space back when asked.
DEFAULT_STALL = 30.0
#: Seconds between two updates of an upload's record while its bytes flow (each costs a lock).
NOTE_EVERY = 0.5
#: pid, descriptor, device, inode, time of the last body bytes, state.
_RECORD = struct.Struct("<iiQQdi4x")
RECORD_SIZE = _RECORD.size
_FREE, _LIVE, _RECLAIMED = 0, 1, 2


class Store(Protocol):
    """``ofd.Records`` (every process) or ``ofd.LocalRecords`` (this one)."""

    count: int

    def locked(self, index: int): ...


class Ticket:
    """One upload's record, as its owner knows it."""

    __slots__ = ("index", "noted")

    def __init__(self, index: int, noted: float) -> None:
        self.index = index
        self.noted = noted


class Stalls:
    """The uploads in progress in every process, and the reclaiming of stalled ones."""

    def __init__(self, store: Store, clock: Callable[[], float], after: float = DEFAULT_STALL) -> None:
        self.store = store
        self.clock = clock
        self.after = after

    def register(self, fd: int) -> Ticket | None:
        """List the upload writing to ``fd``; None when every record is taken (it is then simply
        not reclaimable, as before)."""
        info = os.fstat(fd)
        now = self.clock()
        pid = os.getpid()  # a forked child registers under its own pid
        start = (pid * 7919 + fd) % self.store.count  # uploads at once start apart: the first try is usually free
        for step in range(self.store.count):
            index = (start + step) % self.store.count
            with self.store.locked(index) as record:
                if _RECORD.unpack_from(record)[5] == _FREE:
                    _RECORD.pack_into(record, 0, pid, fd, info.st_dev, info.st_ino, now, _LIVE)
                    return Ticket(index, now)
        return None

    def progress(self, ticket: Ticket) -> bool:
        """Body bytes came; False when the upload was reclaimed (its file emptied) meanwhile.
        The record is touched at most every ``NOTE_EVERY`` seconds while bytes flow; the first
        bytes after a pause always look (a reclaim only ever happens during one)."""
        now = self.clock()
        if now - ticket.noted < NOTE_EVERY:
            return True
        ticket.noted = now
        with self.store.locked(ticket.index) as record:
            fields = list(_RECORD.unpack_from(record))
            if fields[5] == _RECLAIMED:
                return False
            fields[4] = now
            _RECORD.pack_into(record, 0, *fields)
        return True

    def forget(self, ticket: Ticket) -> None:
        with self.store.locked(ticket.index) as record:
            _RECORD.pack_into(record, 0, 0, 0, 0, 0, 0.0, _FREE)

    def reclaim(self) -> int:
        """Empty the files of uploads stalled for ``after`` seconds or more; bytes freed."""
        now = self.clock()
        freed = 0
        for index in range(self.store.count):
            with self.store.locked(index) as record:
                pid, fd, dev, ino, last, state = _RECORD.unpack_from(record)
                if state != _LIVE or now - last < self.after:
                    continue
                freed += _empty(pid, fd, dev, ino)
                _RECORD.pack_into(record, 0, pid, fd, dev, ino, last, _RECLAIMED)
        return freed


def _empty(pid: int, fd: int, dev: int, ino: int) -> int:
    """Truncate the file ``pid`` holds open as ``fd`` if it is still that file; bytes freed.
    (An owner gone without forgetting its record -- killed -- leaves nothing to free.)"""
    try:
        handle = os.open(f"/proc/{pid}/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        info = os.fstat(handle)
        if (info.st_dev, info.st_ino) != (dev, ino):
            return 0
        os.ftruncate(handle, 0)
        return info.st_blocks * 512
    except OSError:
        return 0
    finally:
        with contextlib.suppress(OSError):
            os.close(handle)
