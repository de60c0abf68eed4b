"""max_concurrent_batches: several batches in flight, each on a worker thread of its own."""

from __future__ import annotations

import threading
import time

import asyncio
import concurrent.futures
import logging

import numpy as np
import pytest

import fastbatch
from fastbatch.runtime._scheduler import Scheduler
from fastbatch.runtime._policy import Arrivals, WaitPolicy
from fb_fixtures import poll


class Overlap:
    """A batch function that counts how many of its calls run at the same time.

    Each call waits at ``barrier`` (when one is given) so that a test can require ``n``
    calls to be inside at once, or holds until ``release`` is set.
    """

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        self.barrier = barrier
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.inside = threading.Semaphore(0)  # one token per call that has entered
        self.threads: set[threading.Thread] = set()
        self.starts: list[float] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.add(threading.current_thread())
            self.starts.append(time.monotonic())
        self.inside.release()
        try:
            if self.barrier is not None:
                self.barrier.wait(10)
            assert self.release.wait(30), "the test never released the batches"
            return batch * 2
        finally:
            with self.lock:
                self.active -= 1

    def entered(self, n: int, timeout: float = 5) -> bool:
        return all(self.inside.acquire(timeout=timeout) for _ in range(n))


def rows(start: int, n: int) -> list[np.ndarray]:
    return [np.full(2, float(i)) for i in range(start, start + n)]


def test_two_batches_run_at_once(make_processor):
    # Each call waits at a barrier of two: with one batch at a time it would break.
    fn = Overlap(threading.Barrier(2))
    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 6)]
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(10), np.full(2, 2.0 * i))
    assert fn.most == 2 and len(fn.threads) == 2


def test_one_batch_at_a_time_by_default(make_processor):
    fn = Overlap()
    processor = make_processor(fn, max_batch_size=1, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 20)]
    assert [float(f.result(10)[0]) for f in futures] == [2.0 * i for i in range(20)]
    assert fn.most == 1 and len(fn.threads) == 1


def test_never_more_batches_than_allowed_and_every_result_goes_home(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=4, max_concurrent_batches=3, batch_timeout=0.0)
    futures: dict[int, fastbatch.BatchFuture] = {}
    lock = threading.Lock()

    def produce(first: int) -> None:
        for i in range(first, first + 100):
            f = processor.enqueue_predict(np.full(2, float(i)))
            with lock:
                futures[i] = f

    producers = [threading.Thread(target=produce, args=(k * 100,)) for k in range(4)]
    for t in producers:
        t.start()
    assert fn.entered(3)
    assert poll(lambda: processor.get_stats()["active_batches"] == 3)
    assert fn.most == 3  # the fourth batch waits for a free worker
    fn.release.set()
    for t in producers:
        t.join(10)
    for i, f in futures.items():
        np.testing.assert_array_equal(f.result(10), np.full(2, 2.0 * i))
    assert fn.most == 3
    stats = processor.get_stats()
    assert stats["total_processed"] == 400 and stats["total_failed"] == 0 and stats["items_in_flight"] == 0
    assert stats["batch_count"] == len(fn.starts) and stats["active_batches"] == 0


def test_the_next_batch_is_formed_while_one_runs(make_processor):
    held = threading.Event()
    slow_in = threading.Event()

    def fn(batch):
        if batch[0][0] < 0:  # the slow batch
            slow_in.set()
            assert held.wait(30)
        return batch * 2

    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0)
    slow = processor.enqueue_predict(np.full(2, -1.0))
    assert slow_in.wait(5)
    quick = [processor.enqueue_predict(r) for r in rows(0, 5)]
    assert [float(f.result(10)[0]) for f in quick] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert not slow.done()
    held.set()
    assert float(slow.result(10)[0]) == -2.0


def test_a_failing_batch_fails_only_its_own_items(make_processor):
    fn = Overlap(threading.Barrier(2))

    def model(batch):
        out = fn(batch)
        if batch[0][0] == 0.0:
            raise ValueError("bad batch")
        return out

    processor = make_processor(model, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0,
                               max_retries=0)
    bad, good = (processor.enqueue_predict(r) for r in rows(0, 2))
    assert isinstance(bad.exception(10), ValueError)
    assert float(good.result(10)[0]) == 2.0
    assert fn.most == 2
    stats = processor.get_stats()
    assert (stats["total_processed"], stats["total_failed"]) == (1, 1)


def test_min_batch_interval_spaces_the_batches_of_all_workers(make_processor):
    fn = Overlap()
    interval = 0.1
    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=3, batch_timeout=0.0,
                               min_batch_interval=interval)
    futures = [processor.enqueue_predict(r) for r in rows(0, 4)]
    for f in futures:
        f.result(10)
    gaps = np.diff(sorted(fn.starts))
    # Measured inside the function, a start can be late by scheduling, never early: half
    # the interval still tells the spaced starts from three at once.
    assert len(gaps) == 3 and gaps.min() > interval / 2, gaps


def test_stop_drains_every_batch(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=2, max_concurrent_batches=2, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 10)]
    assert fn.entered(2)
    stopper = threading.Thread(target=processor.stop)
    stopper.start()
    assert poll(lambda: processor.get_stats()["is_stopping"])
    fn.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert [float(f.result(0)[0]) for f in futures] == [2.0 * i for i in range(10)]
    assert not any(t.is_alive() for t in processor._run.crew.threads())


def test_stop_past_its_timeout_fails_every_batch_in_flight(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=2, max_concurrent_batches=2, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 8)]
    assert fn.entered(2)
    processor.stop(timeout=0.05)
    errors = [f.exception(0) for f in futures]
    assert all(isinstance(e, fastbatch.ProcessorStoppedError) for e in errors), errors
    fn.release.set()  # the abandoned calls return; their results go nowhere
    assert poll(lambda: not any(t.is_alive() for t in processor._run.crew.threads()))
    stats = processor.get_stats()
    assert stats["total_processed"] == 0 and stats["items_in_flight"] == 0


def test_more_workers_at_runtime_start_at_once(make_processor):
    fn = Overlap(threading.Barrier(3))
    processor = make_processor(fn, max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(np.zeros(2))
    assert fn.entered(1)  # one batch waits at a barrier of three
    processor.reconfigure(max_concurrent_batches=3)
    rest = [processor.enqueue_predict(r) for r in rows(1, 2)]
    assert [float(f.result(10)[0]) for f in [first, *rest]] == [0.0, 2.0, 4.0]
    assert fn.most == 3 and processor.config.max_concurrent_batches == 3


def test_fewer_workers_at_runtime_leave_after_their_batch(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=3, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 3)]
    assert fn.entered(3)
    processor.reconfigure(max_concurrent_batches=1)
    futures += [processor.enqueue_predict(r) for r in rows(3, 12)]
    fn.release.set()
    assert [float(f.result(10)[0]) for f in futures] == [2.0 * i for i in range(15)]
    crew = processor._run.crew
    assert poll(lambda: sum(t.is_alive() for t in crew.threads()) == 1)
    # After the three batches that ran together, one at a time.
    with fn.lock:
        fn.most = 0
    more = [processor.enqueue_predict(r) for r in rows(0, 10)]
    for f in more:
        f.result(10)
    assert fn.most == 1


def test_changing_the_concurrency_under_load_loses_nothing(make_processor):
    fn = Overlap()
    processor = make_processor(fn, max_batch_size=8, max_concurrent_batches=2, batch_timeout=0.001)
    stop = threading.Event()
    futures: list[tuple[int, fastbatch.BatchFuture]] = []
    lock = threading.Lock()

    def produce(first: int) -> None:
        i = first
        while not stop.is_set():
            f = processor.enqueue_predict(np.full(2, float(i)), timeout=10)
            with lock:
                futures.append((i, f))
            i += 1
            if i - first >= 20_000:
                break

    producers = [threading.Thread(target=produce, args=(k * 100_000,)) for k in range(3)]
    for t in producers:
        t.start()
    for k in (4, 1, 3, 1, 2, 5, 1):
        before = len(futures)
        processor.reconfigure(max_concurrent_batches=k)
        assert poll(lambda b=before: len(futures) > b + 200)  # the change is made under load
    stop.set()
    for t in producers:
        t.join(10)
    for i, f in futures:
        assert float(f.result(10)[0]) == 2.0 * i
    stats = processor.get_stats()
    assert stats["total_processed"] == len(futures) and stats["items_in_flight"] == 0
    assert poll(lambda: sum(t.is_alive() for t in processor._run.crew.threads()) == 1)


def test_a_deadline_is_kept_while_every_worker_is_busy(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0)
    running = [processor.enqueue_predict(r) for r in rows(0, 2)]
    assert fn.entered(2)
    doomed = processor.enqueue_predict(np.zeros(2), deadline=0.05)
    assert isinstance(doomed.exception(5), fastbatch.ItemExpiredError)
    fn.release.set()
    assert [float(f.result(10)[0]) for f in running] == [0.0, 2.0]


@pytest.mark.parametrize("value, error", [(0, ValueError), (-1, ValueError), (65, ValueError),
                                          (2.0, TypeError), ("2", TypeError)])
def test_the_config_refuses_a_bad_concurrency(value, error):
    with pytest.raises(error, match="max_concurrent_batches"):
        fastbatch.BatchProcessorConfig(max_concurrent_batches=value)


def test_reconfigure_refuses_a_bad_concurrency_and_changes_nothing(make_processor):
    processor = make_processor(lambda b: b, max_concurrent_batches=2)
    with pytest.raises(ValueError, match="max_concurrent_batches"):
        processor.reconfigure(max_concurrent_batches=0)
    assert processor.config.max_concurrent_batches == 2
    assert sum(t.is_alive() for t in processor._run.crew.threads()) == 2


def test_stop_with_a_timeout_returns_on_time_while_one_batch_blocks(make_processor):
    # Three batches run; one never returns in time. stop(t) returns after about t, and
    # every future is final: the quick batches' results, the blocked one's error.
    blocked = threading.Event()
    entered = threading.Semaphore(0)

    def fn(batch):
        entered.release()
        if batch[0][0] < 0:
            blocked.wait(30)
        return batch * 2

    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=3, batch_timeout=0.0)
    stuck = processor.enqueue_predict(np.full(2, -1.0))
    assert entered.acquire(timeout=5)
    quick = [processor.enqueue_predict(r) for r in rows(0, 20)]
    t0 = time.monotonic()
    processor.stop(timeout=0.3)
    took = time.monotonic() - t0
    blocked.set()
    assert 0.3 <= took < 0.3 + 0.5, took
    assert isinstance(stuck.exception(0), fastbatch.ProcessorStoppedError)
    assert [float(f.result(0)[0]) for f in quick] == [2.0 * i for i in range(20)]


def test_two_stuck_batches_are_both_reported_and_active_batches_counts_them(make_processor):
    fn = Overlap()
    fn.release.clear()
    processor = make_processor(fn, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0,
                               stuck_batch_timeout=0.05, enable_health_monitoring=False)
    futures = [processor.enqueue_predict(r) for r in rows(0, 3)]
    assert fn.entered(2)
    # Each reported once past the limit, whichever passed it first.
    assert poll(lambda: any("2 batches have been running for" in r for r in processor.health().reasons))
    assert processor.health().status == "critical"
    assert processor.get_stats()["active_batches"] == 2  # the third item waits for a worker
    fn.release.set()
    assert [float(f.result(10)[0]) for f in futures] == [0.0, 2.0, 4.0]
    assert fn.most == 2


def test_a_coroutine_function_runs_batches_as_concurrent_tasks(make_processor):
    inside = 0
    most = 0
    together = asyncio.Event()

    async def fn(batch):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 3:
            together.set()
        try:
            # Every task waits until three are in: one task at a time would never get there.
            await asyncio.wait_for(together.wait(), 10)
            return batch * 2
        finally:
            inside -= 1

    processor = make_processor(fn, max_batch_size=2, max_concurrent_batches=3, batch_timeout=0.0)
    futures = [processor.enqueue_predict(r) for r in rows(0, 6)]
    assert [float(f.result(10)[0]) for f in futures] == [2.0 * i for i in range(6)]
    assert most == 3


def test_a_worker_crash_fails_its_own_batch_and_the_others_go_on(make_processor, monkeypatch, caplog):
    from fastbatch.runtime import _worker

    crashed = threading.Event()
    original = _worker.Worker._run_batch

    def crash_once(self, batch):
        if not crashed.is_set() and float(batch.items[0][0]) == 0.0:
            crashed.set()
            raise RuntimeError("a bug in the worker")
        return original(self, batch)

    monkeypatch.setattr(_worker.Worker, "_run_batch", crash_once)
    processor = make_processor(lambda b: b * 2, max_batch_size=1, max_concurrent_batches=2,
                               batch_timeout=0.0)
    with caplog.at_level(logging.ERROR, logger="fastbatch"):
        first = processor.enqueue_predict(np.zeros(2))
        assert isinstance(first.exception(5), fastbatch.ProcessorStoppedError)
    assert "crashed" in caplog.text
    rest = [processor.enqueue_predict(r) for r in rows(1, 10)]
    assert [float(f.result(5)[0]) for f in rest] == [2.0 * i for i in range(1, 11)]
    assert processor.is_running
    stats = processor.get_stats()
    assert stats["items_in_flight"] == 0 and stats["total_processed"] == 10 and stats["total_failed"] == 1
    assert (stats["live_workers"], stats["config_max_concurrent_batches"]) == (1, 2)


def test_when_every_worker_has_crashed_the_run_ends_and_nothing_is_left_pending(make_processor, monkeypatch):
    from fastbatch.runtime import _worker

    gate = threading.Barrier(2)

    def crash(self, batch):
        gate.wait(5)  # both workers hold a batch before either crashes
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(_worker.Worker, "_run_batch", crash)
    processor = make_processor(lambda b: b, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0)
    processor.pause()
    futures = [processor.enqueue_predict(r) for r in rows(0, 6)]
    processor.resume()
    for f in futures:
        assert isinstance(f.exception(5), fastbatch.ProcessorStoppedError)
    assert poll(lambda: not processor.is_running)
    with pytest.raises(fastbatch.ProcessorStoppedError):
        processor.enqueue_predict(np.zeros(2))


def test_shedding_counts_the_batches_that_run_side_by_side():
    config = fastbatch.BatchProcessorConfig(max_batch_size=4, max_concurrent_batches=2)
    sizer = Scheduler(config)
    sizer.set(4)
    sizer.ema_processing_s = 0.1
    # 12 samples ahead + the new one: 4 batches of 4, two at a time -> 2 rounds.
    assert sizer.predicted_latency_s(12, busy=False) == pytest.approx(0.2)
    assert sizer.predicted_latency_s(12, busy=True) == pytest.approx(0.25)
    one = Scheduler(fastbatch.BatchProcessorConfig(max_batch_size=4))
    one.set(4)
    one.ema_processing_s = 0.1
    assert one.predicted_latency_s(12, busy=False) == pytest.approx(0.4)


def test_batch_ends_reported_out_of_order_are_measured_from_the_right_end():
    arrivals = Arrivals(horizon_ns=1_000_000)
    arrivals.ended(2_000_000, 4)
    arrivals.ended(1_000_000, 4)  # a batch that started earlier finished a moment earlier
    assert (arrivals.last_end_ns, arrivals.last_resolved) == (2_000_000, 4)
    # An item 100 us after the first end and one 100 us after the second: both are
    # measured from the end just before them, so both fall in the first bins.
    arrivals.arrived(np.array([1_100_000, 2_100_000], np.int64))
    expected = arrivals.expected(1, np.array([150_000, 1_000_000]))
    assert expected[0] == pytest.approx(expected[1]) and expected[0] > 0


def test_a_reconfigure_racing_a_plan_never_mixes_old_and_new_state():
    policy = WaitPolicy(0.010)
    for n in (1, 2, 4, 8, 1, 2, 4, 8):
        policy.observe(n, 0.002 + 0.001 * n, 0, n, typical_s=0.005)
    planning = threading.Event()
    go = threading.Event()
    seen: list[int] = []
    old_arrivals = policy.arrivals
    real_expected = old_arrivals.expected

    def slow_expected(resolved, waits_ns):
        seen.append(id(policy.arrivals))
        planning.set()
        assert go.wait(5)
        return real_expected(resolved, waits_ns)

    old_arrivals.expected = slow_expected  # type: ignore[method-assign]
    plans: list[tuple[float, int]] = []
    planner = threading.Thread(target=lambda: plans.append(policy.plan(0, 1, 8, 0.0)))
    planner.start()
    assert planning.wait(5)
    changer = threading.Thread(target=policy.set_timeout, args=(1.0,))
    changer.start()
    changer.join(0.05)
    assert changer.is_alive()  # the new timeout waits for the plan in progress
    go.set()
    planner.join(5)
    changer.join(5)
    assert seen == [id(old_arrivals)]
    linger, until_ns = plans[0]
    assert until_ns <= 10_000_000  # planned entirely against the old 10 ms
    assert policy.timeout_ns == 1_000_000_000 and policy.arrivals is not old_arrivals


@pytest.mark.parametrize("k", [1, 2, 4])
def test_active_batches_never_exceed_k_under_load(make_processor, k):
    fn = Overlap()
    processor = make_processor(fn, max_batch_size=2, max_concurrent_batches=k, batch_timeout=0.0005)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.0002):
            seen.append(processor.get_stats()["active_batches"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    futures = [processor.enqueue_predict(r) for r in rows(0, 600)]
    for i, f in enumerate(futures):
        assert float(f.result(10)[0]) == 2.0 * i
    done.set()
    watcher.join(5)
    assert max(seen) <= k and fn.most <= k


def test_the_decorator_takes_the_concurrency_and_reconfigures_it():
    fn = Overlap(threading.Barrier(2))

    @fastbatch.batch(max_batch_size=1, batch_timeout=0.0, max_concurrent_batches=2, name="overlap")
    def double(batch):
        return fn(batch)

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(double, rows(0, 4)))
        assert [float(r[0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
        assert fn.most == 2
        double.processor.reconfigure(max_concurrent_batches=1)
        assert double.processor.config.max_concurrent_batches == 1
        assert poll(lambda: sum(t.is_alive() for t in double.processor._run.crew.threads()) == 1)
    finally:
        double.stop(5)


def test_idle_workers_do_not_share_out_the_items_of_one_batch(make_processor):
    # Four idle workers, items arriving one by one: one worker forms the batch and it
    # fills to max_batch_size, instead of four workers taking one item each.
    sizes: list[int] = []

    def fn(batch):
        sizes.append(len(batch))
        return batch * 2

    processor = make_processor(fn, max_batch_size=4, max_concurrent_batches=4, batch_timeout=2.0,
                               processing_strategy="fixed", initial_batch_size=4)
    futures = []
    for r in rows(0, 4):
        futures.append(processor.enqueue_predict(r))
        threading.Event().wait(0.005)  # the items arrive one by one
    assert [float(f.result(10)[0]) for f in futures] == [0.0, 2.0, 4.0, 6.0]
    assert sizes == [4]


def test_a_worker_thread_that_cannot_start_fails_start_and_leaves_nothing_running(make_processor, monkeypatch):
    real_start = threading.Thread.start
    started: list[threading.Thread] = []

    def start(self):
        if self.name.startswith("fastbatch-worker-") and len(started) == 1:
            raise RuntimeError("can't start new thread")
        if self.name.startswith("fastbatch-worker-"):
            started.append(self)
        real_start(self)

    processor = make_processor(None, max_concurrent_batches=3)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        processor.start(lambda b: b * 2)
    monkeypatch.setattr(threading.Thread, "start", real_start)
    assert not processor.is_running
    started[0].join(5)
    assert not started[0].is_alive()
    processor.start(lambda b: b * 2)  # a later start works
    assert float(processor.enqueue_predict(np.ones(2)).result(5)[0]) == 2.0


def test_a_worker_failing_between_take_and_start_fails_those_items(make_processor, monkeypatch):
    from fastbatch.runtime import _worker

    real = _worker.Batch
    failed = threading.Event()

    def batch(*args, **kwargs):
        if not failed.is_set():
            failed.set()
            raise MemoryError("no room for the batch")
        return real(*args, **kwargs)

    monkeypatch.setattr(_worker, "Batch", batch)
    processor = make_processor(lambda b: b * 2, max_batch_size=1, max_concurrent_batches=2, batch_timeout=0.0)
    first = processor.enqueue_predict(np.zeros(2))
    assert isinstance(first.exception(5), fastbatch.ProcessorStoppedError)
    later = [processor.enqueue_predict(r) for r in rows(1, 5)]
    assert [float(f.result(5)[0]) for f in later] == [2.0 * i for i in range(1, 6)]
    assert processor.get_stats()["items_in_flight"] == 0


def test_changing_only_the_concurrency_keeps_what_the_policy_learnt(make_processor):
    processor = make_processor(lambda b: b * 2, processing_strategy="adaptive")
    policy = processor.scheduler.policy
    arrivals = policy.arrivals
    processor.reconfigure(max_concurrent_batches=2)
    assert policy.arrivals is arrivals
    processor.reconfigure(batch_timeout=processor.config.batch_timeout * 2)
    assert policy.arrivals is not arrivals  # measured against the old timeout: starts again


@pytest.mark.parametrize("k", [1, 2])
def test_items_without_futures_of_a_crashed_worker_are_counted_failed(make_processor, monkeypatch, k):
    from fastbatch.runtime import _worker

    def crash(self, batch):
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(_worker.Worker, "_run_batch", crash)
    processor = make_processor(lambda b: b, max_batch_size=4, max_concurrent_batches=k, batch_timeout=0.0)
    processor.pause()
    for r in rows(0, 8):
        processor.enqueue(r)
    processor.resume()
    assert poll(lambda: not processor.is_running)
    stats = processor.get_stats()
    assert (stats["total_failed"], stats["items_in_flight"], stats["total_processed"]) == (8, 0, 0), stats


def test_a_worker_crash_after_its_batch_resolved_counts_nothing_twice(make_processor, monkeypatch):
    # The batch's futures have their results when the worker fails: they stay resolved,
    # counted once as processed, and nothing is left in flight or counted as expired.
    from fastbatch.runtime import _scheduler

    def crash(self, samples, seconds, resolved):
        raise RuntimeError("a bug after the results went out")

    monkeypatch.setattr(_scheduler.Scheduler, "handed_out", crash)
    processor = make_processor(lambda b: b * 2, max_batch_size=4, batch_timeout=0.0)
    processor.pause()
    futures = [processor.enqueue_predict(r) for r in rows(0, 4)]
    processor.resume()
    assert [float(f.result(5)[0]) for f in futures] == [2.0 * i for i in range(4)]
    assert poll(lambda: not processor.is_running)
    stats = processor.get_stats()
    assert (stats["total_processed"], stats["total_failed"], stats["items_in_flight"]) == (4, 0, 0), stats
    assert processor._counters.expired_dropped == 0
