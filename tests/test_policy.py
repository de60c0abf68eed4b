"""The ADAPTIVE policy's decisions, with scripted costs and arrivals on a simulated clock."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from fastbatch.runtime._policy import MIN_COST_S, Arrivals, CostModel, WaitPolicy

MS = 1_000_000  # ns


def test_cost_model_recovers_fixed_and_per_sample_cost_despite_outliers():
    rng = np.random.default_rng(1)
    model = CostModel()
    for i in range(64):
        n = int(rng.integers(1, 65))
        seconds = 0.020 + 0.0001 * n + rng.normal(0, 0.0002)
        if i % 10 == 3:
            seconds += 0.5  # a GC pause, a page fault
        model.observe(n, seconds)
    model.fit()
    assert model.fixed == pytest.approx(0.020, abs=0.001)
    assert model.per_sample == pytest.approx(0.0001, abs=0.00002)


def test_cost_model_with_one_size_counts_it_all_as_fixed():
    model = CostModel()
    for _ in range(10):
        model.observe(32, 0.05)
    assert (model.fixed, model.per_sample) == (0.05, 0.0)


def test_arrivals_measure_returns_after_each_end():
    arrivals = Arrivals(horizon_ns=10 * MS)
    for k in range(30):
        end = k * 100 * MS
        arrivals.ended(end, 8)
        # The batch's 8 callers come back 0.5-1.2 ms after its end.
        arrivals.arrived(np.array([end + 500_000 + 100_000 * i for i in range(8)], np.int64))
    got = arrivals.expected(8, np.array([0, 400_000, 2 * MS, 9 * MS]))
    assert got[0] == 0 and got[1] < 0.5
    assert got[2] == pytest.approx(8, rel=0.1) and got[3] == pytest.approx(8, rel=0.1)


def _policy(timeout_s: float, fixed: float, per_sample: float, sizes=(1, 64)) -> WaitPolicy:
    policy = WaitPolicy(timeout_s)
    for n in sizes * 8:
        policy.observe(n, fixed + per_sample * n, 0, 0, typical_s=fixed)
    return policy


def test_an_idle_model_takes_a_lone_item_at_once():
    policy = _policy(0.05, 0.02, 0.0001)
    linger, until = policy.plan(now_ns=10**12, queued=0, size=64, rate=5.0)  # 5 items/s
    assert linger == 0.0 and until == 0


def test_a_busy_stream_is_waited_for_up_to_the_timeout():
    policy = _policy(0.005, 0.02, 0.0001)
    # 20,000 items/s and one waiting: 5 ms brings 100, more than a batch holds.
    linger, until = policy.plan(now_ns=10**12, queued=0, size=64, rate=20_000.0)
    assert 0.001 < linger <= 0.005 and until == 0


def test_a_full_batch_waiting_goes_at_once():
    policy = _policy(0.05, 0.02, 0.0001)
    assert policy.plan(now_ns=10**12, queued=64, size=64, rate=10_000.0) == (0.0, 0)


def test_a_tiny_function_leaves_the_policy_inactive():
    policy = WaitPolicy(0.01)
    policy.observe(10, 1e-5, 0, 10, typical_s=MIN_COST_S / 10)
    assert not policy.active


# -- a closed loop, simulated --------------------------------------------------------------

def _closed_loop(clients: int, size: int, fixed: float, per_sample: float, timeout: float,
                 use_policy: bool, batches: int = 120) -> list[int]:
    """Batch sizes of a closed loop: each caller sends its next item 50 µs × its rank after
    its batch's results are out. The worker takes what is there when the model is free,
    fills until size or deadline — with the policy: the plan's; without: first item +
    ``timeout``, the classic rule."""
    policy = WaitPolicy(timeout) if use_policy else None
    timeout_ns = int(timeout * 1e9)
    arrivals: list[tuple[int, int]] = [(i * 400_000, i) for i in range(clients)]  # staggered start
    heapq.heapify(arrivals)
    waiting: list[int] = []  # enqueue times
    now, sizes, served = 0, [], 0
    while len(sizes) < batches:
        # Plan at the moment the model is free.
        while arrivals and arrivals[0][0] <= now:
            waiting.append(heapq.heappop(arrivals)[0])
        if policy is not None and policy.active:
            rate = served / (now / 1e9) if now else 0.0
            linger, until = policy.plan(now, len(waiting), size, rate)
            linger_ns = int(linger * 1e9)
        else:
            linger_ns, until = timeout_ns, 0
        if not waiting:  # idle: the next arrival is the head
            t, _ = heapq.heappop(arrivals)
            waiting.append(t)
            now = max(now, t)
        deadline = max(waiting[0] + linger_ns, until)
        while len(waiting) < size and arrivals and arrivals[0][0] <= max(deadline, now):
            t, _ = heapq.heappop(arrivals)
            waiting.append(t)
            now = max(now, t)
        if len(waiting) < size:
            now = max(now, deadline)
        batch, waiting = waiting[:size], waiting[size:]
        cost = fixed + per_sample * len(batch)
        now += int(cost * 1e9)
        if policy is not None:
            policy.taken(np.array(batch, np.int64))
            policy.observe(len(batch), cost, now, len(batch), typical_s=cost)
        sizes.append(len(batch))
        served += len(batch)
        for rank in range(len(batch)):
            heapq.heappush(arrivals, (now + 50_000 * (rank + 1), rank))
    return sizes


@pytest.mark.parametrize("timeout", [0.005, 0.01])
def test_the_policy_merges_the_cohorts_of_a_closed_loop(timeout):
    """64 callers, 20 ms + 0.1 ms per sample, a timeout shorter than a batch: the classic
    rule settles into half batches; the policy, once it has seen the callers come back
    (all within 3.2 ms), fills whole ones."""
    classic = _closed_loop(64, 64, 0.020, 0.0001, timeout, use_policy=False)
    policy = _closed_loop(64, 64, 0.020, 0.0001, timeout, use_policy=True)
    assert np.mean(classic[-40:]) == 32
    assert policy[-40:] == [64] * 40


def test_the_wait_stays_within_the_timeout_even_when_more_would_pay():
    """With 1 ms, only the callers back within 1 ms of the end can join: batches grow,
    but not to full ones."""
    sizes = _closed_loop(64, 64, 0.020, 0.0001, 0.001, use_policy=True)
    assert 32 < np.mean(sizes[-40:]) < 64


def test_the_policy_keeps_a_lone_caller_fast():
    """One caller: waiting can never bring a second item, so no batch waits."""
    sizes = _closed_loop(1, 64, 0.020, 0.0001, 0.05, use_policy=True, batches=40)
    assert sizes == [1] * 40
