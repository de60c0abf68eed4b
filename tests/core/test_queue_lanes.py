"""RequestQueue lanes: a batch holds one lane, order across lanes, tags and recycling.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref

import numpy as np
import pytest

from fastbatch._errors import LaneChangedError, QueueFullError

from fb_queue import take_all


def lanes_queue(core, n_lanes: int = 4, **kwargs):
    """A queue with lanes 1..n-1 opened, tagged "t1".. (lane 0 keeps the tag None).

    Tags are compared by identity: the interned strings are the literals' objects.
    """
    q = core.RequestQueue(lanes=n_lanes, **kwargs)
    for k in range(1, n_lanes):
        assert q.open_lane(sys.intern(f"t{k}")) == k
    return q


def test_lanes_argument_is_checked(core):
    with pytest.raises(ValueError, match="lanes must be >= 1, got 0"):
        core.RequestQueue(lanes=0)
    q = core.RequestQueue(lanes=3)
    assert q.lanes == 3
    with pytest.raises(ValueError, match=r"lane must be in \[0, 3\), got 3"):
        q.put("a", lane=3)
    with pytest.raises(ValueError, match=r"lane must be in \[0, 3\), got -1"):
        q.put("a", lane=-1)
    assert len(q) == 0


def test_lane_zero_is_open_with_tag_none(core):
    q = core.RequestQueue()
    assert q.lane_tag(0) is None
    q.put("a")  # lane 0, tag None: the queue works without lanes
    assert q.take_batch(10, tagged=True)[3] is None


def test_a_batch_holds_one_lane_and_each_lane_stays_fifo(core):
    q = lanes_queue(core, 3)
    order = [(i, i % 3) for i in range(30)]
    for i, lane in order:
        q.put(i, lane=lane, tag=q.lane_tag(lane))
    batches = []
    while (got := q.take_batch(100, timeout=0, tagged=True)) is not None:
        batches.append((got[3], got[0]))
    # The head of the queue (item 0, lane 0) decides the first batch; then lane 1's head
    # (item 1) is the oldest, then lane 2's.
    assert batches == [(None, list(range(0, 30, 3))), ("t1", list(range(1, 30, 3))),
                       ("t2", list(range(2, 30, 3)))]


def test_priority_decides_the_lane_of_the_next_batch(core):
    q = lanes_queue(core, 3, prioritized=True)
    puts = [("a", 0, 2), ("b", 1, 3), ("c", 2, 1), ("d", 1, 0), ("e", 0, 1), ("f", 2, 4)]
    for item, lane, prio in puts:
        q.put(item, priority=prio, lane=lane, tag=q.lane_tag(lane))
    got = []
    while (b := q.take_batch(100, timeout=0, tagged=True)) is not None:
        got.append((b[3], b[0]))
    # Lane 1 holds the highest-priority item (d, 0): its batch is d then b (priority
    # order within the lane); then lane 2, whose head c (priority 1) was put before
    # lane 0's head e (priority 1); then lane 0.
    assert got == [("t1", ["d", "b"]), ("t2", ["c", "f"]), (None, ["e", "a"])]


def test_plain_fifo_ignores_priority_across_lanes(core):
    q = lanes_queue(core, 2)
    q.put("old", priority=4, lane=0)
    q.put("new", priority=0, lane=1, tag="t1")
    assert q.take_batch(10, timeout=0)[0] == ["old"]


def test_drain_returns_every_lane_in_queue_order(core):
    for prioritized in (False, True):
        q = lanes_queue(core, 3, prioritized=prioritized)
        puts = [(0, 0, 3), (1, 2, 1), (2, 1, 2), (3, 0, 0), (4, 2, 1)]
        for item, lane, prio in puts:
            q.put(item, priority=prio, lane=lane, tag=q.lane_tag(lane))
        items, _, stamps = q.drain()
        if prioritized:
            assert items == [3, 1, 4, 2, 0]
        else:
            assert items == [0, 1, 2, 3, 4]
            assert np.all(np.diff(stamps) >= 0)
        assert len(q) == 0 and q.queued_samples == 0


def test_capacity_counts_every_lane(core):
    q = lanes_queue(core, 2, capacity=2)
    q.put("a", lane=0)
    q.put("b", lane=1, tag="t1")
    with pytest.raises(QueueFullError):
        q.put("c", lane=1, tag="t1", timeout=0)
    assert q.take_batch(10, timeout=0)[0] == ["a"]
    q.put("c", lane=1, tag="t1", timeout=0)
    assert q.take_batch(10, timeout=0)[0] == ["b", "c"]


def test_a_put_with_a_stale_tag_is_refused_and_queues_nothing(core):
    q = core.RequestQueue(lanes=2)
    assert q.open_lane("x") == 1
    with pytest.raises(LaneChangedError, match="lane 1 is no longer the lane of this tag"):
        q.put("a", lane=1, tag="y")
    with pytest.raises(LaneChangedError):
        q.put("a", lane=1)  # tag None
    assert len(q) == 0 and q.total_puts == 0


def test_open_lane_recycles_only_empty_unpinned_lanes(core):
    q = core.RequestQueue(lanes=3)
    x, y = object(), object()
    assert (q.open_lane(x), q.open_lane(y)) == (1, 2)
    q.put("in-x", lane=1, tag=x)
    q.put("in-y", lane=2, tag=y)
    q.set_row_schema(np.float64, (2,), lane=0)  # pins lane 0
    assert q.open_lane("z") == -1  # lane 0 pinned, lanes 1 and 2 hold requests
    assert q.take_batch(10, timeout=0, tagged=True)[3] is x
    assert q.open_lane("z") == 1  # lane 1 is empty now: recycled
    assert q.lane_tag(1) == "z"
    with pytest.raises(LaneChangedError):
        q.put("late", lane=1, tag=x)  # a producer that looked up x's lane before
    q.put("in-z", lane=1, tag="z")
    assert [q.take_batch(10, timeout=0, tagged=True)[3] for _ in range(2)] == [y, "z"]


def test_put_row_uses_the_pinned_lane_and_its_tag(core):
    q = core.RequestQueue(lanes=3)
    rows = object()
    lane = q.open_lane(rows)
    with pytest.raises(ValueError, match="lane 2 has not been opened"):
        q.set_row_schema(np.float32, (3,), lane=2)
    q.set_row_schema(np.float32, (3,), lane=lane)
    q.put("generic")  # lane 0
    assert q.put_row(np.zeros(3, np.float32))
    assert q.put_row(np.ones(3, np.float32))
    items, _, _, tag = q.take_batch(10, timeout=0, tagged=True)
    assert items == ["generic"] and tag is None
    items, _, _, tag = q.take_batch(10, timeout=0, tagged=True)
    assert len(items) == 2 and tag is rows


def test_a_lane_tag_lives_as_long_as_its_requests(core):
    q = core.RequestQueue(lanes=2)
    q.set_row_schema(np.float64, (1,), lane=0)  # lane 0 pinned: lane 1 is the one recycled

    class Tag:
        pass

    tag = Tag()
    ref = weakref.ref(tag)
    assert q.open_lane(tag) == 1
    q.put("a", lane=1, tag=tag)
    assert q.open_lane("other") == -1  # lane 1 not empty: nothing recycled
    del tag
    assert ref() is not None
    got = q.take_batch(10, timeout=0, tagged=True)
    assert got[3] is ref()
    del got
    assert ref() is not None  # still the lane's tag
    assert q.open_lane("other") == 1  # recycled: the queue drops its reference ...
    assert ref() is None  # ... and nothing else kept the tag alive


def test_a_lingering_batch_is_not_completed_by_another_lane(core):
    q = lanes_queue(core, 2)
    q.put("a0", lane=0)
    other_lane_done = threading.Event()

    def producer():
        for i in range(20):
            q.put(f"b{i}", lane=1, tag="t1")
        other_lane_done.set()
        q.put("a1", lane=0)
        q.put("a2", lane=0)

    thread = threading.Thread(target=producer)
    start = time.monotonic()
    thread.start()
    try:
        # Three samples fill the batch; a long linger shows that it ended because lane 0
        # filled it, not because 20 requests arrived in lane 1.
        items, _, _ = q.take_batch(3, linger=30.0, timeout=5)
    finally:
        thread.join(5)
    assert other_lane_done.is_set()
    assert items == ["a0", "a1", "a2"]
    assert time.monotonic() - start < 20
    assert take_all(q) == [f"b{i}" for i in range(20)]


def test_lane_batches_respect_sample_and_byte_budgets(core):
    q = lanes_queue(core, 2)
    q.put("zero", lane=0)
    for i in range(5):
        q.put(("x", i), samples=2, nbytes=100, lane=1, tag="t1")
    assert q.take_batch(3, timeout=0)[0] == ["zero"]
    assert q.take_batch(4, timeout=0)[0] == [("x", 0), ("x", 1)]
    assert q.take_batch(10, max_bytes=250, timeout=0)[0] == [("x", 2), ("x", 3)]
    assert q.queued_samples == 2


def test_a_lane_being_filled_is_not_recycled(core):
    # Lane 0 pinned, lane 1 tagged "t1": the only lane open_lane could recycle is the one
    # a lingering take is filling. It must stay "t1" until that batch is out, or the
    # requests of another tag would join the batch.
    q = lanes_queue(core, 2)
    q.put("a0", lane=1, tag="t1")
    q.set_row_schema(np.float64, (2,), lane=0)
    got: list = []
    taker = threading.Thread(target=lambda: got.append(q.take_batch(4, linger=30.0, timeout=5, tagged=True)))
    taker.start()
    try:
        deadline = time.monotonic() + 5
        while len(q) and time.monotonic() < deadline:  # until the take holds "a0"
            time.sleep(0.001)
        assert len(q) == 0
        assert q.open_lane("t2") == -1  # lane 1 is being filled, lane 0 is pinned
        q.put("a1", lane=1, tag="t1")
        q.put("a2", lane=1, tag="t1")
        q.put("a3", lane=1, tag="t1")
    finally:
        taker.join(5)
    items, _, _, tag = got[0]
    assert items == ["a0", "a1", "a2", "a3"] and tag == "t1"
    assert q.open_lane("t2") == 1  # empty and nobody filling it: recycled
