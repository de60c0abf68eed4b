"""RequestQueue.interrupt() / take_batch(generation=...): a consumer whose limits changed
ends the take it is in and takes again with the new ones; samples_ahead(priority): what
a new request would wait behind."""

from __future__ import annotations

import threading
import time

import pytest


def _until_taken(q):
    """Until the taker holds the queued request (the queue has no event for it)."""
    deadline = time.monotonic() + 5
    while len(q) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(q) == 0


def _taker(q, results, **kwargs):
    thread = threading.Thread(target=lambda: results.append(q.take_batch(**kwargs)))
    thread.start()
    return thread


def test_an_idle_take_ends_with_none_when_interrupted(core):
    q = core.RequestQueue()
    got = []
    taker = _taker(q, got, max_samples=4, linger=60.0, timeout=60, generation=q.generation)
    q.interrupt()
    taker.join(10)
    assert not taker.is_alive() and got == [None]
    assert len(q) == 0


@pytest.mark.parametrize("max_samples, joined", [(100, ["first", "b0", "b1", "b2"]), (3, ["first", "b0", "b1"])])
def test_a_filling_take_goes_with_what_was_put_before_the_interrupt(core, max_samples, joined):
    q = core.RequestQueue()
    generation = q.generation
    q.put("first")
    got = []
    lingering = threading.Event()

    def take():
        lingering.set()
        got.append(q.take_batch(max_samples, linger=60.0, timeout=5, generation=generation))

    taker = threading.Thread(target=take)
    taker.start()
    assert lingering.wait(5)
    _until_taken(q)  # "first" is in the batch: the taker waits in step 3
    for i in range(3):
        q.put(f"b{i}")  # too few to fill the batch: the taker is not woken for them
    q.interrupt()
    for i in range(10):
        q.put(i)  # after the interrupt: never joins the old batch
    taker.join(10)
    assert not taker.is_alive()
    assert got[0][0] == joined  # put before the interrupt, as far as they fit
    items, _, _ = q.take_batch(100, linger=0.0, timeout=0, generation=q.generation)
    assert items == [f"b{i}" for i in range(3) if f"b{i}" not in joined] + list(range(10))


def test_an_interrupted_bucketed_fill_goes_with_what_it_holds(core):
    q = core.RequestQueue()
    generation = q.generation
    q.put("first", None, 1, 4)
    got = []
    lingering = threading.Event()

    def take():
        lingering.set()
        got.append(q.take_batch(10, linger=60.0, timeout=5, bucket=True, generation=generation))

    taker = threading.Thread(target=take)
    taker.start()
    assert lingering.wait(5)
    _until_taken(q)
    q.interrupt()
    taker.join(10)
    assert not taker.is_alive() and got[0][0] == ["first"]


def test_an_interrupt_before_the_take_ends_it_at_once(core):
    # The consumer read the generation, then its limits changed: its next take is stale,
    # whether requests are queued or not, and takes nothing under the stale limits.
    q = core.RequestQueue()
    generation = q.generation
    q.interrupt()
    assert q.take_batch(4, linger=60.0, timeout=60, generation=generation) is None
    q.put("a")
    q.put("b")
    assert q.take_batch(4, linger=60.0, timeout=0, generation=generation) is None
    assert len(q) == 2


def test_a_take_without_generation_ignores_interrupts(core):
    q = core.RequestQueue()
    q.interrupt()
    q.put("a")
    q.put("b")
    items, _, _ = q.take_batch(4, linger=0.0, timeout=0)
    assert items == ["a", "b"]
    assert q.generation == 1


def test_generation_must_be_minus_one_or_more(core):
    q = core.RequestQueue()
    with pytest.raises(ValueError, match="generation must be -1"):
        q.take_batch(1, timeout=0, generation=-2)


@pytest.mark.parametrize("prioritized", [True, False])
def test_samples_ahead_counts_the_priority_level_and_above(core, prioritized):
    q = core.RequestQueue(prioritized=prioritized)
    for priority, samples in ((4, 8), (4, 8), (0, 1), (2, 3), (9, 5), (-1, 2)):
        q.put(object(), None, samples, 0, priority)
    total = q.queued_samples
    assert total == 27
    ahead = [q.samples_ahead(p) for p in range(5)]
    # Levels below 0 count as 0, above 4 as 4; in FIFO order everything is ahead.
    assert ahead == ([3, 3, 6, 6, 27] if prioritized else [27] * 5)
    q.take_batch(1, timeout=0)  # the head: priority -1 (prioritized) or the first put
    assert q.samples_ahead(4) == q.queued_samples
    if prioritized:
        assert q.samples_ahead(0) == 1
    q.drain()
    assert [q.samples_ahead(p) for p in range(5)] == [0] * 5


def test_samples_ahead_follows_bucketed_takes(core):
    q = core.RequestQueue(prioritized=True)
    for n in (1, 5, 2, 6):
        q.put(object(), None, 1, n, 1)
    q.put(object(), None, 1, 3, 3)
    items, _, _ = q.take_batch(3, linger=0.0, timeout=0, bucket=True)
    # The head (1 byte) with the closest in size, 2 bytes and 3 bytes (priority 3):
    # the two of 5 and 6 bytes, priority 1, stay.
    assert len(items) == 3
    assert [q.samples_ahead(p) for p in (0, 1, 3, 4)] == [0, 2, 2, 2]
