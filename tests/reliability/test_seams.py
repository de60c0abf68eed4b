"""Regression tests for the bugs that lived between the modules: stop bounds, runs that
leak into each other, thread identity, memory held by deadlines, self-waits, counts.

Every test runs on both cores (the ``make_processor`` fixture of this suite).
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

import fastbatch
from fastbatch.runtime._run import STOP_GRACE_S

from fb_reliability import Ledger, join_threads, poll, processor_threads

# Scheduling slack on a loaded 2-core machine, on top of the documented bound.
SLACK_S = 0.25


def row(i: float) -> np.ndarray:
    return np.array([float(i), 0.5])


def test_stop_timeout_is_bounded_when_a_done_callback_blocks(make_processor):
    never = threading.Event()
    entered = threading.Event()
    registered = threading.Event()
    processor = make_processor(lambda b: (registered.wait(5), b)[1], max_batch_size=1, initial_batch_size=1)
    future = processor.enqueue_predict(row(1))
    future.add_done_callback(lambda f: (entered.set(), never.wait(30)))
    registered.set()  # the batch finishes after the callback is registered: it runs on our thread
    assert entered.wait(5)
    t0 = time.monotonic()
    processor.stop(timeout=0.2)
    took = time.monotonic() - t0
    never.set()
    assert took < 0.2 + STOP_GRACE_S + SLACK_S, f"stop(0.2) took {took:.3f}s"


def test_stop_timeout_bound_is_timeout_plus_grace_for_a_stuck_batch(make_processor, caplog):
    never = threading.Event()
    entered = threading.Event()

    def stuck(batch):
        entered.set()
        never.wait(30)
        return batch

    processor = make_processor(stuck, max_batch_size=1, initial_batch_size=1)
    futures = [processor.enqueue_predict(row(i)) for i in range(5)]
    assert entered.wait(5)
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="fastbatch"):
        processor.stop(timeout=0.1)
    took = time.monotonic() - t0
    try:
        assert took < 0.1 + STOP_GRACE_S + SLACK_S, f"stop(0.1) took {took:.3f}s"
        assert all(f.done() for f in futures), "stop() returned with pending futures"
        assert all(isinstance(f.exception(), fastbatch.ProcessorStoppedError) for f in futures)
        assert "the batch function is still running" in caplog.text
        assert "done-callback" not in caplog.text  # the blame goes where it belongs
    finally:
        never.set()


def test_an_abandoned_worker_never_touches_the_next_run(make_processor):
    release_old = threading.Event()
    old_entered = threading.Event()

    def first(batch):
        old_entered.set()
        release_old.wait(30)
        return batch

    processor = make_processor(first, max_batch_size=1, initial_batch_size=1)
    old = processor.enqueue_predict(row(0))
    assert old_entered.wait(5)
    processor.stop(timeout=0)  # the worker is abandoned inside `first`
    assert isinstance(old.exception(timeout=1), fastbatch.ProcessorStoppedError)

    release_new = threading.Event()
    new_entered = threading.Event()

    def second(batch):
        new_entered.set()
        release_new.wait(30)
        return batch * 2

    processor.start(second)
    running = processor.enqueue_predict(row(1))
    assert new_entered.wait(5)
    queued = processor.enqueue_predict(row(2))
    doomed = processor.enqueue_predict(row(3), deadline=0.3)
    stopper = threading.Thread(target=processor.stop)  # drains: the new run is "stopping"
    stopper.start()
    assert poll(lambda: processor.get_stats()["is_stopping"])
    release_old.set()  # the old worker returns from its batch and exits
    old_workers = [t for t in threading.enumerate() if t.name == f"fastbatch-worker-{processor.name}"
                   and all(t is not w.thread for w in processor._run.workers)]
    assert join_threads(old_workers, timeout=5) == []
    # The new run is untouched: still stopping (draining), its deadlines still enforced.
    stats = processor.get_stats()
    assert stats["is_stopping"] and not stats["is_running"], stats
    assert isinstance(doomed.exception(timeout=5), fastbatch.ItemExpiredError)
    release_new.set()
    stopper.join(10)
    assert running.result(timeout=0)[0] == 2.0 and queued.result(timeout=0)[0] == 4.0


def test_stop_from_a_callback_of_another_processor_with_a_prefix_name_drains(make_processor):
    # Processor "batch-1" stopped from a done-callback of "batch-12": not its own thread.
    one = make_processor(lambda b: b * 2, name="batch-1", max_batch_size=1, initial_batch_size=1)
    twelve = make_processor(lambda b: b, name="batch-12", max_batch_size=1, initial_batch_size=1)
    one.pause()
    queued = [one.enqueue_predict(row(i)) for i in range(5)]
    seen: list[bool] = []
    stopped = threading.Event()

    def stop_one(_):
        one.stop()  # drains the (paused) queue before it returns
        seen.append(all(f.done() for f in queued))
        stopped.set()

    twelve.enqueue_predict(row(0)).add_done_callback(stop_one)
    assert stopped.wait(10)
    assert seen == [True], "stop() returned before the queue was drained"
    assert [f.result(timeout=0)[0] for f in queued] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_processed_futures_are_not_kept_alive_by_their_deadlines(make_processor):
    processor = make_processor(lambda b: b * 1.0, max_batch_size=64, initial_batch_size=64)
    refs = []
    for _ in range(20):
        futures = [processor.enqueue_predict(np.zeros(128), deadline=600) for _ in range(100)]
        for f in futures:
            f.result(timeout=5)
        refs.extend(weakref.ref(f) for f in futures)
        del futures, f
    gc.collect()
    alive = sum(1 for r in refs if r() is not None)
    assert alive == 0, f"{alive} of {len(refs)} processed futures are still alive"
    assert len(processor._run.reaper) < 2_000  # dead entries are pruned as items come in


def test_a_batch_function_waiting_on_its_own_processor_fails_at_once(make_processor):
    box = {}

    def waits_on_itself(batch):
        if batch[0, 0] == 1.0:
            inner = box["processor"].enqueue_predict(row(2))
            t0 = time.monotonic()
            try:
                inner.result(timeout=10)
            except fastbatch.SelfWaitError as exc:
                box["error"], box["took"] = exc, time.monotonic() - t0
            inner.cancel()
        return batch

    processor = make_processor(waits_on_itself, max_batch_size=1, initial_batch_size=1)
    box["processor"] = processor
    processor.enqueue_predict(row(1)).result(timeout=10)
    assert box["took"] < 1.0
    assert processor.name in str(box["error"]) and "its own processor" in str(box["error"])


def test_waiting_on_another_processor_from_a_batch_function_works(make_processor):
    inner = make_processor(lambda b: b + 100)

    def pipeline(batch):
        return np.stack([inner.enqueue_predict(r).result(timeout=5) for r in batch])

    outer = make_processor(pipeline)
    assert outer.enqueue_predict(row(1)).result(timeout=5)[0] == 101.0


@pytest.fixture
def fast_switching():
    """Switch threads every microsecond: races that need an unlucky switch show up."""
    import sys

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_counts_add_up_when_callers_cancel_while_stop_fails_the_queue(make_processor, fast_switching):
    n = 3000
    for seed in range(4):
        ledger = Ledger(lambda item: item * 2)
        processor = make_processor(lambda b: b * 2, max_batch_size=4, initial_batch_size=4, name=f"c{seed}",
                                   max_queue_size=0)
        processor.pause()
        entries = [ledger.submit(processor, row(i)) for i in range(n)]
        go = threading.Event()

        def cancel(part):
            go.wait(5)
            for e in part:
                ledger.cancel(e)

        cancellers = [threading.Thread(target=cancel, args=(entries[k::2][::-1],)) for k in range(2)]
        for t in cancellers:
            t.start()
        go.set()
        processor.stop(timeout=0)  # fails the queue while the cancellers run
        for t in cancellers:
            t.join(10)
        assert join_threads(processor_threads(processor), timeout=5) == []
        stats = processor.get_stats()
        accounted = (stats["total_processed"] + stats["total_failed"] + stats["total_cancelled"]
                     + stats["total_expired"] + stats["queue_size"] + stats["items_in_flight"])
        assert stats["total_submitted"] == accounted == n, stats
        assert stats["total_cancelled"] == sum(1 for e in entries if e.cancel_succeeded)
        report = ledger.check(processor, final=True, exact=True)
        assert not report.problems, str(report)


def test_timeout_arguments_are_checked_alike_on_every_path(make_processor):
    import asyncio

    processor = make_processor(lambda b: b)
    calls = {
        "enqueue": lambda t: processor.enqueue(row(1), timeout=t),
        "enqueue_predict": lambda t: processor.enqueue_predict(row(1), timeout=t),
        "enqueue_async": lambda t: asyncio.run(processor.enqueue_async(row(1), timeout=t)),
        "stop": lambda t: processor.stop(timeout=t),
    }
    for bad, error in ((True, TypeError), ("1", TypeError), (-1, ValueError), (float("nan"), ValueError)):
        messages = set()
        for name, call in calls.items():
            with pytest.raises(error) as info:
                call(bad)
            messages.add(str(info.value))
        assert len(messages) == 1, messages
        assert "timeout must be None or a number of seconds >= 0" in messages.pop()
    assert poll(lambda: processor.get_stats()["total_submitted"] == 0)
