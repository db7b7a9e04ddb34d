"""The server-wide bound on memory held by unfinished lines (``serve echo --lines --line-memory``).

Rule: what every connection may hold adds up to a bound for the whole server. A line buffer's
first ``ALLOWANCE`` bytes are its own (as the 64 KiB of output buffered per client are): a person
typing, or a line cut in two by TCP, never competes with anyone. Past that, every started
``GRANULE`` of an unfinished line is a unit taken from one pool of ``limit`` bytes shared by the
whole server; a line that needs a unit when none is free is refused (``LineMemoryFull``) and its
connection closed, and the units of a line go back as soon as it completes or its client goes.
So at most ``connections x ALLOWANCE + limit`` bytes are ever held by unfinished lines, where
1,024 clients each holding a line just under 1 MiB used to take 1.1-1.4 GiB (issue 16).

The units themselves are counted by what the pool is given (``Counter``): the command-line glue
hands in ``ofd.Units``, made before any fork, so under the fork and prefork models (a process per
client, or per worker) it is still one pool for the whole server, and a process killed with
SIGKILL gives its units back with its descriptors; ``LocalUnits`` counts in one process only (the
fallback where OFD locks are unavailable, and the bound then holds per process).
"""

from __future__ import annotations

from typing import Protocol

#: Bytes of an unfinished line each connection holds without asking the pool.
ALLOWANCE = 64 << 10
#: The pool's unit: a longer line takes one per started 64 KiB past the allowance.
GRANULE = 64 << 10
#: The default pool: room for 64 lines of 1 MiB (the default longest line) at once.
DEFAULT_LINE_MEMORY = 64 << 20


def granules_for(size: int) -> int:
    """Pool units an unfinished line of ``size`` bytes needs."""
    return 0 if size <= ALLOWANCE else -(-(size - ALLOWANCE) // GRANULE)


class LineMemoryFull(ValueError):
    """Unfinished lines hold the whole pool: this line may not grow."""


class UnitHolder(Protocol):
    def hold(self, count: int) -> bool:
        """Hold exactly ``count`` units; False when too few are free."""
        ...

    def release(self) -> None: ...


class Counter(Protocol):
    """Where units are counted: ``ofd.Units`` (server-wide) or ``LocalUnits`` (this process)."""

    count: int

    def holders(self) -> UnitHolder: ...


class LineHolding:
    """What one connection's unfinished line holds of the pool."""

    __slots__ = ("holder", "limit")

    def __init__(self, holder: UnitHolder, limit: int) -> None:
        self.holder = holder
        self.limit = limit

    def fit(self, size: int) -> None:
        """Hold exactly what a line of ``size`` bytes needs; raises LineMemoryFull."""
        if not self.holder.hold(granules_for(size)):
            raise LineMemoryFull(f"server busy: unfinished lines hold all {self.limit >> 20} MiB of --line-memory; "
                                 "try again later")

    def release(self) -> None:
        self.holder.release()


class LinePool:
    """``limit`` bytes of unfinished lines for the whole server, counted by ``counter``."""

    def __init__(self, limit: int, counter: Counter) -> None:
        self.limit = limit
        self.counter = counter

    def holding(self) -> LineHolding:
        return LineHolding(self.counter.holders(), self.limit)


class _LocalHolder:
    __slots__ = ("held", "units")

    def __init__(self, units: LocalUnits) -> None:
        self.units = units
        self.held: list[object] = []

    def hold(self, count: int) -> bool:
        held, taken = self.held, self.units.taken
        while len(held) > count:
            taken.discard(held.pop())
        while len(held) < count:
            unit = object()
            taken.add(unit)  # add, then check: set operations are atomic under the GIL
            if len(taken) > self.units.count:
                taken.discard(unit)
                return False
            held.append(unit)
        return True

    def release(self) -> None:
        self.hold(0)


class LocalUnits:
    """``count`` units counted in this process only."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.taken: set[object] = set()

    def holders(self) -> UnitHolder:
        return _LocalHolder(self)


def units_for(limit: int) -> int:
    """Pool units for ``limit`` bytes (at least one)."""
    return max(1, limit // GRANULE)
