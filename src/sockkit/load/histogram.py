"""Latency histogram with log-linear buckets (the HdrHistogram idea, in a few lines).

Values are integers (nanoseconds here). Below 256 every value has its own bucket; above, each
power-of-two range [2**k, 2**(k+1)) is split into 128 equal buckets, so a bucket is never wider
than 1/128 of the values it holds: any percentile is within 0.8 % of the exact one, with a fixed
few thousand counters whatever the number of samples. Recording is one ``bit_length`` and one
list increment (no allocation), which matters because the client shares the CPU with the server.

Two histograms with the same layout merge by adding counters, so worker processes each keep their
own and the parent adds them up (``to_dict``/``from_dict`` carry them over a pipe as JSON).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

SUB_BITS = 7
SUB = 1 << SUB_BITS  # buckets per power of two: the relative precision is 1/SUB
#: Largest value kept exactly in its bucket range; larger ones are clamped (2**42 ns is 73 minutes).
MAX_BITS = 42
MAX_VALUE = (1 << MAX_BITS) - 1
BUCKETS = ((MAX_BITS - SUB_BITS) << SUB_BITS) + 2 * SUB


def bucket_of(value: int) -> int:
    """Index of the bucket holding ``value`` (0 <= value <= MAX_VALUE)."""
    shift = value.bit_length() - SUB_BITS - 1
    if shift <= 0:
        return value
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The values ``[low, high]`` that land in bucket ``index``."""
    if index < 2 * SUB:
        return index, index
    shift = (index >> SUB_BITS) - 1
    low = (index - (shift << SUB_BITS)) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts per bucket plus the exact smallest and largest value; the count and the mean are derived
    from the buckets when asked (the hot path only increments one counter and compares twice)."""

    __slots__ = ("counts", "maximum", "minimum")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.minimum = MAX_VALUE
        self.maximum = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        elif value > MAX_VALUE:
            value = MAX_VALUE
        shift = value.bit_length() - SUB_BITS - 1
        self.counts[value if shift <= 0 else (shift << SUB_BITS) + (value >> shift)] += 1
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def clear(self) -> None:
        """Forget every sample, in place (a hot loop may hold a reference to ``counts``)."""
        self.counts[:] = [0] * BUCKETS
        self.minimum = MAX_VALUE
        self.maximum = 0

    def record_many(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s samples into this histogram; returns self."""
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        return self

    def percentile(self, percent: float) -> int:
        """The nearest-rank percentile: the smallest recorded value with ``percent`` % of samples at or
        below it, reported as the middle of its bucket (clamped to the exact min and max); 0 if empty."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        total = self.total
        if not total:
            return 0
        # Exact decimal arithmetic: 99.9 % of 1000 samples is rank 999, not 1000 from float rounding.
        rank = min(total, max(1, math.ceil(Fraction(repr(float(percent))) * total / 100)))
        seen = 0
        for index, count in enumerate(self.counts):
            if count:
                seen += count
                if seen >= rank:
                    low, high = bucket_bounds(index)
                    return min(max((low + high) // 2, self.minimum), self.maximum)
        return self.maximum

    @property
    def mean(self) -> float:
        """Mean of the bucket middles (within the same 1/128 as the percentiles)."""
        total = self.total
        if not total:
            return 0.0
        weighted = 0
        for index, count in enumerate(self.counts):
            if count:
                low, high = bucket_bounds(index)
                weighted += count * (low + high) / 2
        return weighted / total

    def to_dict(self) -> dict:
        """A JSON-able form: only the non-empty buckets."""
        return {"min": self.minimum, "max": self.maximum,
                "buckets": {str(i): c for i, c in enumerate(self.counts) if c}}

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        hist = cls()
        for index, count in data["buckets"].items():
            hist.counts[int(index)] = count
        hist.minimum, hist.maximum = data["min"], data["max"]
        return hist
