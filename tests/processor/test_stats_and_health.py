"""get_stats(), BatchStats, adaptive sizing and the health monitor."""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchProcessingStrategy, BatchProcessorConfig
from fastbatch.runtime._scheduler import Scheduler

SEED_KEYS = {
    "avg_processing_time_ms", "p95_processing_time_ms", "avg_batch_size", "max_batch_size",
    "min_batch_size", "avg_queue_time_ms", "avg_latency_ms", "p95_latency_ms", "p99_latency_ms",
    "avg_queue_length", "max_queue_length", "error_rate", "throughput", "batch_count",
    "total_processed", "current_batch_size", "system_load", "active_batches", "queue_size",
    "is_paused", "is_stopping",
}


def _run_batches(processor, gate, sizes):
    """Run batches of exactly the given sizes (the gate holds the worker between them)."""
    futures = []
    for n in sizes:
        gate.hold()
        futures += [processor.enqueue_predict(np.array([float(n)])) for _ in range(n)]
        assert gate.entered.wait(5)
        gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    return futures


def test_every_seed_key_is_reported(make_processor):
    processor = make_processor(lambda b: b)
    assert SEED_KEYS <= processor.get_stats().keys()
    processor.enqueue_predict(np.zeros(3)).result(timeout=5)
    stats = processor.get_stats()
    assert SEED_KEYS <= stats.keys()
    assert all(isinstance(stats[k], (int, float, bool)) for k in SEED_KEYS)


def test_counts_and_sizes_are_honest(make_processor, gate):
    processor = make_processor(gate, max_batch_size=100, initial_batch_size=100, batch_timeout=0.05,
                               processing_strategy="fixed")
    gate.hold()
    first = processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    futures = [processor.enqueue_predict(np.zeros(1)) for _ in range(30)]
    gate.release.set()
    concurrent.futures.wait([first, *futures], timeout=10)
    stats = processor.get_stats()
    sizes = [len(b) for b in gate.batches]
    assert sum(sizes) == 31
    assert stats["batch_count"] == len(sizes)
    assert stats["total_processed"] == 31 == stats["total_submitted"]
    assert stats["avg_batch_size"] == pytest.approx(np.mean(sizes))
    assert stats["max_batch_size"] == max(sizes) and stats["min_batch_size"] == min(sizes)
    assert stats["error_rate"] == 0.0
    assert stats["queue_size"] == 0 and stats["active_batches"] == 0
    assert stats["is_paused"] is False and stats["is_stopping"] is False


def test_latencies_are_per_item_and_ordered(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=10, batch_timeout=0.02)
    futures = [processor.enqueue_predict(np.zeros(1)) for _ in range(25)]
    concurrent.futures.wait(futures, timeout=10)
    s = processor.get_stats()
    assert 0 < s["avg_queue_time_ms"] <= s["avg_latency_ms"]
    assert 0 < s["p95_latency_ms"] <= s["p99_latency_ms"]
    assert s["p99_latency_ms"] < 5000
    assert s["avg_processing_time_ms"] > 0 and s["p95_processing_time_ms"] > 0
    assert s["throughput"] > 0


def test_error_rate_counts_failed_items(make_processor, gate):
    gate.func = lambda b: (_ for _ in ()).throw(ValueError("bad")) if b[0, 0] < 0 else b
    processor = make_processor(gate, max_retries=0, max_batch_size=10, initial_batch_size=10,
                               batch_timeout=0.0, processing_strategy="fixed", reduce_batch_on_failure=False)
    for sign, n in ((1, 3), (-1, 1)):
        gate.hold()
        futures = [processor.enqueue_predict(np.array([float(sign)])) for _ in range(n)]
        assert gate.entered.wait(5)
        gate.release.set()
        concurrent.futures.wait(futures, timeout=5)
    stats = processor.get_stats()
    assert stats["total_failed"] == 1 and stats["total_processed"] == 3
    assert stats["error_rate"] == pytest.approx(0.25)


def test_monitoring_off_still_reports_runtime_keys(make_processor):
    processor = make_processor(lambda b: b, enable_monitoring=False)
    processor.enqueue_predict(np.zeros(2)).result(timeout=5)
    stats = processor.get_stats()
    assert SEED_KEYS <= stats.keys()
    assert stats["avg_latency_ms"] == 0.0 and stats["throughput"] == 0.0
    assert stats["batch_count"] == 1 and stats["total_processed"] == 1
    assert stats["current_batch_size"] >= 1 and stats["is_paused"] is False


def test_batch_stats_seed_api():
    stats = fastbatch.BatchStats(window=10)
    stats.update(processing_time=0.010, batch_size=4, queue_time=[0.001, 0.002, 0.003, 0.004],
                 latency=[0.011, 0.012, 0.013, 0.014], queue_length=7)
    stats.update(processing_time=0.030, batch_size=2, queue_time=0.005, latency=0.035, queue_length=3)
    stats.record_error(2)
    s = stats.get_stats()
    assert s["batch_count"] == 2 and s["total_processed"] == 6
    assert s["avg_processing_time_ms"] == pytest.approx(20.0)
    assert s["avg_batch_size"] == pytest.approx(3.0)
    assert s["avg_queue_time_ms"] == pytest.approx(np.mean([1, 2, 3, 4, 5]))
    assert s["p99_latency_ms"] == pytest.approx(np.percentile([11, 12, 13, 14, 35], 99))
    assert s["max_queue_length"] == 7 and s["avg_queue_length"] == pytest.approx(5.0)
    assert s["error_rate"] == pytest.approx(2 / 8)


# -- adaptive sizing ----------------------------------------------------------------------

def _sizer(**fields):
    base = dict(initial_batch_size=100, min_batch_size=10, max_batch_size=400, batch_timeout=0.1)
    base.update(fields)
    return Scheduler(BatchProcessorConfig(**base), clock=lambda: 0)


def finish(scheduler, end_s, processing_s, samples, backlog):
    """A clean batch of ``samples`` ended at ``end_s`` (scripted time)."""
    scheduler.finished(int(end_s * 1e9), processing_s, samples, backlog)


def test_adaptive_grows_when_fast_and_never_shrinks_because_the_model_is_slow():
    sizer = _sizer()
    finish(sizer, 1.0, processing_s=0.01, samples=100, backlog=0)  # fast next to the timeout
    assert sizer.size == 120
    sizer = _sizer()
    for k in range(50):  # every batch takes longer than batch_timeout: still no shrinking
        finish(sizer, float(k), processing_s=0.5, samples=1, backlog=0)
    assert sizer.size == 100
    finish(sizer, 60.0, processing_s=0.5, samples=100, backlog=100)  # a full batch waits: grow
    assert sizer.size == 120
    assert sizer.shrink() == 60  # failures and memory pressure still shrink it


def test_adaptive_keeps_up_with_arrivals_on_a_slow_model():
    """2000 samples/s arrive and every batch takes 0.09 s of a 0.1 s timeout (load 0.9):
    the size grows while a backlog builds, until the queue drains."""
    sizer = _sizer(initial_batch_size=50)
    t, backlog, rate, duration = 0.0, 0.0, 2000.0, 0.09
    for _ in range(300):
        t += duration
        backlog += rate * duration
        taken = min(sizer.size, int(backlog))
        backlog -= taken
        finish(sizer, t, processing_s=duration, samples=taken, backlog=int(backlog))
    assert sizer.size >= math.ceil(rate * duration)
    assert backlog < sizer.size  # keeping up: no growing queue


def test_fixed_and_greedy_keep_their_size():
    fixed = _sizer(processing_strategy=BatchProcessingStrategy.FIXED)
    greedy = _sizer(processing_strategy="greedy")
    off = _sizer(enable_adaptive_batching=False)
    for s in (fixed, greedy, off):
        before = s.size
        finish(s, 1.0, processing_s=0.09, samples=1, backlog=0)
        finish(s, 2.0, processing_s=0.001, samples=1, backlog=0)
        assert s.size == before
    assert greedy.size == 400 and fixed.size == 100


def test_balanced_follows_backlog():
    sizer = _sizer(processing_strategy="balanced")
    finish(sizer, 1.0, processing_s=0.01, samples=50, backlog=250)
    assert sizer.size == 250
    finish(sizer, 2.0, processing_s=0.01, samples=5, backlog=0)
    assert sizer.size == 10


def test_system_load_reported(make_processor):
    processor = make_processor(lambda b: b, batch_timeout=0.01)
    assert processor.get_stats()["system_load"] == 0.0
    processor.enqueue_predict(np.zeros(1)).result(timeout=5)
    assert 0.0 < processor.get_stats()["system_load"] <= 1.0


# -- health -------------------------------------------------------------------------------

def test_health_ok_and_stopped(make_processor):
    processor = make_processor(lambda b: b)
    snap = processor.health()
    assert snap.status == "ok" and snap.reasons == () and 0 < snap.memory_percent < 100
    processor.stop()
    assert processor.health().status == "stopped"


def test_health_reports_queue_growth_and_grows_batches(make_processor, gate, caplog):
    gate.hold()
    processor = make_processor(gate, queue_warning_threshold=3, queue_critical_threshold=6,
                               max_batch_size=100, initial_batch_size=10, batch_timeout=0.0)
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    futures = [processor.enqueue_predict(np.zeros(1)) for _ in range(4)]
    snap = processor.health()
    assert snap.status == "warning" and snap.queue_size == 4
    assert "queue_warning_threshold=3" in snap.reasons[0]
    with caplog.at_level(logging.WARNING, logger="fastbatch"):
        processor._monitor.check(act=True)
        assert processor.get_stats()["current_batch_size"] == 13
        processor._monitor.check(act=True)  # same finding: acted on again, logged once
    assert processor.get_stats()["current_batch_size"] == 17
    assert caplog.text.count("queue_warning_threshold") == 1
    futures += [processor.enqueue_predict(np.zeros(1)) for _ in range(3)]
    processor._monitor.check(act=True)
    assert processor.health().status == "critical"
    assert processor.get_stats()["current_batch_size"] == 100
    gate.release.set()
    concurrent.futures.wait(futures, timeout=5)


def test_health_reports_stuck_batch(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, stuck_batch_timeout=0.05)
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    threading.Event().wait(0.1)  # let the batch overrun its (tiny) stuck limit
    snap = processor.health()
    assert snap.status == "critical" and "stuck_batch_timeout=0.05" in snap.reasons[0]
    assert snap.batch_running_s >= 0.05
    assert processor.get_stats()["active_batches"] == 1
    gate.release.set()


def test_health_reports_every_stuck_batch_with_the_longest_running_time():
    from fastbatch.core import _backend
    from fastbatch.runtime._health import HealthMonitor

    config = BatchProcessorConfig(stuck_batch_timeout=5.0, enable_health_monitoring=False)
    now = _backend.monotonic_ns()
    running = [now - 9_000_000_000, now - 1_000_000_000, now - 7_000_000_000]  # scripted start times
    monitor = HealthMonitor("scripted", config, Scheduler(config), lambda: 0, lambda: list(running))
    snap = monitor.check()
    assert snap.status == "critical" and snap.batch_running_s >= 9.0
    assert "2 batches have been running for 9.0s, 7.0s (stuck_batch_timeout=5.0s)" in snap.reasons[0]
    running[:] = [now]
    assert monitor.check().status == "ok"


def test_health_memory_thresholds(make_processor):
    processor = make_processor(lambda b: b, memory_warning_threshold=0.001, memory_critical_threshold=0.002,
                               max_batch_size=100, initial_batch_size=80)
    snap = processor._monitor.check(act=True)
    assert snap.status == "critical" and "memory_critical_threshold" in snap.reasons[0]
    assert processor.get_stats()["current_batch_size"] == 40


def test_health_thread_runs_and_stops(make_processor):
    processor = make_processor(lambda b: b, enable_health_monitoring=True, health_check_interval=0.01,
                               queue_warning_threshold=1, queue_critical_threshold=2)
    names = [t.name for t in threading.enumerate()]
    assert any(n.startswith("fastbatch-health-") for n in names)
    processor.stop(timeout=5)
    assert not any(t.name.startswith("fastbatch-") for t in threading.enumerate())
