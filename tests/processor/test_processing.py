"""Items in, results out: rows, mini-batches, futures, priorities, pause, restart."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchPriority

from fb_fixtures import stress_rounds


def test_seed_example_every_row_doubled(make_processor):
    processor = make_processor(lambda batch: batch * 2, max_batch_size=200, initial_batch_size=100)
    rng = np.random.default_rng(0)
    items = [rng.random(10) for _ in range(1000)]
    futures = [processor.enqueue_predict(item) for item in items]
    for future, item in zip(futures, items):
        result = future.result(timeout=10)
        assert result.shape == (10,)
        np.testing.assert_array_equal(result, item * 2)


def test_batch_function_sees_one_contiguous_array(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=4, initial_batch_size=4, batch_timeout=5.0)
    items = [np.full(3, i, dtype=np.float32) for i in range(4)]
    futures = [processor.enqueue_predict(x) for x in items]
    assert gate.entered.wait(5)
    gate.release.set()
    concurrent.futures.wait(futures, timeout=5)
    (batch,) = gate.batches
    assert batch.shape == (4, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.stack(items))


def test_mini_batches_get_their_own_rows(make_processor):
    processor = make_processor(lambda b: b.sum(axis=1), max_batch_size=64)
    rng = np.random.default_rng(1)
    items = [rng.random((int(n), 5)) for n in rng.integers(1, 9, size=40)]
    items += [rng.random(5) for _ in range(10)]  # rows mixed in: same sample shape
    futures = [processor.enqueue_predict(x) for x in items]
    for future, item in zip(futures, items):
        got = future.result(timeout=10)
        if item.ndim == 1:
            assert np.ndim(got) == 0
            assert got == pytest.approx(item.sum())
        else:
            assert got.shape == (len(item),)
            np.testing.assert_allclose(got, item.sum(axis=1))


def test_results_are_views_that_never_change(make_processor):
    """A function returning its input: results must survive the next batches."""
    processor = make_processor(lambda b: b, max_batch_size=8, initial_batch_size=8)
    first = [processor.enqueue_predict(np.full(4, i, dtype=np.int64)) for i in range(8)]
    kept = [f.result(timeout=5) for f in first]
    later = [processor.enqueue_predict(np.full(4, -1, dtype=np.int64)) for _ in range(64)]
    concurrent.futures.wait(later, timeout=5)
    for i, row in enumerate(kept):
        np.testing.assert_array_equal(row, np.full(4, i))


def test_enqueue_without_future_is_processed(make_processor):
    seen = []
    done = threading.Event()

    def func(batch):
        seen.extend(batch[:, 0].tolist())
        if len(seen) == 50:
            done.set()
        return batch

    processor = make_processor(func, max_batch_size=16)
    for i in range(50):
        assert processor.enqueue(np.array([float(i), 0.0])) is None
    assert done.wait(10)
    assert sorted(seen) == list(range(50))


def test_futures_work_with_wait_as_completed_and_asyncio(make_processor):
    processor = make_processor(lambda b: b + 1, max_batch_size=8)
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(20)]
    done, pending = concurrent.futures.wait(futures, timeout=10)
    assert not pending
    assert sorted(float(f.result()[0]) for f in concurrent.futures.as_completed(futures, timeout=5)) == \
        [float(i + 1) for i in range(20)]
    assert isinstance(futures[0], concurrent.futures.Future)

    async def main():
        return await asyncio.wrap_future(processor.enqueue_predict(np.array([41.0])))

    assert asyncio.run(main())[0] == 42.0


def test_priorities_strict_then_fifo(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, initial_batch_size=1, batch_timeout=0.0)
    blocker = processor.enqueue_predict(np.array([-1.0]))
    assert gate.entered.wait(5)  # the worker is busy: everything below queues up
    order = [(BatchPriority.LOW, 0), (BatchPriority.CRITICAL, 1), (BatchPriority.NORMAL, 2),
             (BatchPriority.CRITICAL, 3), (BatchPriority.BACKGROUND, 4), (BatchPriority.HIGH, 5),
             (BatchPriority.LOW, 6), (int(BatchPriority.NORMAL), 7)]
    futures = [processor.enqueue_predict(np.array([float(i)]), priority=p) for p, i in order]
    gate.release.set()
    concurrent.futures.wait([blocker, *futures], timeout=10)
    processed = [int(b[0, 0]) for b in gate.batches[1:]]
    assert processed == [1, 3, 5, 2, 7, 0, 6, 4]


def test_fifo_when_priority_queue_disabled(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, initial_batch_size=1, batch_timeout=0.0,
                               enable_priority_queue=False)
    processor.enqueue_predict(np.array([-1.0]))
    assert gate.entered.wait(5)
    prios = [BatchPriority.LOW, BatchPriority.CRITICAL, BatchPriority.HIGH, BatchPriority.NORMAL]
    futures = [processor.enqueue_predict(np.array([float(i)]), priority=p) for i, p in enumerate(prios)]
    gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    assert [int(b[0, 0]) for b in gate.batches[1:]] == [0, 1, 2, 3]


def test_pause_holds_dispatch_and_resume_releases(make_processor, gate):
    processor = make_processor(gate, max_batch_size=4, batch_timeout=0.0)
    processor.pause()
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(10)]
    assert processor.get_stats()["is_paused"] is True
    # Nothing may run while paused; give the worker every chance to misbehave.
    assert not gate.entered.wait(0.2)
    assert processor.get_stats()["queue_size"] == 10
    processor.resume()
    done, pending = concurrent.futures.wait(futures, timeout=10)
    assert not pending and processor.get_stats()["is_paused"] is False


def test_update_batch_size_takes_effect(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=50, initial_batch_size=10, batch_timeout=0.0,
                               processing_strategy="fixed")
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)  # the worker is held: the next items queue up
    processor.update_batch_size(3)
    assert processor.get_stats()["current_batch_size"] == 3
    futures = [processor.enqueue_predict(np.zeros(1)) for _ in range(9)]
    gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    assert [len(b) for b in gate.batches] == [1, 3, 3, 3]
    with pytest.raises(TypeError):
        processor.update_batch_size(2.5)
    with pytest.raises(TypeError):
        processor.update_batch_size(True)


def test_update_batch_size_clamps_as_the_classic_api_did(make_processor, caplog):
    processor = make_processor(lambda b: b, min_batch_size=5, max_batch_size=50, initial_batch_size=10)
    with caplog.at_level("DEBUG", logger="fastbatch"):
        assert processor.update_batch_size(10_000) == 50
        assert processor.get_stats()["current_batch_size"] == 50
        assert processor.update_batch_size(0) == 5
        assert processor.update_batch_size(np.int64(7)) == 7
    assert processor.get_stats()["current_batch_size"] == 7
    clamped = [r.getMessage() for r in caplog.records if "clamped" in r.getMessage()]
    assert len(clamped) == 2 and "update_batch_size(10000) clamped to 50" in clamped[0], clamped


def test_batch_released_by_size_before_timeout(make_processor, gate):
    processor = make_processor(gate, max_batch_size=5, initial_batch_size=5, batch_timeout=30.0,
                               processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(5)]
    done, pending = concurrent.futures.wait(futures, timeout=10)  # far less than 30 s
    assert not pending
    assert [len(b) for b in gate.batches] == [5]


def test_deadline_counts_from_first_item(make_processor, gate):
    """A lone item waits batch_timeout from its own arrival, then goes alone."""
    processor = make_processor(gate, max_batch_size=100, batch_timeout=0.2, processing_strategy="fixed")
    t0 = fastbatch.core._backend.monotonic_ns()
    future = processor.enqueue_predict(np.array([1.0]))
    future.result(timeout=10)
    waited = (fastbatch.core._backend.monotonic_ns() - t0) / 1e9
    assert 0.19 <= waited < 5
    assert [len(b) for b in gate.batches] == [1]


@pytest.mark.parametrize("split, sizes", [(False, [1, 5, 20]), (True, [1, 5, 8, 8, 4])])
def test_a_mini_batch_never_straddles_a_batch_boundary(make_processor, gate, split, sizes):
    gate.hold()
    processor = make_processor(gate, max_batch_size=8, initial_batch_size=8, batch_timeout=0.0,
                               processing_strategy="fixed", split_oversized=split)
    processor.enqueue_predict(np.zeros((1, 2)))
    assert gate.entered.wait(5)
    small = processor.enqueue_predict(np.ones((5, 2)))
    big = processor.enqueue_predict(np.full((20, 2), 2.0))  # bigger than a whole batch
    gate.release.set()
    np.testing.assert_array_equal(big.result(timeout=10), np.full((20, 2), 4.0))  # the gate doubles
    assert small.result(timeout=10).shape == (5, 2)
    assert [len(b) for b in gate.batches] == sizes


def test_byte_budget_limits_batches(make_processor, gate):
    gate.hold()
    row = np.zeros(1024, dtype=np.float64)  # 8 KiB
    processor = make_processor(gate, max_batch_size=100, initial_batch_size=100, batch_timeout=0.0,
                               max_batch_memory_mb=32 / 1024, processing_strategy="fixed")  # 32 KiB
    processor.enqueue_predict(row)
    assert gate.entered.wait(5)
    futures = [processor.enqueue_predict(row) for _ in range(10)]
    gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    assert [len(b) for b in gate.batches[1:]] == [4, 4, 2]


def test_min_batch_interval_spaces_batches(make_processor):
    starts = []
    processor = make_processor(lambda b: starts.append(fastbatch.core._backend.monotonic_ns()) or b,
                               max_batch_size=1, initial_batch_size=1, batch_timeout=0.0,
                               min_batch_interval=0.05, processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([1.0])) for _ in range(4)]
    concurrent.futures.wait(futures, timeout=10)
    gaps = np.diff(starts) / 1e9
    assert len(gaps) == 3 and gaps.min() >= 0.045


def test_cancelled_futures_are_skipped(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=10, batch_timeout=0.0)
    processor.enqueue_predict(np.array([-1.0]))
    assert gate.entered.wait(5)
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(6)]
    for f in futures[::2]:
        assert f.cancel()
    gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    assert [f.result()[0] for f in futures[1::2]] == [2.0, 6.0, 10.0]
    assert all(f.cancelled() for f in futures[::2])
    assert sorted(gate.batches[1][:, 0].tolist()) == [1.0, 3.0, 5.0]
    assert processor.get_stats()["total_cancelled"] == 3


def test_context_manager_stops_and_restart_works(make_processor):
    processor = make_processor()
    with processor:
        processor.start(lambda b: b * 3)
        assert processor.enqueue_predict(np.array([1.0])).result(timeout=5)[0] == 3.0
    assert not processor.is_running
    with pytest.raises(fastbatch.ProcessorStoppedError):
        processor.enqueue(np.array([1.0]))
    processor.start(lambda b: b * 5)  # restart, with another function and schema
    assert processor.enqueue_predict(np.array([1, 2], dtype=np.int32)).result(timeout=5).tolist() == [5, 10]
    processor.stop()


def test_start_twice_and_bad_function_refused(make_processor):
    processor = make_processor(lambda b: b)
    with pytest.raises(RuntimeError, match="already running"):
        processor.start(lambda b: b)
    fresh = make_processor()
    with pytest.raises(TypeError, match="callable"):
        fresh.start(42)


def test_many_producers_every_result_routed(make_processor):
    processor = make_processor(lambda b: b * 10, max_batch_size=64, max_queue_size=0)
    results: dict[int, float] = {}
    lock = threading.Lock()

    def produce(offset: int) -> None:
        futures = [(i, processor.enqueue_predict(np.array([float(i)]))) for i in range(offset, 2000, 8)]
        for i, f in futures:
            value = float(f.result(timeout=20)[0])
            with lock:
                results[i] = value

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: i * 10.0 for i in range(2000)}


def test_generic_items_one_call_each(make_processor):
    calls = []
    processor = make_processor(lambda item: calls.append(item) or item.upper(), max_workers=2)
    futures = [processor.enqueue_predict(word) for word in ["a", "b", "c"]]
    assert [f.result(timeout=5) for f in futures] == ["A", "B", "C"]
    assert sorted(calls) == ["a", "b", "c"]


def test_items_processed_one_call_each_are_reported_as_batches_of_one(make_processor, caplog):
    class ArrayLike:  # offers __array__ but is no ndarray: not batched
        def __init__(self, v):
            self.v = v

        def __array__(self, dtype=None, copy=None):
            return np.full(2, self.v, dtype=dtype)

    with caplog.at_level("WARNING", logger="fastbatch"):
        processor = make_processor(lambda item: item.v * 2, max_batch_size=32, batch_timeout=0.05)
        futures = [processor.enqueue_predict(ArrayLike(i)) for i in range(12)]
        assert [f.result(5) for f in futures] == [i * 2 for i in range(12)]
    stats = processor.get_stats()
    assert stats["batch_count"] == 12 and stats["avg_batch_size"] == 1.0 and stats["max_batch_size"] == 1
    warnings = [r.getMessage() for r in caplog.records if "not batched" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not per item
    assert "ArrayLike are not numpy arrays" in warnings[0] and "np.asarray(item)" in warnings[0]


def test_generic_items_as_a_list(make_processor):
    batches = []
    processor = make_processor(lambda items: batches.append(list(items)) or [len(s) for s in items],
                               batch_generic_items=True, max_batch_size=10)
    futures = [processor.enqueue_predict("x" * n) for n in range(1, 6)]
    assert [f.result(timeout=5) for f in futures] == [1, 2, 3, 4, 5]
    assert all(isinstance(b, list) for b in batches)


def test_generic_item_timeout(make_processor):
    release = threading.Event()

    def slow(item):
        if item == "slow":
            release.wait(10)
        return item

    processor = make_processor(slow, item_timeout=0.1, max_retries=0)
    slow_f = processor.enqueue_predict("slow")
    with pytest.raises(fastbatch.ItemTimeoutError, match="item_timeout=0.1"):
        slow_f.result(timeout=5)
    release.set()
    assert processor.enqueue_predict("fast").result(timeout=5) == "fast"


@stress_rounds(fast=10, extended=100)
def test_wait_returns_only_when_every_future_is_done(make_processor, rounds):
    """Regression: a future finishing while wait() scanned its set made wait() return early."""
    processor = make_processor(lambda b: b * 2, max_batch_size=200, initial_batch_size=200,
                               max_queue_size=0, processing_strategy="fixed")
    rows = list(np.random.default_rng(3).random((2000, 4)))
    for _ in range(rounds):
        futures = [processor.enqueue_predict(r) for r in rows]
        done, not_done = concurrent.futures.wait(futures, timeout=30)
        assert not not_done and all(f.done() for f in futures)
        assert len(list(concurrent.futures.as_completed(futures, timeout=30))) == len(futures)
