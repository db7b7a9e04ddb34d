"""The server-wide bound on unfinished lines, with no sockets: per-connection holdings add up to one
pool, counted per process or across processes (OFD locks), given back when a line ends or its
holder goes -- even by SIGKILL."""

from __future__ import annotations

import os
import signal

import pytest

from sockkit import ofd
from sockkit.services.actions import CLOSE, Peer, Send, as_actions
from sockkit.services.echo import EchoService
from sockkit.services.line_memory import (
    ALLOWANCE,
    GRANULE,
    LineMemoryFull,
    LinePool,
    LocalUnits,
    granules_for,
    units_for,
)
from sockkit.services.lines import LineBuffer


def test_granules_past_the_allowance():
    assert [granules_for(n) for n in (0, 1, ALLOWANCE, ALLOWANCE + 1, ALLOWANCE + GRANULE,
                                      ALLOWANCE + GRANULE + 1)] == [0, 0, 0, 1, 1, 2]
    assert units_for(64 << 20) == 1024 and units_for(1) == 1


@pytest.fixture(params=["local", "ofd"])
def counter(request):
    """Two units, counted in this process, or through OFD locks on a shared memfd."""
    return LocalUnits(2) if request.param == "local" else ofd.Units("test-line-memory", 2)


def test_lines_share_one_pool(counter):
    """A line past the allowance takes units; another that needs one more than is free is refused
    and emptied; when the first line ends its units go back and the other may grow."""
    pool = LinePool(2 * GRANULE, counter)
    first, second = LineBuffer(1 << 20, pool.holding()), LineBuffer(1 << 20, pool.holding())
    assert first.feed(b"a" * (ALLOWANCE + 2 * GRANULE)) == []  # both units
    assert second.feed(b"b" * ALLOWANCE) == []  # within its own allowance: no unit needed
    with pytest.raises(LineMemoryFull, match="--line-memory"):
        second.feed(b"b")
    assert not second.holding
    assert first.feed(b"\n") == [b"a" * (ALLOWANCE + 2 * GRANULE)]  # the line ends: units back
    assert second.feed(b"c" * (ALLOWANCE + GRANULE)) == []
    third = LineBuffer(1 << 20, pool.holding())
    third.feed(b"d" * (ALLOWANCE + GRANULE))  # the last unit
    with pytest.raises(LineMemoryFull):
        first.feed(b"e" * (ALLOWANCE + 1))
    second.close()  # its connection is gone
    first.feed(b"e" * (ALLOWANCE + 1))


def test_a_refused_or_too_long_line_gives_its_units_back(counter):
    pool = LinePool(2 * GRANULE, counter)
    greedy = LineBuffer(ALLOWANCE + GRANULE, pool.holding())
    greedy.feed(b"x" * (ALLOWANCE + GRANULE))
    with pytest.raises(ValueError, match="longer than"):
        greedy.feed(b"x")
    other = LineBuffer(1 << 20, pool.holding())
    other.feed(b"y" * (ALLOWANCE + 2 * GRANULE))  # both units are free again
    assert other.pending() == b"y" * (ALLOWANCE + 2 * GRANULE)
    LineBuffer(1 << 20, pool.holding()).feed(b"z" * (ALLOWANCE + 2 * GRANULE))  # pending() gave them back


def test_units_are_shared_across_processes_and_freed_by_sigkill():
    """A forked process holding every unit leaves none to the parent; killed with SIGKILL, its
    units come back (the kernel drops its OFD locks with its descriptors)."""
    units = ofd.Units("test-line-memory", 3)
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        holder = units.holders()
        os.write(ready_w, b"1" if holder.hold(3) else b"0")
        signal.pause()
        os._exit(0)
    try:
        assert os.read(ready_r, 1) == b"1"
        mine = units.holders()
        assert not mine.hold(1)
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        assert mine.hold(3)
        mine.release()
    finally:
        os.close(ready_r)
        os.close(ready_w)
        if child:
            try:
                os.kill(child, signal.SIGKILL)
                os.waitpid(child, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def test_echo_refuses_a_line_the_pool_cannot_hold_and_closing_frees_it():
    pool = LinePool(GRANULE, LocalUnits(1))
    service = EchoService(lines=True, line_pool=pool)
    hog = service.connect(Peer("127.0.0.1", 1))
    assert hog.receive(b"h" * (ALLOWANCE + 10)) == []
    late = service.connect(Peer("127.0.0.1", 2))
    actions = as_actions(late.receive(b"l" * (ALLOWANCE + 10)))
    assert actions[-1] == CLOSE and b"server busy" in b"".join(a.data for a in actions if type(a) is Send)
    late.close()
    hog.close()  # gone mid-line: its unit goes back
    again = service.connect(Peer("127.0.0.1", 3))
    assert again.receive(b"a" * (ALLOWANCE + 10)) == []
    assert again.receive(b"\n") == b"Echo=>" + b"a" * (ALLOWANCE + 10) + b"\n"
