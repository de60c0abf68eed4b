"""Lanes at the processor: items of different shapes, dtypes and keys share a processor,
never a batch; ``max_lanes`` bounds the lanes holding items; a ``key`` reaches the function."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchPriority


def recorder():
    """A batch function that records (shape, dtype, key) of every batch and echoes it."""
    seen = []

    def func(batch, key=None):
        seen.append((batch.shape, batch.dtype, key))
        return batch

    return func, seen


def test_mixed_shapes_and_dtypes_each_batched_with_their_like(make_processor):
    func, seen = recorder()
    processor = make_processor(func, max_batch_size=16)
    processor.pause()
    items = [np.full(3, i, np.float64) for i in range(4)] + [np.full(5, i, np.float32) for i in range(3)] \
        + [np.full((2, 3), 9.0)] + [np.full(3, i, np.int64) for i in range(2)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for x, f in zip(items, futures):
        got = f.result(5)
        assert got.dtype == x.dtype and np.array_equal(got, x)
    # Lane order follows the oldest item of each lane.
    assert seen == [((6, 3), np.float64, None), ((3, 5), np.float32, None), ((2, 3), np.int64, None)]


def test_keys_split_batches_and_reach_the_function(make_processor):
    func, seen = recorder()
    processor = make_processor(func, max_batch_size=16)
    processor.pause()
    futures = [processor.enqueue_predict(np.full(2, i, np.float64), key=("model", i % 3)) for i in range(9)]
    plain = processor.enqueue_predict(np.zeros(2))
    processor.resume()
    for i, f in enumerate(futures):
        assert np.array_equal(f.result(5), np.full(2, i, np.float64))
    assert np.array_equal(plain.result(5), np.zeros(2))
    assert sorted(seen, key=repr) == sorted([((3, 2), np.float64, ("model", k)) for k in range(3)]
                                            + [((1, 2), np.float64, None)], key=repr)


def test_a_function_without_a_key_parameter_still_gets_batches_split_by_key(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(len(b)) or b, max_batch_size=16)
    processor.pause()
    futures = [processor.enqueue_predict(np.ones(2), key=f"tenant-{i % 2}") for i in range(6)]
    processor.resume()
    for f in futures:
        f.result(5)
    assert sorted(seen) == [3, 3]


def test_generic_items_with_keys_are_called_apart(make_processor):
    calls = []

    def func(items, key):
        calls.append((list(items), key))
        return [f"{key}:{x}" for x in items]

    processor = make_processor(func, max_batch_size=16, batch_generic_items=True)
    processor.pause()
    futures = [processor.enqueue_predict(f"s{i}", key=i % 2) for i in range(4)]
    processor.resume()
    assert [f.result(5) for f in futures] == ["0:s0", "1:s1", "0:s2", "1:s3"]
    assert sorted(calls) == [(["s0", "s2"], 0), (["s1", "s3"], 1)]


def test_an_unhashable_key_is_refused_and_queues_nothing(make_processor):
    processor = make_processor(lambda b: b)
    with pytest.raises(TypeError, match=r"key must be hashable .* list \['a'\]"):
        processor.enqueue_predict(np.ones(2), key=["a"])
    with pytest.raises(TypeError, match="key must be hashable"):
        processor.enqueue(np.ones(2), key={})
    assert processor.get_stats()["total_submitted"] == 0


def test_priority_order_holds_across_lanes(make_processor):
    func, seen = recorder()
    processor = make_processor(func, max_batch_size=16, enable_priority_queue=True)
    processor.pause()
    low = processor.enqueue_predict(np.ones(2), priority=BatchPriority.LOW)
    high = processor.enqueue_predict(np.ones(3), priority=BatchPriority.HIGH)
    normal = processor.enqueue_predict(np.ones(4, np.float32))
    processor.resume()
    for f in (low, high, normal):
        f.result(5)
    assert [s[0] for s in seen] == [(1, 3), (1, 4), (1, 2)]


def test_max_lanes_refuses_a_new_shape_while_every_lane_holds_items(make_processor):
    processor = make_processor(lambda b: b, max_lanes=2, max_batch_size=8)
    processor.pause()
    a = processor.enqueue_predict(np.ones(2))
    b = processor.enqueue_predict(np.ones(3))
    with pytest.raises(fastbatch.TooManyLanesError, match=r"dtype float64 and sample shape \(4,\): all max_lanes=2 lanes"):
        processor.enqueue(np.ones(4))
    refused = processor.enqueue_predict(np.ones(4))  # the classic full-queue behaviour: a failed future
    assert isinstance(refused.exception(5), fastbatch.TooManyLanesError)
    assert processor.get_stats()["total_refused"] == 2
    processor.resume()
    a.result(5), b.result(5)
    # Both lanes are empty again: a new shape opens one (a lane is reused, not leaked).
    for width in range(4, 12):
        assert processor.enqueue_predict(np.ones(width)).result(5).shape == (width,)


def test_raise_on_queue_full_raises_too_many_lanes(make_processor):
    processor = make_processor(lambda b: b, max_lanes=1, raise_on_queue_full=True)
    processor.pause()
    first = processor.enqueue_predict(np.ones(2))
    with pytest.raises(fastbatch.TooManyLanesError):
        processor.enqueue_predict(np.ones(3))
    with pytest.raises(fastbatch.QueueFullError):  # a subclass: code catching queue.Full works
        processor.enqueue_predict(np.ones(3, np.int32))
    processor.resume()
    first.result(5)
    # The one lane is free again (a single lane is never kept for the rows' fast path).
    assert processor.enqueue_predict(np.ones(3)).result(5).shape == (3,)


@pytest.mark.parametrize("queue_size", [0, 3])
def test_many_threads_many_shapes_every_result_its_own(make_processor, queue_size):
    # More shapes than lanes, from several threads at once: lanes are recycled under
    # load, and no item ever lands in a batch of another shape.
    bad = []

    def func(batch):
        if np.any(batch[:, 1] != batch.shape[1]):  # each row holds its own width
            bad.append(batch.shape)
        return batch * 2

    # A small queue makes puts wait for room while their lane is given to another shape.
    processor = make_processor(func, max_lanes=4, max_batch_size=8, batch_timeout=0.001,
                               max_queue_size=queue_size)
    errors = []

    def producer(seed):
        rng = np.random.default_rng(seed)
        for i in range(150):
            width = int(rng.integers(2, 9))
            row = np.full(width, float(width))
            row[0] = seed * 1000 + i
            try:
                future = processor.enqueue_predict(row, timeout=5)
                got = future.result(10)
            except fastbatch.TooManyLanesError:
                continue  # every lane busy at that moment: refused at once, nothing lost
            if not np.array_equal(got, row * 2):
                errors.append((row, got))

    threads = [threading.Thread(target=producer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors and not bad
    s = processor.get_stats()
    assert s["total_submitted"] == s["total_processed"]


def test_enqueue_async_is_refused_a_lane_at_once_as_enqueue_is(make_processor):
    import asyncio

    processor = make_processor(lambda b: b, max_lanes=2)
    processor.pause()
    a = processor.enqueue_predict(np.ones(2))
    b = processor.enqueue_predict(np.ones(3))

    async def submit():
        # No wait for room: room in the queue would not open a lane.
        return await asyncio.wait_for(processor.enqueue_async(np.ones(4), timeout=30), 5)

    with pytest.raises(fastbatch.TooManyLanesError, match="all max_lanes=2 lanes"):
        asyncio.run(submit())
    assert processor.get_stats()["total_refused"] == 1
    processor.resume()
    a.result(5), b.result(5)
