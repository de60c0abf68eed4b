"""RequestQueue: ordering, capacity, timeouts, close/pause, batch formation, threads.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/_core.pyi``.
"""

from __future__ import annotations

import gc
import math
import queue
import threading
import time
import weakref
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fastbatch._errors import FastBatchError, QueueClosedError, QueueFullError

SECOND = 1_000_000_000  # ns


class Payload:
    """An item that can be tracked with a weak reference."""

    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


def take_all(q, max_samples: int = 1_000_000) -> list:
    """Items of every batch that can be taken without waiting, in order."""
    out = []
    while True:
        batch = q.take_batch(max_samples, timeout=0)
        if batch is None:
            return out
        out.extend(batch[0])


# ---------------------------------------------------------------- construction


def test_defaults(core):
    q = core.RequestQueue()
    assert (q.capacity, q.closed) == (0, False)
    assert (len(q), q.queued_samples, q.total_puts) == (0, 0, 0)
    q.put("low", priority=5)
    q.put("high", priority=0)
    assert take_all(q) == ["low", "high"], "FIFO (priority ignored) and not paused by default"
    q = core.RequestQueue(5, prioritized=True)
    assert q.capacity == 5
    q.put("low", priority=5)
    q.put("high", priority=0)
    assert take_all(q) == ["high", "low"]


@pytest.mark.parametrize(
    ("capacity", "error"), [(-1, ValueError), (1.5, TypeError), ("3", TypeError)]
)
def test_invalid_capacity(core, capacity, error):
    with pytest.raises(error):
        core.RequestQueue(capacity)


# ---------------------------------------------------------------- ordering


def _random_puts(seed: int, n: int = 300) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(i, int(p)) for i, p in enumerate(rng.integers(-2, 4, n))]


def _take_in_random_batches(q, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    while len(q):
        items, futures, stamps = q.take_batch(int(rng.integers(1, 9)), timeout=0)
        assert [("f", i) for i in items] == futures
        assert len(stamps) == len(items)
        out.extend(items)
    return out


def test_fifo_queue_ignores_priority(core):
    q = core.RequestQueue()
    puts = _random_puts(1)
    for i, prio in puts:
        q.put(i, ("f", i), priority=prio)
    assert _take_in_random_batches(q, 2) == [i for i, _ in puts]


def test_priority_queue_is_strict_by_priority_and_fifo_within_a_level(core):
    q = core.RequestQueue(prioritized=True)
    puts = _random_puts(3)
    for i, prio in puts:
        q.put(i, ("f", i), priority=prio)
    expected = [i for i, _ in sorted(puts, key=lambda ip: (ip[1], ip[0]))]
    assert _take_in_random_batches(q, 4) == expected


@pytest.mark.parametrize("capacity", [0, 100])
def test_priority_order_with_runs_of_one_priority_and_growth(core, capacity):
    # Long runs of one priority mixed with others, queues growing past their first
    # allocation, partial takes and drains: always (priority, FIFO) order.
    rng = np.random.default_rng(7)
    q = core.RequestQueue(capacity, prioritized=True)
    model, seq = [], 0
    for _ in range(60):
        prio = int(rng.choice([2, 2, 2, 0, 4, 1]))
        for _ in range(int(rng.integers(1, 90))):
            if capacity and len(model) >= capacity:
                break
            q.put(seq, priority=prio, timeout=0)
            model.append((prio, seq))
            seq += 1
        model.sort()
        if rng.random() < 0.1:
            assert q.drain()[0] == [s for _, s in model]
            model.clear()
        else:
            k = int(rng.integers(1, 60))
            batch = q.take_batch(k, timeout=0)
            expected, model = model[:k], model[k:]
            assert (batch[0] if batch else []) == [s for _, s in expected]
        assert len(q) == len(model)
    assert q.drain()[0] == [s for _, s in sorted(model)]


def test_priority_applies_to_requests_put_after_earlier_takes(core):
    q = core.RequestQueue(prioritized=True)
    for i in range(3):
        q.put(("low", i), priority=5)
    assert q.take_batch(1, timeout=0)[0] == [("low", 0)]
    q.put("urgent", priority=0)
    q.put("normal", priority=2)
    assert take_all(q) == ["urgent", "normal", ("low", 1), ("low", 2)]


@pytest.mark.parametrize("prioritized", [False, True])
def test_drain_returns_everything_in_queue_order(core, prioritized):
    q = core.RequestQueue(prioritized=prioritized)
    puts = _random_puts(5, 50)
    before = core.monotonic_ns()
    for i, prio in puts:
        q.put(i, ("f", i), samples=1 + i % 3, nbytes=i, priority=prio)
    items, futures, stamps = q.drain()
    if prioritized:
        assert items == [i for i, _ in sorted(puts, key=lambda ip: (ip[1], ip[0]))]
    else:
        assert items == [i for i, _ in puts]
        assert np.all(np.diff(stamps) >= 0)
    assert futures == [("f", i) for i in items]
    assert stamps.dtype == np.int64 and stamps.shape == (len(puts),)
    assert np.all(stamps >= before) and np.all(stamps <= core.monotonic_ns())
    assert (len(q), q.queued_samples) == (0, 0)
    items, futures, stamps = q.drain()
    assert (items, futures, stamps.dtype, stamps.shape) == ([], [], np.int64, (0,))


# ---------------------------------------------------------------- put, capacity, timeouts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"samples": 0},
        {"samples": -1},
        {"nbytes": -1},
        {"timeout": -0.001},
        {"timeout": -1},
        {"timeout": math.nan},
    ],
)
def test_put_rejects_invalid_arguments(core, kwargs):
    q = core.RequestQueue()
    with pytest.raises(ValueError):
        q.put("x", **kwargs)
    assert len(q) == 0


def test_put_rejects_non_integer_samples(core):
    q = core.RequestQueue()
    with pytest.raises(TypeError):
        q.put("x", samples=1.5)
    assert len(q) == 0


def test_counters_follow_puts_takes_and_drains(core):
    q = core.RequestQueue()
    q.put("a", samples=2, nbytes=10)
    q.put("b", samples=3, nbytes=20)
    q.put("c", samples=1, nbytes=5)
    assert (len(q), q.queued_samples, q.total_puts) == (3, 6, 3)
    assert q.take_batch(5, timeout=0)[0] == ["a", "b"]
    assert (len(q), q.queued_samples, q.total_puts) == (1, 1, 3)
    q.drain()
    assert (len(q), q.queued_samples, q.total_puts) == (0, 0, 3)


def test_full_queue_with_timeout_zero_raises_queue_full_at_once(core):
    q = core.RequestQueue(capacity=2)
    q.put("a", timeout=0)
    q.put("b", timeout=0)
    with pytest.raises(QueueFullError) as excinfo:
        q.put("c", timeout=0)
    assert isinstance(excinfo.value, queue.Full)
    assert isinstance(excinfo.value, FastBatchError)
    assert take_all(q) == ["a", "b"]


def test_full_queue_put_times_out_after_timeout(core):
    q = core.RequestQueue(capacity=1)
    q.put("a")
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put("b", timeout=0.1)
    elapsed = time.monotonic() - start
    assert 0.1 <= elapsed < 5.0
    assert len(q) == 1


def test_capacity_zero_is_unbounded(core):
    q = core.RequestQueue(capacity=0)
    for i in range(5000):
        q.put(i, timeout=0)
    assert len(q) == 5000


def test_blocked_put_proceeds_when_a_batch_is_taken(core, threads):
    q = threads.closing(core.RequestQueue(capacity=1))
    q.put("a")
    producer = threads.start(q.put, "b", timeout=None)
    producer.wait_blocked()
    assert producer.alive, "put() must wait while the queue is full"
    assert q.take_batch(5, timeout=0)[0] == ["a"]
    producer.outcome()
    assert q.take_batch(5, timeout=0)[0] == ["b"]


def test_drain_wakes_blocked_producer(core, threads):
    q = threads.closing(core.RequestQueue(capacity=1))
    q.put("a")
    producer = threads.start(q.put, "b")
    producer.wait_blocked()
    assert q.drain()[0] == ["a"]
    producer.outcome()
    assert q.drain()[0] == ["b"]


def test_put_on_closed_queue_raises(core):
    q = core.RequestQueue()
    q.put("a")
    q.close()
    with pytest.raises(QueueClosedError) as excinfo:
        q.put("b")
    assert isinstance(excinfo.value, RuntimeError)
    assert len(q) == 1


def test_close_wakes_blocked_producer(core, threads):
    q = threads.closing(core.RequestQueue(capacity=1))
    q.put("a")
    producer = threads.start(q.put, "b", timeout=None)
    producer.wait_blocked()
    assert producer.alive
    q.close()
    assert producer.join(5.0), "close() must wake a producer waiting for room"
    assert isinstance(producer.error, QueueClosedError)
    assert q.drain()[0] == ["a"]


def test_close_is_idempotent_and_keeps_queued_requests(core):
    q = core.RequestQueue()
    q.put("a")
    q.close()
    q.close()
    assert q.closed and len(q) == 1
    assert q.take_batch(1, timeout=0)[0] == ["a"]


# ---------------------------------------------------------------- put_row


class RowSubclass(np.ndarray):
    pass


def test_put_row_without_schema_queues_nothing(core):
    q = core.RequestQueue()
    assert q.put_row(np.zeros(3)) is False
    assert (len(q), q.total_puts) == (0, 0)


def test_put_row_queues_a_row_of_the_schema_as_put_would(core):
    q = core.RequestQueue(prioritized=True)
    q.set_row_schema(np.float32, (4,))
    q.put("critical", priority=0)
    q.put("background", priority=4)
    row = np.arange(4, dtype=np.float32)
    before = core.monotonic_ns()
    assert q.put_row(row, "f") is True
    assert q.put_row(row[::-1].copy()) is True  # any row of the schema: no future
    assert (len(q), q.queued_samples, q.total_puts) == (4, 4, 4)
    items, futures, stamps = q.drain()
    # Priority 2 (NORMAL): after CRITICAL, before BACKGROUND, FIFO among rows.
    assert items[0] == "critical" and items[3] == "background"
    assert items[1] is row and futures[1:3] == ["f", None]
    assert stamps[1] >= before


@pytest.mark.parametrize(
    "item",
    [
        np.zeros(4, dtype=np.float64),  # dtype
        np.zeros(4, dtype=">f4"),  # byte order: not equivalent
        np.zeros(5, dtype=np.float32),  # length
        np.zeros((1, 4), dtype=np.float32),  # a mini-batch of one row
        np.zeros((4, 1), dtype=np.float32),
        np.float32(1.0),  # a numpy scalar, not an array
        np.zeros(4, dtype=np.float32).view(RowSubclass),  # a subclass
        [0.0, 0.0, 0.0, 0.0],
        None,
        "abcd",
    ],
    ids=repr,
)
def test_put_row_refuses_what_is_not_a_row_and_queues_nothing(core, item):
    q = core.RequestQueue()
    q.set_row_schema(np.dtype(np.float32), (4,))
    assert q.put_row(item, "f", timeout=-1) is False  # timeout not even looked at
    assert (len(q), q.total_puts) == (0, 0)


def test_put_row_accepts_an_equivalent_dtype_and_non_contiguous_rows(core):
    q = core.RequestQueue()
    q.set_row_schema(np.dtype("<f8"), (3,))
    rows = [np.zeros(3, dtype=np.dtype("float64")), np.arange(6.0)[::2], np.ones(3)]
    for row in rows:
        assert q.put_row(row) is True
    # Each row counts its 24 bytes (item.nbytes, strided or not) in the byte budget:
    # 47 bytes hold one row and not two, 48 bytes hold two.
    assert q.take_batch(10, max_bytes=47, timeout=0)[0] == [rows[0]]
    taken = q.take_batch(10, max_bytes=48, timeout=0)[0]
    assert len(taken) == 2 and taken[0] is rows[1] and taken[1] is rows[2]


def test_row_schema_can_be_replaced(core):
    q = core.RequestQueue()
    q.set_row_schema(np.float64, (2,))
    q.set_row_schema(np.int32, (0,))
    assert q.put_row(np.zeros(2)) is False
    assert q.put_row(np.zeros(0, dtype=np.int32)) is True
    assert q.put_row(np.zeros(0, dtype=np.int32)) is True
    # Rows of zero bytes: any byte budget holds both.
    assert len(q.take_batch(10, max_bytes=1, timeout=0)[0]) == 2


@pytest.mark.parametrize(
    ("dtype", "shape", "error"),
    [
        (np.float64, (2, 3), ValueError),
        (np.float64, (), ValueError),
        (np.float64, [3], ValueError),
        (np.float64, (-1,), ValueError),
        (np.float64, (2.0,), TypeError),
        ("not a dtype", (3,), TypeError),
    ],
)
def test_set_row_schema_rejects_invalid_arguments(core, dtype, shape, error):
    q = core.RequestQueue()
    with pytest.raises(error):
        q.set_row_schema(dtype, shape)
    assert q.put_row(np.zeros(3)) is False


def test_put_row_errors_are_those_of_put(core):
    q = core.RequestQueue(capacity=1)
    q.set_row_schema(np.float64, (2,))
    row = np.zeros(2)
    with pytest.raises(ValueError):
        q.put_row(row, timeout=-1)
    with pytest.raises(ValueError):
        q.put_row(row, timeout=math.nan)
    assert q.put_row(row, timeout=0) is True
    with pytest.raises(QueueFullError):
        q.put_row(row, timeout=0)
    with pytest.raises(QueueFullError):
        q.put_row(row, timeout=0.05)
    q.close()
    with pytest.raises(QueueClosedError):
        q.put_row(row)
    assert len(q) == 1


def test_put_row_waits_for_room_and_wakes_on_close(core, threads):
    q = threads.closing(core.RequestQueue(capacity=1))
    q.set_row_schema(np.float64, (2,))
    rows = [np.zeros(2), np.ones(2), np.full(2, 2.0)]
    q.put_row(rows[0])
    producer = threads.start(q.put_row, rows[1], "f1", timeout=None)
    producer.wait_blocked()
    assert producer.alive, "put_row() must wait while the queue is full"
    assert q.take_batch(1, timeout=0)[0][0] is rows[0]
    assert producer.outcome() is True
    blocked = threads.start(q.put_row, rows[2], timeout=None)
    blocked.wait_blocked()
    q.close()
    assert blocked.join(5.0), "close() must wake a producer waiting in put_row()"
    assert isinstance(blocked.error, QueueClosedError)
    assert q.drain()[1] == ["f1"]


def test_rejected_put_row_keeps_no_reference(core):
    q = core.RequestQueue(capacity=1)
    q.set_row_schema(np.float64, (2,))
    q.put("a")
    row, future = np.zeros(2), Payload(2)
    refs = [weakref.ref(row), weakref.ref(future)]
    with pytest.raises(QueueFullError):
        q.put_row(row, future, timeout=0)
    q.close()
    with pytest.raises(QueueClosedError):
        q.put_row(row, future)
    del row, future
    gc.collect()
    assert [r() for r in refs] == [None, None]


# ---------------------------------------------------------------- take_batch: waiting


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_samples": 0},
        {"max_samples": -3},
        {"max_samples": 1, "max_bytes": -1},
        {"max_samples": 1, "linger": -0.5},
        {"max_samples": 1, "linger": math.nan},
        {"max_samples": 1, "timeout": -1},
        {"max_samples": 1, "timeout": math.nan},
    ],
)
def test_take_batch_rejects_invalid_arguments(core, kwargs):
    q = core.RequestQueue()
    q.put("a")
    with pytest.raises(ValueError):
        q.take_batch(**kwargs)
    assert len(q) == 1, "a rejected call must not take anything"


def test_take_batch_result_types(core):
    q = core.RequestQueue()
    q.put("a", "fa")
    q.put("b")
    items, futures, stamps = q.take_batch(2, timeout=0)
    assert type(items) is list and type(futures) is list
    assert (items, futures) == (["a", "b"], ["fa", None])
    assert isinstance(stamps, np.ndarray)
    assert stamps.dtype == np.int64 and stamps.shape == (2,)


def test_take_batch_timeout_zero_on_empty_queue_returns_none(core):
    q = core.RequestQueue()
    start = time.monotonic()
    assert q.take_batch(4, timeout=0) is None
    assert q.take_batch(4, timeout=0.0) is None
    assert time.monotonic() - start < 1.0


def test_take_batch_returns_none_after_timeout(core):
    q = core.RequestQueue()
    start = time.monotonic()
    assert q.take_batch(4, timeout=0.1) is None
    assert 0.1 <= time.monotonic() - start < 5.0


def test_take_batch_timeout_none_waits_for_a_put(core, threads):
    q = threads.closing(core.RequestQueue())
    consumer = threads.start(q.take_batch, 4, timeout=None)
    consumer.wait_blocked()
    assert consumer.alive
    q.put("x")
    assert consumer.outcome()[0] == ["x"]


def test_close_wakes_blocked_consumer(core, threads):
    q = threads.closing(core.RequestQueue())
    consumer = threads.start(q.take_batch, 4, timeout=None)
    consumer.wait_blocked()
    assert consumer.alive
    q.close()
    assert consumer.join(5.0), "close() must wake a consumer waiting for a request"
    assert isinstance(consumer.error, QueueClosedError)


@pytest.mark.parametrize("timeout", [0, 0.05, None])
def test_closed_empty_queue_raises(core, timeout):
    q = core.RequestQueue()
    q.put("a")
    q.close()
    assert q.take_batch(5, timeout=timeout)[0] == ["a"]
    with pytest.raises(QueueClosedError):
        q.take_batch(5, timeout=timeout)


def test_closed_queue_is_drained_even_when_paused(core):
    q = core.RequestQueue()
    q.pause()
    q.put("a")
    q.put("b")
    q.close()
    assert q.take_batch(1, timeout=0)[0] == ["a"]
    assert q.take_batch(1, timeout=None)[0] == ["b"]
    with pytest.raises(QueueClosedError):
        q.take_batch(1, timeout=0)


def test_pause_holds_take_batch_until_resume(core, threads):
    q = threads.closing(core.RequestQueue())
    q.pause()
    q.put("a")
    assert q.take_batch(1, timeout=0) is None
    assert q.take_batch(1, timeout=0.05) is None
    consumer = threads.start(q.take_batch, 1, timeout=None)
    consumer.wait_blocked()
    q.put("b")
    assert not consumer.join(0.1), "take_batch must not return while the queue is paused"
    q.resume()
    assert consumer.outcome()[0] == ["a"]
    assert take_all(q) == ["b"]


def test_close_releases_a_consumer_held_by_pause(core, threads):
    q = threads.closing(core.RequestQueue())
    q.pause()
    consumer = threads.start(q.take_batch, 1, timeout=None)
    consumer.wait_blocked()
    q.put("a")
    q.close()
    assert consumer.outcome()[0] == ["a"]


def test_drain_ignores_pause(core):
    q = core.RequestQueue()
    q.pause()
    q.put("a")
    assert q.drain()[0] == ["a"]


# ---------------------------------------------------------------- take_batch: budgets


def _queue_with(core, requests, **kwargs):
    q = core.RequestQueue(**kwargs)
    for name, samples, nbytes in requests:
        q.put(name, samples=samples, nbytes=nbytes)
    return q


def test_sample_budget(core):
    q = _queue_with(core, [("a", 3, 0), ("b", 3, 0), ("c", 3, 0)])
    assert q.take_batch(7, timeout=0)[0] == ["a", "b"]
    assert q.take_batch(7, timeout=0)[0] == ["c"]


def test_batch_stops_exactly_at_max_samples(core):
    q = _queue_with(core, [(i, 1, 0) for i in range(10)])
    assert q.take_batch(4, timeout=0)[0] == [0, 1, 2, 3]


def test_oversized_head_is_taken_alone(core):
    q = _queue_with(core, [("big", 10, 0), ("small", 1, 0)])
    assert q.take_batch(4, timeout=0)[0] == ["big"]
    assert q.take_batch(4, timeout=0)[0] == ["small"]


def test_head_over_byte_budget_is_taken_alone(core):
    q = _queue_with(core, [("big", 1, 500), ("small", 1, 1)])
    assert q.take_batch(10, max_bytes=100, timeout=0)[0] == ["big"]


def test_request_that_does_not_fit_stops_the_batch(core):
    # "c" would fit after "b", but skipping "b" would reorder the queue.
    q = _queue_with(core, [("a", 2, 0), ("b", 5, 0), ("c", 1, 0)])
    assert q.take_batch(4, timeout=0)[0] == ["a"]
    assert q.take_batch(4, timeout=0)[0] == ["b"]
    assert q.take_batch(4, timeout=0)[0] == ["c"]


def test_byte_budget(core):
    q = _queue_with(core, [("a", 1, 100), ("b", 1, 100), ("c", 1, 100)])
    assert q.take_batch(10, max_bytes=250, timeout=0)[0] == ["a", "b"]


def test_full_byte_budget_ends_the_batch_even_for_a_zero_byte_request(core):
    q = _queue_with(core, [("a", 1, 100), ("b", 1, 150), ("c", 1, 0)])
    assert q.take_batch(10, max_bytes=250, timeout=0)[0] == ["a", "b"]


def test_request_over_remaining_bytes_stops_the_batch(core):
    q = _queue_with(core, [("a", 1, 100), ("b", 1, 200), ("c", 1, 10)])
    assert q.take_batch(10, max_bytes=250, timeout=0)[0] == ["a"]


def test_max_bytes_zero_means_no_byte_budget(core):
    q = _queue_with(core, [(i, 1, 10**9) for i in range(5)])
    assert q.take_batch(10, max_bytes=0, timeout=0)[0] == [0, 1, 2, 3, 4]


def test_budgets_with_priorities(core):
    q = core.RequestQueue(prioritized=True)
    q.put("low", samples=1, priority=9)
    q.put("high-big", samples=3, priority=0)
    q.put("high", samples=1, priority=0)
    assert q.take_batch(4, timeout=0)[0] == ["high-big", "high"]
    assert q.take_batch(4, timeout=0)[0] == ["low"]


# ---------------------------------------------------------------- take_batch: linger


def _wait_for_clock(core, threads, target_ns: int) -> None:
    threads.wait_until(lambda: core.monotonic_ns() >= target_ns)


def test_linger_deadline_already_passed_returns_at_once(core, threads):
    # The deadline is the first request's enqueue time + linger, not "now + linger".
    q = core.RequestQueue()
    q.put("a")
    q.put("b")
    _wait_for_clock(core, threads, core.monotonic_ns() + SECOND // 5)
    start = core.monotonic_ns()
    items, _, _ = q.take_batch(10, linger=0.2, timeout=0)
    assert items == ["a", "b"], "queued requests that fit are taken even after the deadline"
    assert core.monotonic_ns() - start < SECOND // 10


def test_linger_is_measured_from_the_first_enqueue(core, threads):
    linger_ns = 2 * SECOND // 5
    q = core.RequestQueue()
    q.put("a")
    _wait_for_clock(core, threads, core.monotonic_ns() + SECOND // 5)
    take_start = core.monotonic_ns()
    items, _, stamps = q.take_batch(10, linger=linger_ns / SECOND, timeout=0)
    returned = core.monotonic_ns()
    assert items == ["a"]
    assert returned >= stamps[0] + linger_ns - SECOND // 1000, "returned before the deadline"
    assert returned < take_start + linger_ns, "linger was measured from the call, not the enqueue"


def test_lingering_consumer_returns_when_the_batch_is_full(core, threads):
    q = threads.closing(core.RequestQueue())
    q.put("a", samples=2, nbytes=5)
    consumer = threads.start(q.take_batch, 4, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)  # the consumer holds "a" and lingers
    assert q.queued_samples == 0, "a taken request still counted"
    q.put("b")
    assert not consumer.join(0.1), "a batch that is not full waits for the deadline"
    q.put("c")
    assert consumer.outcome()[0] == ["a", "b", "c"]


def test_lingering_consumer_returns_when_the_byte_budget_is_met(core, threads):
    q = threads.closing(core.RequestQueue())
    q.put("a", nbytes=60)
    consumer = threads.start(q.take_batch, 100, max_bytes=100, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)
    q.put("b", nbytes=40)
    assert consumer.outcome()[0] == ["a", "b"]


@pytest.mark.parametrize(("samples", "nbytes"), [(3, 0), (1, 50)])
def test_lingering_batch_ends_at_a_request_that_does_not_fit(core, threads, samples, nbytes):
    q = threads.closing(core.RequestQueue())
    q.put("a", samples=2, nbytes=60)
    consumer = threads.start(q.take_batch, 4, max_bytes=100, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)
    q.put("next", samples=samples, nbytes=nbytes)
    assert consumer.outcome()[0] == ["a"]
    assert take_all(q) == ["next"]


def test_lingering_consumer_does_not_starve_producers_of_capacity(core, threads):
    q = threads.closing(core.RequestQueue(capacity=2))
    q.put("a")
    consumer = threads.start(q.take_batch, 100, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)
    start = time.monotonic()
    for name in "bcdef":
        q.put(name, timeout=5.0)
    # Producers must get the slots as soon as the consumer takes them, not at its deadline
    # (nor at their own timeout).
    assert time.monotonic() - start < 2.5
    q.close()
    assert consumer.outcome()[0] == list("abcdef")


def test_close_ends_a_lingering_batch(core, threads):
    q = threads.closing(core.RequestQueue())
    q.put("a")
    consumer = threads.start(q.take_batch, 10, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)
    q.close()
    assert consumer.outcome()[0] == ["a"]


def test_pause_does_not_interrupt_a_lingering_batch(core, threads):
    q = threads.closing(core.RequestQueue())
    q.put("a")
    consumer = threads.start(q.take_batch, 2, linger=30.0)
    threads.wait_until(lambda: len(q) == 0)
    q.pause()
    q.put("b")
    assert consumer.outcome()[0] == ["a", "b"]


def test_take_batch_collects_puts_during_linger(core, threads):
    q = threads.closing(core.RequestQueue())
    consumer = threads.start(q.take_batch, 3, linger=30.0, timeout=None)
    consumer.wait_blocked()
    for name in "abc":
        q.put(name)
    assert consumer.outcome()[0] == ["a", "b", "c"]


# ---------------------------------------------------------------- timestamps


def test_enqueue_ns_is_taken_by_put_on_the_core_clock(core):
    q = core.RequestQueue()
    bounds = []
    for i in range(20):
        before = core.monotonic_ns()
        q.put(i)
        bounds.append((before, core.monotonic_ns()))
    _, _, stamps = q.take_batch(100, timeout=0)
    for stamp, (before, after) in zip(stamps.tolist(), bounds):
        assert before <= stamp <= after
    assert np.all(np.diff(stamps) >= 0)


def test_monotonic_ns_is_monotonic_and_in_nanoseconds(core):
    readings = [core.monotonic_ns() for _ in range(1000)]
    assert all(isinstance(r, int) for r in readings[:5])
    assert readings == sorted(readings)
    start_ns, start_s = core.monotonic_ns(), time.monotonic()
    while time.monotonic() - start_s < 0.05:
        continue
    elapsed_ns = core.monotonic_ns() - start_ns
    assert 0.04 * SECOND < elapsed_ns < 5 * SECOND


# ---------------------------------------------------------------- references


def test_queue_holds_items_until_taken_then_lets_them_go(core):
    q = core.RequestQueue()
    items, futures = [Payload(i) for i in range(4)], [Payload(-i) for i in range(4)]
    refs = [weakref.ref(o) for o in items + futures]
    for item, future in zip(items, futures):
        q.put(item, future)
    del items, futures, item, future
    assert all(r() is not None for r in refs), "the queue must keep its requests alive"
    batch = q.take_batch(2, timeout=0)
    rest = q.drain()
    assert [p.n for p in batch[0] + rest[0]] == [0, 1, 2, 3]
    del batch, rest
    gc.collect()
    assert [r() for r in refs] == [None] * 8, "taken requests are still referenced"


@pytest.mark.parametrize("prioritized", [False, True])
def test_a_dropped_queue_lets_its_requests_go(core, prioritized):
    q = core.RequestQueue(prioritized=prioritized)
    items = [Payload(i) for i in range(200)]
    refs = [weakref.ref(o) for o in items]
    for i, item in enumerate(items):
        q.put(item, Payload(-i), priority=2 if i % 7 else i % 3)
    q.take_batch(5, timeout=0)
    del items, item, q
    gc.collect()
    assert [r() for r in refs] == [None] * 200


@pytest.mark.parametrize("prioritized", [False, True])
def test_rejected_put_keeps_no_reference(core, prioritized):
    q = core.RequestQueue(capacity=1, prioritized=prioritized)
    q.put("a")
    item, future = Payload(1), Payload(2)
    refs = [weakref.ref(item), weakref.ref(future)]
    with pytest.raises(QueueFullError):
        q.put(item, future, timeout=0)
    q.close()
    with pytest.raises(QueueClosedError):
        q.put(item, future)
    del item, future
    gc.collect()
    assert [r() for r in refs] == [None, None]


# ---------------------------------------------------------------- threads


def _spin_rate(seconds: float) -> float:
    """Loop iterations per second of this thread over ``seconds`` of wall time."""
    count = 0
    start = now = time.perf_counter()
    end = start + seconds
    while now < end:
        count += 1
        now = time.perf_counter()
    return count / (now - start)


def _thread_cpu_seconds(thread: threading.Thread) -> float | None:
    getclock = getattr(time, "pthread_getcpuclockid", None)
    if getclock is None or thread.ident is None:
        return None
    try:
        return time.clock_gettime(getclock(thread.ident))
    except OSError:
        return None


def _baseline_rate(threads) -> float:
    # The same measurement with the other thread in a wait known to release the GIL.
    gate = threading.Event()
    waiter = threads.start(gate.wait, 10.0)
    waiter.wait_blocked()
    rate = _spin_rate(0.2)
    gate.set()
    assert waiter.join()
    return rate


def _block_consumer(q):
    return q.take_batch(1, timeout=2.0)  # empty queue: waits in step 1


def _block_lingering_consumer(q):
    q.put("head")
    return q.take_batch(2, linger=2.0)  # holds "head", waits in step 3 for more


def _block_producer(q):
    q.put("fill")
    return q.put("more", timeout=2.0)  # the queue is full


@pytest.mark.parametrize(
    ("blocker", "closed_raises"),
    [(_block_consumer, True), (_block_lingering_consumer, False), (_block_producer, True)],
    ids=["take_batch", "take_batch-linger", "put"],
)
def test_waiting_releases_the_gil(core, threads, blocker, closed_raises):
    before = _baseline_rate(threads)
    q = threads.closing(core.RequestQueue(capacity=1))
    waiter = threads.start(blocker, q)
    waiter.wait_blocked()
    cpu_start = _thread_cpu_seconds(waiter.thread)
    rate = _spin_rate(0.3)
    cpu_end = _thread_cpu_seconds(waiter.thread)
    still_waiting = waiter.alive
    q.close()
    waiter.join()
    after = _baseline_rate(threads)

    assert still_waiting, (
        "the waiting call had returned before this thread could run: it held the GIL"
    )
    if cpu_start is not None and cpu_end is not None:
        assert cpu_end - cpu_start < 0.03, "the waiting thread burns CPU (it spins)"
    baseline = (before + after) / 2
    assert rate >= 0.5 * baseline, (
        f"this thread ran at {rate / baseline:.0%} of its speed while the other one waited"
    )
    if closed_raises:
        assert isinstance(waiter.error, QueueClosedError)
    else:
        assert waiter.error is None and waiter.result[0] == ["head"]


@pytest.mark.parametrize("n_consumers", [1, 2])
@pytest.mark.parametrize("prioritized", [False, True])
def test_many_producers_every_item_exactly_once_in_producer_order(
    core, threads, prioritized, n_consumers
):
    n_producers, per_producer = 4, 1500
    rng = np.random.default_rng(20240 + 2 * n_consumers + prioritized)
    sizes = rng.integers(1, 4, size=(n_producers, per_producer)).tolist()
    budgets = [7, 16][:n_consumers]
    q = threads.closing(core.RequestQueue(capacity=32, prioritized=prioritized))
    start = threading.Barrier(n_producers + n_consumers)

    def produce(p: int) -> None:
        start.wait()
        for i in range(per_producer):
            # One priority per producer (two producers per level) keeps each producer FIFO.
            q.put(
                (p, i), (p, i, "f"), samples=sizes[p][i], nbytes=i % 7, priority=p % 2, timeout=30.0
            )

    def consume(max_samples: int) -> list:
        start.wait()
        batches = []
        while True:
            try:
                batch = q.take_batch(max_samples, linger=0.001, timeout=30.0)
            except QueueClosedError:
                return batches
            assert batch is not None, "no batch for 30 s while producers were running"
            batches.append(batch)

    consumers = [threads.start(consume, b) for b in budgets]
    producers = [threads.start(produce, p) for p in range(n_producers)]
    for producer in producers:
        producer.outcome(30.0)
    q.close()
    results = [consumer.outcome(30.0) for consumer in consumers]

    seen = Counter()
    for budget, batches in zip(budgets, results):
        last = [-1] * n_producers
        for items, futures, stamps in batches:
            assert futures == [(p, i, "f") for p, i in items]
            assert len(stamps) == len(items)
            taken = sum(sizes[p][i] for p, i in items)
            assert len(items) == 1 or taken <= budget, "batch over its sample budget"
            if not prioritized:
                assert np.all(np.diff(stamps) >= 0)
            for p, i in items:
                assert i > last[p], f"producer {p}: item {i} after item {last[p]}"
                last[p] = i
                seen[p, i] += 1
    assert len(seen) == n_producers * per_producer, "items were lost"
    assert set(seen.values()) == {1}, "items were delivered twice"
    assert len(q) == 0


# ---------------------------------------------------------------- model-based


class _Model:
    """The queue contract, single-threaded and without waiting."""

    def __init__(self, capacity: int, prioritized: bool) -> None:
        self.capacity, self.prioritized = capacity, prioritized
        self.entries: list[tuple[int, int, int, int, int]] = []  # prio, seq, item, samples, nbytes
        self.seq = 0
        self.closed = self.paused = False

    def put(self, item, samples, nbytes, priority):
        if self.closed:
            raise QueueClosedError
        if self.capacity and len(self.entries) >= self.capacity:
            raise QueueFullError
        self.entries.append((priority if self.prioritized else 0, self.seq, item, samples, nbytes))
        self.seq += 1

    def take(self, max_samples, max_bytes):
        if not self.entries or (self.paused and not self.closed):
            if self.closed:
                raise QueueClosedError
            return None
        order = sorted(self.entries)
        batch = [order[0]]
        samples, nbytes = order[0][3], order[0][4]
        for entry in order[1:]:
            if samples >= max_samples or (max_bytes and nbytes >= max_bytes):
                break
            if entry[3] > max_samples - samples or (max_bytes and entry[4] > max_bytes - nbytes):
                break
            batch.append(entry)
            samples += entry[3]
            nbytes += entry[4]
        for entry in batch:
            self.entries.remove(entry)
        return [entry[2] for entry in batch]

    def drain(self):
        items = [entry[2] for entry in sorted(self.entries)]
        self.entries.clear()
        return items


def test_queue_matches_the_model(core):
    class QueueMachine(RuleBasedStateMachine):
        @initialize(capacity=st.sampled_from([0, 1, 3, 8]), prioritized=st.booleans())
        def setup(self, capacity, prioritized):
            self.q = core.RequestQueue(capacity, prioritized)
            self.model = _Model(capacity, prioritized)
            self.next_item = 0

        @rule(samples=st.integers(1, 4), nbytes=st.integers(0, 60), priority=st.integers(-2, 3))
        def put(self, samples, nbytes, priority):
            item, self.next_item = self.next_item, self.next_item + 1
            try:
                self.model.put(item, samples, nbytes, priority)
            except (QueueClosedError, QueueFullError) as exc:
                with pytest.raises(type(exc)):
                    self.q.put(item, -item, samples, nbytes, priority, timeout=0)
            else:
                self.q.put(item, -item, samples, nbytes, priority, timeout=0)

        @rule(max_samples=st.integers(1, 8), max_bytes=st.sampled_from([0, 0, 50, 120]))
        def take(self, max_samples, max_bytes):
            try:
                expected = self.model.take(max_samples, max_bytes)
            except QueueClosedError:
                with pytest.raises(QueueClosedError):
                    self.q.take_batch(max_samples, max_bytes, timeout=0)
                return
            batch = self.q.take_batch(max_samples, max_bytes, timeout=0)
            if expected is None:
                assert batch is None
            else:
                assert batch[0] == expected
                assert batch[1] == [-i for i in expected]

        @rule()
        def drain(self):
            assert self.q.drain()[0] == self.model.drain()

        @rule()
        def pause(self):
            self.q.pause()
            self.model.paused = True

        @rule()
        def resume(self):
            self.q.resume()
            self.model.paused = False

        @rule(really=st.integers(0, 3))
        def close(self, really):
            if really == 0:  # closing ends the interesting part: do it rarely
                self.q.close()
                self.model.closed = True

        @invariant()
        def state_matches(self):
            entries = self.model.entries
            assert len(self.q) == len(entries)
            assert self.q.queued_samples == sum(e[3] for e in entries)
            assert self.q.total_puts == self.model.seq
            assert self.q.closed == self.model.closed

    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
