"""The Scheduler's decisions, with an injected clock and scripted batch ends.

Plans are checked as numbers, and then handed to the real queue's take rule (both cores)
to see the batch they form — not a re-implementation of the take in the test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fastbatch import BatchProcessorConfig
from fastbatch.runtime._scheduler import Limits, Plan, Scheduler

MS = 1_000_000  # ns


class Clock:
    """Scripted time in ns."""

    def __init__(self, now_ns: int = 1_000 * MS) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, ms: float) -> None:
        self.now_ns += int(ms * MS)


def scheduler(clock=None, **fields) -> Scheduler:
    return Scheduler(BatchProcessorConfig(**fields), clock=clock or Clock())


def learn(s: Scheduler, clock: Clock, fixed_ms: float, per_sample_ms: float, sizes=(1, 2, 4, 8) * 4) -> None:
    """Scripted clean batches: each costs fixed + per_sample * n."""
    for n in sizes:
        s.started(np.array([clock.now_ns], np.int64))
        cost = fixed_ms + per_sample_ms * n
        clock.advance(cost)
        s.finished(clock.now_ns, cost / 1e3, n, 0)
        s.handed_out(n, cost / 1e3, n)


def test_min_batch_interval_counts_from_the_last_start_whichever_worker_took_it():
    clock = Clock()
    s = scheduler(clock, min_batch_interval=0.010, processing_strategy="fixed")
    assert s.plan(0).not_before_s == 0.0  # no batch yet
    s.started(np.array([clock.now_ns], np.int64))
    clock.advance(3)
    assert s.plan(5).not_before_s == pytest.approx(0.007)
    clock.advance(7)
    plan = s.plan(5)
    assert plan.not_before_s == 0.0 and plan.size == s.size


def test_the_latency_target_caps_the_wait_by_the_usual_batch_time():
    clock = Clock()
    s = scheduler(clock, batch_timeout=1.0, target_latency_ms=50, processing_strategy="fixed")
    assert s.plan(0).linger_s == pytest.approx(0.050)  # before any batch: the whole target
    learn(s, clock, fixed_ms=10, per_sample_ms=0, sizes=(4,))
    assert s.plan(0).linger_s == pytest.approx(0.040)


def test_every_batch_counts_in_the_usual_batch_time_so_shedding_sees_a_failing_backend():
    clock = Clock()
    s = scheduler(clock, max_batch_size=4, initial_batch_size=4, target_latency_ms=200,
                  processing_strategy="fixed")
    learn(s, clock, fixed_ms=20, per_sample_ms=0, sizes=(4,) * 8)
    assert s.predicted_latency_s(8, busy=False) == pytest.approx(0.060)
    # The backend now succeeds only on a retry 0.5 s later: items wait that long, and a
    # new one must be refused before it waits too.
    for _ in range(8):
        s.finished(clock.now_ns, 0.52, 4, 8)
    assert s.predicted_latency_s(8, busy=False) > 0.2
    assert s.max_wait_s() == 0.0  # no batch waits for more items past the target either


def test_a_reconfigure_swaps_one_snapshot_and_a_plan_uses_one():
    clock = Clock()
    s = scheduler(clock, max_batch_size=8, batch_timeout=0.5, processing_strategy="fixed")
    before = s.limits
    s.reconfigure(BatchProcessorConfig(max_batch_size=2, batch_timeout=0.001, processing_strategy="fixed"))
    assert before == Limits.of(BatchProcessorConfig(max_batch_size=8, batch_timeout=0.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.limits.max_size = 100  # type: ignore[misc]
    assert s.plan(0) == Plan(2, 0.001, 0, 0.0)


def test_a_reconfigure_that_keeps_the_timeout_keeps_what_the_policy_learnt():
    clock = Clock()
    s = scheduler(clock, batch_timeout=0.010)
    learn(s, clock, fixed_ms=2, per_sample_ms=0.5)
    arrivals = s.policy.arrivals
    s.reconfigure(BatchProcessorConfig(batch_timeout=0.010, max_concurrent_batches=2))
    assert s.policy.arrivals is arrivals and s.limits.concurrency == 2
    s.reconfigure(BatchProcessorConfig(batch_timeout=0.020))
    assert s.policy.arrivals is not arrivals


def test_out_of_order_batch_ends_keep_the_arrival_estimate_sane():
    clock = Clock()
    s = scheduler(clock, processing_strategy="fixed")
    s.finished(2_000 * MS, 0.01, 10, 0)
    s.finished(3_000 * MS, 0.01, 10, 0)  # 10 samples in 1 s
    s.finished(2_500 * MS, 0.01, 10, 0)  # a batch of another worker, reported late
    s.finished(4_000 * MS, 0.01, 10, 0)  # 10 samples in the second since the latest end
    # Measured from the latest end, not from the late report (that would read 10 samples
    # in 1.5 s and pull the estimate down).
    assert s.arrival_rate == pytest.approx(10.0)


# -- through the real queue's take rule -------------------------------------------------


def take(core, plan: Plan, queued: list[str]):
    q = core.RequestQueue()
    for item in queued:
        q.put(item)
    got = q.take_batch(plan.size, linger=plan.linger_s, timeout=0, until_ns=plan.until_ns)
    return got[0] if got is not None else []


def test_a_plan_caps_the_batch_at_its_size(core):
    s = scheduler(max_batch_size=4, initial_batch_size=4, processing_strategy="fixed")
    assert take(core, s.plan(10), [str(i) for i in range(10)]) == ["0", "1", "2", "3"]


def test_a_slow_model_waits_for_the_closed_loop_to_come_back(core):
    # A fixed cost of 20 ms per batch and callers that come back 2 ms after their results:
    # with 2 of 8 waiting, the plan holds the batch until the others are expected, and the
    # queue's take rule fills it until then.
    from fastbatch.core import _backend

    s = scheduler(_backend.monotonic_ns, max_batch_size=8, initial_batch_size=8, batch_timeout=0.050)
    real = _backend.monotonic_ns
    for _ in range(16):  # scripted ends on the real clock: 8 results, 8 items back 2 ms later
        end = real() - 10 * MS
        s.policy.observe(8, 0.020 + 0.0001 * 8, end, 8, 0.020)
        s.policy.taken(np.full(8, end + 2 * MS, np.int64))
    s.policy.arrivals.ended(real(), 8)  # the last batch ended now
    plan = s.plan(2)
    assert plan.until_ns > real() and plan.until_ns - real() <= 50 * MS
    start = real()
    got = take(core, plan, ["a", "b"])
    assert got == ["a", "b"]  # nobody came back in the test: it goes with what it holds at until_ns
    assert real() - start >= (plan.until_ns - start) - MS
