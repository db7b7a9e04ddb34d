"""The server-wide bound on concurrent transfers (``--max-transfers``).

Rule: the bound holds across threads *and* processes, so it means the same under the fork and
prefork models as under threads or one event loop. Each slot is a unit of ``ofd.Units`` (a byte of
an anonymous file, OFD-locked through a fresh descriptor): the kernel releases it when the
descriptor closes -- including when a worker is killed with SIGKILL mid-transfer, so a crash can
never leak a slot. Where OFD locks or /proc are missing, a per-process count is used instead
(and the bound is then per process; the log says so once at start-up).
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

from sockkit.ofd import Units


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
    """Slots shared by every process forked after this object was made (``ofd.Units``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.units = Units("sockkit-getfile-slots", limit)

    def acquire(self) -> Slot | None:
        # A new open file description per slot: OFD locks belong to it, not to the process, so
        # threads of one process each hold their own slot.
        fd = self.units.holder()
        try:
            if self.units.take(fd) is None:
                os.close(fd)
                return None
        except BaseException:
            os.close(fd)
            raise
        return _SharedSlot(fd)


def make_slots(limit: int) -> Slots:
    """Shared slots where the kernel supports them, else a per-process count."""
    if limit <= 0:
        return Unlimited()
    try:
        return SharedSlots(limit)
    except (OSError, AttributeError):
        return LocalSlots(limit)
