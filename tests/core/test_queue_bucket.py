"""RequestQueue.take_batch(bucket=True): a batch of the requests closest in size to its first.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``. Sizes stand for sequence lengths: ``nbytes`` grows with them.
"""

from __future__ import annotations

import threading

import pytest

from fb_queue import take_all


def put_sizes(q, sizes, **kwargs):
    for i, n in enumerate(sizes):
        q.put((i, n), nbytes=n, **kwargs)


def test_a_bucketed_batch_takes_the_closest_sizes_in_queue_order(core):
    q = core.RequestQueue()
    put_sizes(q, [100, 7, 480, 95, 110, 12, 300, 102])
    items, _, _ = q.take_batch(4, bucket=True, timeout=0)
    assert items == [(0, 100), (3, 95), (4, 110), (7, 102)]
    assert len(q) == 4 and q.queued_samples == 4


def test_without_bucket_the_order_is_plain(core):
    q = core.RequestQueue()
    put_sizes(q, [100, 7, 480, 95])
    assert q.take_batch(2, timeout=0)[0] == [(0, 100), (1, 7)]


def test_requests_passed_over_go_before_later_arrivals(core):
    q = core.RequestQueue()
    put_sizes(q, [100, 7, 101, 480])
    assert q.take_batch(2, bucket=True, timeout=0)[0] == [(0, 100), (2, 101)]
    # 7 and 480 were passed over: later arrivals close to 7 do not overtake 480.
    q.put(("late", 8), nbytes=8)
    q.put(("late", 9), nbytes=9)
    assert q.take_batch(2, bucket=True, timeout=0)[0] == [(1, 7), (3, 480)]
    assert q.take_batch(2, bucket=True, timeout=0)[0] == [("late", 8), ("late", 9)]


def test_a_request_that_does_not_fit_is_skipped_not_a_stop(core):
    q = core.RequestQueue()
    q.put("head", samples=1, nbytes=50)
    q.put("big", samples=3, nbytes=50)
    q.put("small", samples=1, nbytes=60)
    assert q.take_batch(3, bucket=True, timeout=0)[0] == ["head", "small"]
    assert take_all(q) == ["big"]


def test_the_byte_budget_holds(core):
    q = core.RequestQueue()
    put_sizes(q, [100, 90, 95, 300])
    items, _, _ = q.take_batch(10, max_bytes=200, bucket=True, timeout=0)
    assert items == [(0, 100), (2, 95)]


def test_priorities_stay_first_and_the_heap_stays_ordered(core):
    q = core.RequestQueue(prioritized=True)
    for i, (prio, n) in enumerate([(2, 100), (2, 10), (1, 500), (2, 105), (3, 99), (1, 20), (2, 98)]):
        q.put((i, n), nbytes=n, priority=prio)
    # Head: the priority-1 request of size 500; then the closest sizes to 500 (105,
    # 100), whatever their priority, handed out in (priority, sequence) order.
    assert q.take_batch(3, bucket=True, timeout=0)[0] == [(2, 500), (0, 100), (3, 105)]
    # What is left comes out in (priority, sequence) order when taken plainly.
    assert take_all(q) == [(5, 20), (1, 10), (6, 98), (4, 99)]


def test_a_bucketed_take_lingers_until_the_lane_can_fill_the_batch(core):
    q = core.RequestQueue()
    q.put(("first", 100), nbytes=100)
    q.put(("far", 900), nbytes=900)
    got = []
    taker = threading.Thread(target=lambda: got.append(q.take_batch(3, linger=30.0, bucket=True, timeout=5)))
    taker.start()
    try:
        # The lane holds 1 of the 2 samples it needs: nothing is chosen yet.
        q.put(("near", 101), nbytes=101)  # now 2 wait: the batch is filled with the best 2
    finally:
        taker.join(10)
    assert not taker.is_alive()
    items = got[0][0]
    assert items == [("first", 100), ("far", 900), ("near", 101)]


def test_a_bucketed_take_at_its_deadline_chooses_among_what_waits(core):
    q = core.RequestQueue()
    put_sizes(q, [100, 900, 101])
    items, _, _ = q.take_batch(8, linger=0.0, bucket=True, timeout=0)
    assert items == [(0, 100), (1, 900), (2, 101)]  # room for all: all go, in queue order


@pytest.mark.parametrize("prioritized", [False, True])
def test_many_bucketed_takes_lose_and_duplicate_nothing(core, prioritized):
    import random

    rng = random.Random(7)
    q = core.RequestQueue(prioritized=prioritized)
    expected = set()
    got = []
    for round_ in range(60):
        for j in range(rng.randrange(0, 12)):
            key = (round_, j)
            expected.add(key)
            q.put(key, samples=rng.randrange(1, 3), nbytes=rng.randrange(1, 500), priority=rng.randrange(0, 3))
        batch = q.take_batch(rng.randrange(1, 9), max_bytes=rng.choice([0, 600]), bucket=True, timeout=0)
        if batch is not None:
            got.extend(batch[0])
    got.extend(take_all(q))
    assert sorted(got) == sorted(expected)
    assert len(q) == 0 and q.queued_samples == 0
