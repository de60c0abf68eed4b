"""RequestQueue.take_batch: waiting, pause, budgets, linger, timestamps.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``. Helpers shared by the ``test_queue_*`` modules are in
``fb_queue.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from fastbatch._errors import QueueClosedError

from fb_queue import SECOND, take_all


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
