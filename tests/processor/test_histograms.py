"""Cumulative histograms and the arrival rate: deterministic on scripted values and times."""

from __future__ import annotations

import time

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchProcessorConfig
from fastbatch.core import _backend
from fastbatch.observe._histograms import ArrivalMeter, default_size_buckets


def test_histogram_buckets_are_cumulative_and_le_inclusive():
    h = _backend.Histogram([1.0, 2.0, 5.0])
    # Elapsed times at scale 1: end 10 minus starts (9.5, 9, 8.5, 8, 3) = 0.5, 1, 1.5, 2, 7.
    h.observe_elapsed(np.array([95, 90, 85, 80, 30], dtype=np.int64), 100, 0.1)
    h.observe(5.0)
    h.observe(float("nan"))  # above every bound
    counts, observations, total = h.snapshot()
    assert h.bounds == (1.0, 2.0, 5.0)
    assert counts == (2, 4, 5)  # <=1: 0.5, 1.0; <=2: +1.5, 2.0; <=5: +5.0
    assert observations == 7 and np.isnan(total)


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, float("inf")), ("a",), "12"])
def test_core_histogram_refuses_bad_bounds(bounds):
    with pytest.raises(ValueError, match="bounds must be a non-empty sequence of finite numbers"):
        _backend.Histogram(bounds)


def test_default_size_buckets_end_at_the_maximum():
    assert default_size_buckets(1) == (1.0,)
    assert default_size_buckets(64) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    assert default_size_buckets(100) == (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0)


@pytest.mark.parametrize("bounds, exc, fragment", [
    ((), ValueError, "at least one"),
    ((1.0, 1.0), ValueError, "increase strictly"),
    ((0.0, 1.0), ValueError, "must be finite and > 0"),
    ((1.0, float("inf")), ValueError, "must be finite"),
    (("1",), TypeError, "'1' is not a number"),
    ("0.1,1", TypeError, "must be a sequence of numbers"),
])
def test_bucket_bounds_are_checked(bounds, exc, fragment):
    with pytest.raises(exc, match="latency_buckets") as info:
        BatchProcessorConfig(latency_buckets=bounds)
    assert fragment in str(info.value)


def test_arrival_meter_follows_a_burst_then_falls_to_zero():
    meter = ArrivalMeter(window_s=10.0, step_s=0.25)
    meter.start(100.0, 0)
    assert meter.rate(100.5, 500) == pytest.approx(1000.0)  # 500 items in the first half second
    # Read again and again with nothing arriving: the rate falls, then is 0 past the window.
    assert meter.rate(105.0, 500) == pytest.approx(100.0)
    assert meter.rate(120.0, 500) == 0.0
    # Steady arrivals of 200/s, marked at batch ends: the rate is over the last ~10 s.
    count = 500
    for step in range(1, 201):
        now = 120.0 + step * 0.1
        count += 20
        meter.mark(now, count)
    assert meter.rate(140.0, count) == pytest.approx(200.0, rel=0.05)


def test_processor_histograms_count_every_item_and_batch(make_processor, gate):
    processor = make_processor(gate, max_batch_size=4, latency_buckets=(0.001, 10.0))
    gate.hold()
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(10)]
    assert gate.entered.wait(5)
    gate.release.set()
    for f in futures:
        f.result(5)
    processor.stop()
    hist = processor.get_histograms()
    assert hist["item_latency_seconds"].bounds == (0.001, 10.0)
    assert hist["item_latency_seconds"].observations == 10
    assert hist["item_latency_seconds"].counts[-1] == 10  # all under 10 s
    assert hist["item_queue_time_seconds"].observations == 10
    stats = processor.get_stats()
    sizes = hist["batch_size_samples"]
    assert sizes.bounds == (1.0, 2.0, 4.0)
    assert sizes.observations == stats["batch_count"] and sizes.sum == 10
    assert hist["batch_processing_seconds"].observations == stats["batch_count"]


def test_arrival_rate_is_not_zero_after_a_burst(make_processor):
    before = time.monotonic()
    processor = make_processor(lambda b: b, max_batch_size=64)
    futures = [processor.enqueue_predict(np.ones(2)) for _ in range(500)]
    for f in futures:
        f.result(5)
    rate = processor.get_stats()["arrival_rate"]
    elapsed = time.monotonic() - before
    # All 500 arrived since the start, well within the 10 s window.
    assert rate >= 500 / elapsed, (rate, elapsed)
