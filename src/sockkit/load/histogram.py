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

from collections.abc import Iterable
from dataclasses import dataclass

SUB_BITS = 7
SUB = 1 << SUB_BITS  # buckets per power of two: the relative precision is 1/SUB
#: Largest value kept exactly in its bucket range; larger ones are clamped (2**40 ns is 18 minutes).
MAX_BITS = 40
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


@dataclass
class Histogram:
    counts: list[int]
    total: int = 0
    minimum: int = 0
    maximum: int = 0
    sum: int = 0

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.minimum = MAX_VALUE
        self.maximum = 0
        self.sum = 0

    def record(self, value: int) -> None:
        if value < 0:
            value = 0
        elif value > MAX_VALUE:
            value = MAX_VALUE
        shift = value.bit_length() - SUB_BITS - 1
        self.counts[value if shift <= 0 else (shift << SUB_BITS) + (value >> shift)] += 1
        self.total += 1
        self.sum += value
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def record_many(self, values: Iterable[int]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s samples into this histogram; returns self."""
        if not other.total:
            return self
        counts = self.counts
        for index, count in enumerate(other.counts):
            if count:
                counts[index] += count
        self.total += other.total
        self.sum += other.sum
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)
        return self

    def percentile(self, percent: float) -> int:
        """The nearest-rank percentile: the smallest recorded value with ``percent`` % of samples at or
        below it, reported as the middle of its bucket (clamped to the exact min and max); 0 if empty."""
        if not self.total:
            return 0
        if not 0 <= percent <= 100:
            raise ValueError("percent must be between 0 and 100")
        rank = max(1, -(-self.total * percent // 100))  # ceil without float error for integer percents
        rank = min(self.total, int(rank))
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
        return self.sum / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        """A JSON-able form: only the non-empty buckets."""
        return {"total": self.total, "min": self.minimum, "max": self.maximum, "sum": self.sum,
                "buckets": {str(i): c for i, c in enumerate(self.counts) if c}}

    @classmethod
    def from_dict(cls, data: dict) -> Histogram:
        hist = cls()
        for index, count in data["buckets"].items():
            hist.counts[int(index)] = count
        hist.total, hist.sum = data["total"], data["sum"]
        hist.minimum, hist.maximum = data["min"], data["max"]
        return hist

    def reset(self) -> None:
        self.__init__()
