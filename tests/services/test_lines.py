"""The bounded line buffer, with no sockets: same lines however the bytes are cut, a hard bound,
and a cost linear in the bytes fed."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockkit.services.lines import LineBuffer, LineTooLong

STREAM = b"spam\nSpam\r\n\nSPAM\n" + b"x" * 300 + b"\nlast"


def fed(buffer: LineBuffer, chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    lines = []
    for chunk in chunks:
        lines += buffer.feed(chunk)
    return lines, buffer.pending()


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=60))
def test_any_cut_gives_the_lines_of_one_chunk(sizes):
    """Chunks of any sizes give exactly the lines (and tail) of the whole stream fed at once."""
    cuts = [min(cut, len(STREAM)) for cut in itertools.accumulate(sizes)]
    chunks = [STREAM[start:end] for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True)]
    assert fed(LineBuffer(1000), chunks) == fed(LineBuffer(1000), [STREAM])
    assert fed(LineBuffer(1000), chunks) == (STREAM.split(b"\n")[:-1], b"last")


@pytest.mark.parametrize("pieces", [[b"abcd", b"e"], [b"ab", b"cd", b"e\n"], [b"abcde\n"], [b"x\nabcde"],
                                    [b"ab", b"c\nabcde"]])
def test_more_than_limit_without_a_newline_is_refused(pieces):
    """Five bytes of one line pass no 4-byte limit, however they arrive; the buffer is emptied."""
    buffer = LineBuffer(4)
    with pytest.raises(LineTooLong):
        for piece in pieces:
            buffer.feed(piece)
    assert not buffer.holding and buffer.pending() == b""


def test_exactly_the_limit_passes():
    buffer = LineBuffer(4)
    assert buffer.feed(b"ab") == [] and buffer.feed(b"cd") == [] and buffer.holding
    assert buffer.feed(b"\nwxyz") == [b"abcd"] and buffer.pending() == b"wxyz"


def _trickle_seconds(size: int, piece: int = 100) -> float:
    """CPU seconds to feed one ``size``-byte line in ``piece``-byte chunks (best of five)."""
    chunks = [b"y" * piece] * (size // piece)
    best = float("inf")
    for _ in range(5):
        buffer = LineBuffer(size + 1)
        began = time.process_time()
        for chunk in chunks:
            buffer.feed(chunk)
        assert buffer.feed(b"\n") == [b"y" * (size // piece * piece)]
        best = min(best, time.process_time() - began)
    return best


def test_cost_is_linear_in_the_bytes_fed():
    """A line trickled in 100-byte pieces costs in proportion to its length: four times the bytes,
    about four times the CPU (measured 5x: caches), where a buffer that re-joins and re-splits its
    tail on every piece costs sixteen times (measured 17x). The ratio, not a time, is asserted:
    both sizes run here, on the same machine."""
    small, large = _trickle_seconds(256 << 10), _trickle_seconds(1 << 20)
    assert large / small < 10, f"256 KiB: {small * 1000:.1f} ms, 1 MiB: {large * 1000:.1f} ms"
