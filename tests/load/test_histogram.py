"""The load tester's arithmetic: log-linear buckets, nearest-rank percentiles, merging (no sockets)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockkit.load.histogram import MAX_VALUE, SUB, Histogram, bucket_bounds, bucket_of

PERCENTS = (0, 1, 25, 50, 90, 99, 99.9, 99.99, 100)
values = st.integers(min_value=0, max_value=10**11)


def exact_percentile(data: list[int], percent: float) -> int:
    """Nearest rank, computed with exact fractions: the smallest value with percent % at or below it."""
    ordered = sorted(data)
    rank = max(1, math.ceil(Fraction(repr(float(percent))) * len(ordered) / 100))
    return ordered[rank - 1]


def close_enough(got: int, exact: int) -> bool:
    """Within the bucket holding the exact value: 1/SUB of it (exact below 2 * SUB)."""
    low, high = bucket_bounds(bucket_of(exact))
    return low <= got <= high and abs(got - exact) <= max(0, exact) / SUB


def test_small_values_are_exact() -> None:
    """Below 2 * SUB every value has its own bucket."""
    hist = Histogram()
    hist.record_many(range(1, 101))
    assert hist.percentile(50) == 50
    assert hist.percentile(99) == 99
    assert hist.percentile(100) == 100
    assert hist.percentile(0) == 1
    assert hist.total == 100


def test_known_data_percentiles() -> None:
    """1..100,000 microseconds in ns: p50, p90, p99, p99.9 land within 1/128 of the exact values."""
    data = [i * 1000 for i in range(1, 100_001)]
    hist = Histogram()
    hist.record_many(data)
    for percent in (50, 90, 99, 99.9):
        assert close_enough(hist.percentile(percent), exact_percentile(data, percent)), percent
    assert hist.minimum == 1000
    assert hist.maximum == 100_000_000
    assert abs(hist.mean - sum(data) / len(data)) <= hist.mean / SUB


def test_float_rank_is_exact() -> None:
    """99.9 % of 1000 samples is the 999th, not the 1000th (0.999 * 1000 is 999.0000000000001 in floats)."""
    hist = Histogram()
    hist.record_many(range(1, 1001))
    assert close_enough(hist.percentile(99.9), 999)
    assert hist.percentile(99.9) < 1000


def test_empty_and_bounds() -> None:
    hist = Histogram()
    assert hist.percentile(99) == 0
    assert hist.total == 0
    assert hist.mean == 0.0
    with pytest.raises(ValueError):
        hist.percentile(101)
    hist.record(-5)
    hist.record(MAX_VALUE * 4)
    assert hist.minimum == 0
    assert hist.maximum == MAX_VALUE


@given(st.integers(min_value=0, max_value=MAX_VALUE))
def test_every_value_lands_inside_its_bucket(value: int) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value <= high
    assert high - low <= max(0, low) / SUB


def test_buckets_are_contiguous() -> None:
    """Bucket i + 1 starts right after bucket i ends: no value falls between two buckets."""
    for index in range(1, bucket_of(MAX_VALUE)):
        assert bucket_bounds(index)[0] == bucket_bounds(index - 1)[1] + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=400))
def test_percentiles_match_exact_computation(data: list[int]) -> None:
    hist = Histogram()
    hist.record_many(data)
    assert hist.total == len(data)
    assert hist.minimum == min(data)
    assert hist.maximum == max(data)
    for percent in PERCENTS:
        got = hist.percentile(percent)
        exact = exact_percentile(data, percent)
        assert close_enough(got, exact), (percent, got, exact)


@settings(max_examples=100, deadline=None)
@given(st.lists(values, max_size=200), st.lists(values, max_size=200))
def test_merge_equals_recording_everything_in_one(first: list[int], second: list[int]) -> None:
    """Workers' histograms added up are the histogram of all samples (also through JSON)."""
    a, b, both = Histogram(), Histogram(), Histogram()
    a.record_many(first)
    b.record_many(second)
    both.record_many(first + second)
    merged = Histogram.from_dict(a.to_dict()).merge(Histogram.from_dict(b.to_dict()))
    assert merged.counts == both.counts
    assert merged.total == both.total
    if first or second:
        assert (merged.minimum, merged.maximum) == (both.minimum, both.maximum)
        for percent in PERCENTS:
            assert merged.percentile(percent) == both.percentile(percent)


def test_clear_keeps_the_same_counter_list() -> None:
    """The driver's hot path holds ``counts``: clearing after warmup must not replace the list."""
    hist = Histogram()
    counts = hist.counts
    hist.record(12345)
    hist.clear()
    assert hist.counts is counts
    assert hist.total == 0
