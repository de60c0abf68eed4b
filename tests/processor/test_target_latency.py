"""target_latency_ms: new work past what can be served in time is refused at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import fastbatch


def _loaded(make_processor, gate, **config):
    """A processor whose batches have been measured at ~`batch time`, then held busy."""
    processor = make_processor(gate, max_batch_size=4, initial_batch_size=4, processing_strategy="fixed",
                               batch_timeout=0.0, **config)
    processor.scheduler.ema_processing_s = 0.1  # scripted: every batch of 4 takes 100 ms
    gate.hold()
    processor.enqueue_predict(np.zeros(2))
    assert gate.entered.wait(5)
    return processor


def test_items_past_the_target_are_shed_at_once(make_processor, gate):
    processor = _loaded(make_processor, gate, target_latency_ms=400.0)
    # A new item waits for ceil((queued + 1) / 4) batches of 100 ms and half the running one.
    accepted = [processor.enqueue_predict(np.full(2, float(i))) for i in range(12)]  # up to 350 ms
    with pytest.raises(fastbatch.OverloadedError, match="target_latency_ms=400.0") as info:
        processor.enqueue(np.ones(2))  # 13th: 4 batches + half = 450 ms
    assert isinstance(info.value, fastbatch.QueueFullError)  # a queue.Full, as a 503 handler expects
    shed = processor.enqueue_predict(np.ones(2))  # the classic contract: a failed future
    assert isinstance(shed.exception(0), fastbatch.OverloadedError)
    gate.release.set()
    for i, f in enumerate(accepted):
        np.testing.assert_array_equal(f.result(5), np.full(2, 2.0 * i))
    stats = processor.get_stats()
    assert stats["total_shed"] == 2 and stats["total_refused"] == 2


def test_enqueue_async_is_shed_without_waiting(make_processor, gate):
    processor = _loaded(make_processor, gate, target_latency_ms=200.0)
    for _ in range(4):
        processor.enqueue(np.ones(2))  # the next waits 2 batches + half the running one: 250 ms

    async def submit():
        return await processor.enqueue_async(np.ones(2), timeout=30)

    with pytest.raises(fastbatch.OverloadedError):
        asyncio.run(asyncio.wait_for(submit(), 5))
    gate.release.set()


def test_without_a_target_nothing_is_shed(make_processor, gate):
    processor = _loaded(make_processor, gate)
    futures = [processor.enqueue_predict(np.ones(2)) for _ in range(50)]
    gate.release.set()
    assert all(f.result(5) is not None for f in futures)
    assert processor.get_stats()["total_shed"] == 0


def test_target_latency_must_be_positive():
    with pytest.raises(ValueError, match="target_latency_ms"):
        fastbatch.BatchProcessorConfig(target_latency_ms=0)


def test_the_target_shortens_the_wait_for_more_items(make_processor):
    processor = make_processor(lambda b: b + 1, max_batch_size=64, batch_timeout=30.0,
                               processing_strategy="fixed", target_latency_ms=50.0)
    assert processor.scheduler.max_wait_s() == pytest.approx(0.05)  # before any batch: the target
    # Without the target a lone item would wait the whole 30 s timeout for company.
    np.testing.assert_array_equal(processor.enqueue_predict(np.zeros(2)).result(timeout=10), np.ones(2))
    processor.scheduler.ema_processing_s = 0.01  # scripted: batches take 10 ms
    assert processor.scheduler.max_wait_s() == pytest.approx(0.04)
    np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(timeout=10), np.full(2, 2.0))


def test_only_items_ahead_in_priority_order_count_for_shedding(make_processor, gate):
    processor = _loaded(make_processor, gate, target_latency_ms=300.0)
    low = fastbatch.BatchPriority.BACKGROUND
    # 100 ms per batch of 4, half the running one: 8 BACKGROUND items fit in 250 ms.
    background = [processor.enqueue_predict(np.full(2, 100.0 + i), priority=low) for i in range(8)]
    with pytest.raises(fastbatch.OverloadedError, match=r"\(8 samples queued ahead of it\)"):
        processor.enqueue(np.ones(2), priority=low)
    # Nothing is ahead of a CRITICAL item: it runs in the very next batch, so it is taken.
    critical = processor.enqueue_predict(np.full(2, 1.0), priority=fastbatch.BatchPriority.CRITICAL)
    normal = processor.enqueue_predict(np.full(2, 2.0))  # behind the CRITICAL one only
    gate.release.set()
    np.testing.assert_array_equal(critical.result(5), np.full(2, 2.0))
    np.testing.assert_array_equal(normal.result(5), np.full(2, 4.0))
    assert all(f.result(5) is not None for f in background)
    assert [float(row[0]) for row in gate.batches[1][:2]] == [1.0, 2.0]  # the next batch, first
    assert processor.get_stats()["total_shed"] == 1
