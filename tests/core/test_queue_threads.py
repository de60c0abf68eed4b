"""RequestQueue under threads (GIL release, many producers) and against a model.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``. Helpers shared by the ``test_queue_*`` modules are in
``fb_queue.py``.
"""

from __future__ import annotations

import threading
import time
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

from fastbatch._errors import QueueClosedError, QueueFullError


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
