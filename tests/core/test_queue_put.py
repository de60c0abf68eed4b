"""RequestQueue: construction, order, put, capacity, close, put_row, references.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``. Helpers shared by the ``test_queue_*`` modules are in
``fb_queue.py``.
"""

from __future__ import annotations

import gc
import math
import queue
import time
import weakref

import numpy as np
import pytest

from fastbatch._errors import FastBatchError, QueueClosedError, QueueFullError

from fb_queue import Payload, take_all


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
        np.zeros((4, 1), dtype=np.float32),  # rows of another shape
        np.zeros((0, 4), dtype=np.float32),  # a mini-batch of no row
        np.zeros((2, 2, 4), dtype=np.float32),  # samples of another shape
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


def test_put_row_takes_mini_batches_and_samples_of_any_shape(core):
    q = core.RequestQueue()
    q.set_row_schema(np.float32, (2, 3))  # images of 2 x 3
    one, three = np.ones((1, 2, 3), np.float32), np.ones((3, 2, 3), np.float32)
    assert q.put_row(one, "a") is True
    assert q.put_row(three, "b") is True
    assert q.put_row(np.ones((2, 3), np.float32)) is False  # 2 samples of (3,), not one of (2, 3)
    assert (len(q), q.queued_samples, q.total_puts) == (2, 4, 2)
    items, futures, _ = q.take_batch(10, timeout=0)
    assert items[0] is one and items[1] is three and futures == ["a", "b"]
    rows = core.RequestQueue()
    rows.set_row_schema(np.int64, (4,))
    assert rows.put_row(np.zeros(4, np.int64)) and rows.put_row(np.zeros((5, 4), np.int64))
    assert rows.queued_samples == 6


def test_put_row_leaves_items_over_its_limits_to_put(core):
    q = core.RequestQueue()
    q.set_row_schema(np.float64, (2,), max_samples=3, max_bytes=40)
    assert q.put_row(np.zeros((2, 2))) is True  # 2 samples, 32 bytes
    assert q.put_row(np.zeros((3, 2)), timeout=-1) is False  # 48 bytes: not even the timeout is read
    q.set_row_schema(np.float64, (2,), max_samples=3)
    assert q.put_row(np.zeros((3, 2))) is True
    assert q.put_row(np.zeros((4, 2))) is False  # 4 samples
    assert (len(q), q.queued_samples) == (2, 5)
    with pytest.raises(ValueError, match="max_samples"):
        q.set_row_schema(np.float64, (2,), max_samples=-1)
    with pytest.raises(ValueError, match="max_bytes"):
        q.set_row_schema(np.float64, (2,), max_bytes=-1)


@pytest.mark.parametrize(
    ("dtype", "shape", "error"),
    [
        (np.float64, (), ValueError),
        (np.float64, (1,) * 32, ValueError),
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
