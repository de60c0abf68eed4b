"""reconfigure(): batch limits and timeout changed on a running processor."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import fastbatch


def test_a_new_max_batch_size_applies_from_the_next_batch(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=8, batch_timeout=0.0, processing_strategy="fixed",
                               initial_batch_size=8)
    processor.enqueue_predict(np.zeros(2))
    assert gate.entered.wait(5)
    futures = [processor.enqueue_predict(np.full(2, float(i))) for i in range(7)]
    config = processor.reconfigure(max_batch_size=3)
    gate.release.set()
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(5), np.full(2, 2.0 * i))
    assert [len(b) for b in gate.batches] == [1, 3, 3, 1]
    assert (config.max_batch_size, config.initial_batch_size, config.min_batch_size) == (3, 3, 1)
    assert processor.config is config and processor.get_stats()["current_batch_size"] == 3


def test_items_larger_than_the_new_maximum_are_split_by_it(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=8, batch_timeout=0.0)
    processor.enqueue_predict(np.zeros((1, 1)))
    assert gate.entered.wait(5)  # the worker is busy: the next batch is formed after the change
    processor.reconfigure(max_batch_size=2)
    big = processor.enqueue_predict(np.ones((5, 1)))
    gate.release.set()
    np.testing.assert_array_equal(big.result(5), np.full((5, 1), 2.0))
    assert [len(b) for b in gate.batches] == [1, 2, 2, 1]


def test_a_refused_value_changes_nothing(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=8, min_batch_size=4)
    before = processor.config
    with pytest.raises(ValueError, match="batch_timeout"):
        processor.reconfigure(batch_timeout=-1.0)
    with pytest.raises(TypeError, match="max_batch_size"):
        processor.reconfigure(max_batch_size="16")
    with pytest.raises(ValueError, match="min_batch_size"):
        processor.reconfigure(min_batch_size=10)  # above max_batch_size=8
    with pytest.raises(TypeError):
        processor.reconfigure(max_lanes=4)  # not a runtime setting
    assert processor.config is before and processor.get_stats()["current_batch_size"] == before.initial_batch_size


def test_the_config_given_is_left_alone(make_processor):
    config = fastbatch.BatchProcessorConfig(max_batch_size=8, enable_health_monitoring=False)
    processor = fastbatch.BatchProcessor(config)
    processor.start(lambda b: b)
    try:
        processor.reconfigure(max_batch_size=4, batch_timeout=0.001)
        assert config.max_batch_size == 8 and config.batch_timeout == 0.01
        assert (processor.config.max_batch_size, processor.config.batch_timeout) == (4, 0.001)
    finally:
        processor.stop(5)


def test_reconfiguring_under_load_loses_nothing(make_processor):
    sizes = []
    processor = make_processor(lambda b: sizes.append(len(b)) or b + 1, max_batch_size=16,
                               batch_timeout=0.001)
    done = threading.Event()

    def churn():
        k = 0
        while not done.is_set():
            processor.reconfigure(max_batch_size=1 + k % 16, batch_timeout=(k % 3) * 0.001)
            k += 1
            done.wait(0.0005)  # pacing: a change every half millisecond or so

    changer = threading.Thread(target=churn)
    changer.start()
    try:
        futures = [processor.enqueue_predict(np.full(3, float(i))) for i in range(3000)]
        for i, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(10), np.full(3, i + 1.0))
    finally:
        done.set()
        changer.join(10)
    assert sum(sizes) == 3000 and max(sizes) <= 16  # the largest maximum ever set
    stats = processor.get_stats()
    assert stats["total_processed"] == 3000 and stats["total_failed"] == 0


@pytest.mark.parametrize("strategy", ["fixed", "adaptive"])
def test_a_new_batch_timeout_reaches_an_idle_processor(make_processor, strategy):
    processor = make_processor(max_batch_size=2, batch_timeout=30.0, processing_strategy=strategy)
    planned = threading.Event()
    plan = processor.scheduler.plan

    def planning(queued: int) -> Any:  # the worker plans its next batch: it is idle then
        made = plan(queued)
        planned.set()
        return made

    processor.scheduler.plan = planning
    processor.start(lambda b: b * 2)
    assert planned.wait(5)  # the worker has planned a 30 s wait for its next batch
    processor.reconfigure(batch_timeout=0.001)
    # Under the old timeout this lone item would wait 30 s for a second one.
    np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(5), np.full(2, 2.0))


def test_a_lower_max_batch_size_bounds_every_item_enqueued_after_it(make_processor, gate):
    processor = make_processor(gate, max_batch_size=16, initial_batch_size=16, batch_timeout=0.3,
                               processing_strategy="fixed")
    first = processor.enqueue_predict(np.zeros(2))  # starts a batch that waits 0.3 s for more
    processor.reconfigure(max_batch_size=1)
    later = [processor.enqueue_predict(np.full(2, float(i))) for i in range(1, 11)]
    np.testing.assert_array_equal(first.result(5), np.zeros(2))
    for i, f in enumerate(later, 1):
        np.testing.assert_array_equal(f.result(5), np.full(2, 2.0 * i))
    assert [len(b) for b in gate.batches] == [1] * 11


def test_get_stats_reports_the_limits_in_force(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=8, batch_timeout=0.02, target_latency_ms=50.0)
    processor.enqueue_predict(np.ones(2)).result(5)
    stats = processor.get_stats()
    assert (stats["config_max_batch_size"], stats["config_min_batch_size"]) == (8, 1)
    assert stats["config_batch_timeout_ms"] == pytest.approx(20.0)
    assert stats["config_target_latency_ms"] == 50.0
    assert stats["max_batch_size"] == 1  # the largest batch seen, as the classic statistics have it
    assert (stats["config_max_concurrent_batches"], stats["live_workers"]) == (1, 1)
    processor.reconfigure(max_batch_size=4, batch_timeout=0.5, max_concurrent_batches=3)
    stats = processor.get_stats()
    assert stats["config_max_batch_size"] == 4 and stats["config_batch_timeout_ms"] == pytest.approx(500.0)
    assert (stats["config_max_concurrent_batches"], stats["live_workers"]) == (3, 3)
    processor.stop()
    assert processor.get_stats()["live_workers"] == 0


def test_a_filling_batch_keeps_the_items_enqueued_before_the_change(make_processor, gate):
    processor = make_processor(gate, max_batch_size=16, initial_batch_size=16, batch_timeout=30.0,
                               processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.full(2, float(i))) for i in range(4)]
    processor.reconfigure(batch_timeout=0.01)  # the batch goes now, all four in it
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(5), np.full(2, 2.0 * i))
    assert [len(b) for b in gate.batches] == [4]


def test_a_reconfigure_that_changes_nothing_leaves_the_batch_alone(make_processor, gate):
    processor = make_processor(gate, max_batch_size=4, initial_batch_size=4, batch_timeout=30.0,
                               processing_strategy="fixed")
    first = processor.enqueue_predict(np.zeros(2))
    processor.reconfigure(max_batch_size=4, batch_timeout=30.0)
    rest = [processor.enqueue_predict(np.full(2, float(i))) for i in range(1, 4)]
    assert all(f.result(5) is not None for f in [first, *rest])  # full at four: it goes
    assert [len(b) for b in gate.batches] == [4]
