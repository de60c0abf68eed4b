"""Done-callbacks: ones that raise, enqueue, stop, or block on another future.

Callbacks are user code run when a future finishes (usually on the worker thread). None
of them may kill the worker, leave other futures of the batch unresolved, or deadlock it;
every wait below is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading

import numpy as np
import pytest

import fastbatch

from fb_fixtures import stress_rounds
from fb_reliability import Ledger, poll, same


def oracle(item):
    return item * 2 + 1


def row(i: float) -> np.ndarray:
    return np.array([float(i), 0.5])


class Boom(BaseException):
    """A BaseException from a callback (concurrent.futures only catches Exception)."""


@pytest.mark.parametrize("exc", [ZeroDivisionError, Boom, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("outcome", ["result", "error"])
def test_raising_callback_is_logged_and_the_batch_and_worker_live_on(make_processor, caplog, exc,
                                                                     outcome):
    def func(batch):
        if outcome == "error":
            raise ValueError("the batch fails")
        return batch * 2 + 1

    processor = make_processor(func, max_batch_size=8, max_retries=0)
    ledger = Ledger(oracle, (ValueError,))
    processor.pause()
    entries = [ledger.submit(processor, row(i)) for i in range(6)]

    def bad_callback(f):
        raise exc("raised by a callback")

    entries[2].future.add_done_callback(bad_callback)
    with caplog.at_level(logging.ERROR):
        processor.resume()
        assert ledger.wait(5) == 0, "a raising callback left futures of its batch pending"
        # The worker lives: a later batch is processed.
        later = ledger.submit(processor, row(99))
        assert later.future.exception(timeout=5) is None or outcome == "error"
    report = ledger.check(processor)
    assert not report.problems, str(report)
    assert "raised by a callback" in caplog.text, "the callback's exception was not logged"


def test_callback_that_enqueues_chains_work(make_processor):
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=4)
    ledger = Ledger(oracle)
    finished = threading.Event()
    depth = 50

    def chain(n):
        def callback(f):
            if n == depth:
                finished.set()
                return
            entry = ledger.submit(processor, row(n + 1))
            entry.future.add_done_callback(chain(n + 1))
        return callback

    ledger.submit(processor, row(0)).future.add_done_callback(chain(0))
    assert finished.wait(10), "the chain of enqueues from callbacks stalled"
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == depth + 1, str(report)


def test_callback_that_enqueues_into_a_full_queue_does_not_deadlock_the_worker(make_processor):
    """A callback on the worker thread puts into a full bounded queue, timeout=None.

    The worker is the queue's only consumer: if the put waits for room the worker is the
    one that should make it, forever. fastbatch must not hang: the put succeeds, or is
    refused with an error (QueueFullError, a clear RuntimeError) — within a bound.
    """
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=1, max_queue_size=2)
    ledger = Ledger(oracle)
    finished = threading.Event()
    outcome = []

    def callback(f):
        try:
            for i in range(4):
                entry = ledger.submit(processor, row(10 + i))
                outcome.append(entry.refused)
        finally:
            finished.set()

    processor.pause()
    ledger.submit(processor, row(0)).future.add_done_callback(callback)
    processor.resume()
    ok = finished.wait(5)
    processor.stop(timeout=1)  # breaks the deadlock, if there is one, so that the test ends
    assert ok, "the worker deadlocked: its own callback waits for room only it can make"
    for refused in outcome:
        assert refused is None or isinstance(refused, (fastbatch.QueueFullError, RuntimeError)), refused


@pytest.mark.parametrize("same_batch", [True, False])
def test_callback_blocking_on_another_future_does_not_deadlock_the_worker(make_processor, same_batch):
    """f1's callback waits (bounded) for f2, which the worker has yet to resolve.

    If callbacks ran on the worker thread, the worker would sit in the callback instead of
    resolving f2: the wait would time out. f2 must be resolved while f1's callback waits.
    """
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=2 if same_batch else 1)
    processor.pause()
    f1 = processor.enqueue_predict(row(1))
    f2 = processor.enqueue_predict(row(2))
    got = []
    called = threading.Event()

    def callback(f):
        try:
            got.append(f2.result(timeout=2))
        except BaseException as exc:  # noqa: BLE001 - examined below
            got.append(exc)
        called.set()

    f1.add_done_callback(callback)
    processor.resume()
    assert called.wait(10)
    assert not isinstance(got[0], BaseException), f"the callback's wait for f2 failed: {got[0]!r}"
    assert same(got[0], oracle(row(2)))


def test_callbacks_run_once_for_every_outcome(make_processor, gate):
    gate.hold()
    gate.func = lambda b: (_ for _ in ()).throw(ValueError("no")) if b[0, 0] == 3 else b * 2 + 1
    processor = make_processor(gate, max_batch_size=1, max_retries=0)
    ledger = Ledger(oracle, (ValueError, fastbatch.ProcessorStoppedError))
    entries = [ledger.submit(processor, row(i)) for i in range(8)]
    assert gate.entered.wait(5)
    ledger.cancel(entries[5])
    late = []
    entries[0].future.add_done_callback(lambda f: late.append(threading.current_thread().name))
    gate.release.set()
    assert ledger.wait(5) == 0
    processor.stop()
    report = ledger.check(processor)
    assert not report.problems, str(report)  # includes "done-callback ran once" per future
    assert report.states == {"result": 6, "failed": 1, "cancelled": 1}
    # A callback added after the future is done runs at once, on the adding thread.
    ran = []
    entries[1].future.add_done_callback(lambda f: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]


def test_asyncio_wrap_future_with_stop_mid_flight(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=4)
    futures = [processor.enqueue_predict(row(i)) for i in range(40)]
    assert gate.entered.wait(5)

    async def main():
        wrapped = [asyncio.wrap_future(f) for f in futures]
        loop = asyncio.get_running_loop()
        stopping = loop.run_in_executor(None, processor.stop, 0.05)
        results = await asyncio.wait_for(asyncio.gather(*wrapped, return_exceptions=True), 10)
        await stopping
        return results

    results = asyncio.run(main())
    gate.release.set()
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            assert isinstance(r, fastbatch.ProcessorStoppedError), repr(r)
        else:
            assert same(r, oracle(row(i)))


def test_wait_and_as_completed_see_every_future(make_processor):
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=8)
    futures = [processor.enqueue_predict(row(i)) for i in range(100)]
    futures[50].cancel()
    done, not_done = concurrent.futures.wait(futures, timeout=10)
    assert not not_done
    assert len(list(concurrent.futures.as_completed(futures, timeout=10))) == 100
    assert poll(lambda: processor.get_stats()["total_processed"] + processor.get_stats()["total_cancelled"]
                == 100)


# -- the stdlib's wait() and as_completed() rely on the future's condition -------------------

def test_state_does_not_change_while_a_waiter_holds_the_condition():
    """``concurrent.futures.wait`` holds every future's ``_condition`` while it reads their
    states twice (the done set, then the count its waiter must see). The stdlib Future
    changes state only under that condition; if ours changes it outside, ``wait`` can
    count a future as finished *and* receive its completion event, and return early with
    ``not_done`` non-empty (``test_wait_all_completed_never_returns_early``).
    """
    future = fastbatch.BatchFuture()
    resolver = threading.Thread(target=future.set_result, args=(1,))
    with future._condition:
        resolver.start()
        resolver.join(0.2)  # the resolver should now be blocked on the condition
        state_while_held = future._state
    resolver.join(5)
    assert state_while_held == "PENDING", (
        f"the future became {state_while_held} while a waiter held its condition")
    assert future.result(timeout=0) == 1


@stress_rounds(fast=20, extended=150)
def test_wait_all_completed_never_returns_early(make_processor, rounds):
    processor = make_processor(lambda b: b, max_batch_size=1)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches everywhere: makes the race likely
    early = 0
    try:
        for _ in range(rounds):
            futures = [processor.enqueue_predict(row(i)) for i in range(200)]
            _, not_done = concurrent.futures.wait(futures, timeout=10)
            early += bool(not_done)
            concurrent.futures.wait(futures, timeout=10)
    finally:
        sys.setswitchinterval(interval)
    assert early == 0, f"wait(ALL_COMPLETED) returned {early} times with futures not done"


@stress_rounds(fast=20, extended=150)
def test_as_completed_yields_each_future_exactly_once(make_processor, rounds):
    """The same race seen from ``as_completed``: a future counted finished up front whose
    completion event still arrives would be yielded twice (or raise KeyError inside)."""
    processor = make_processor(lambda b: b, max_batch_size=1)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    problems = []
    try:
        for _ in range(rounds):
            futures = [processor.enqueue_predict(row(i)) for i in range(200)]
            try:
                yielded = list(concurrent.futures.as_completed(futures, timeout=10))
            except Exception as exc:  # noqa: BLE001 - reported below
                problems.append(repr(exc))
                continue
            if len(yielded) != len(futures) or len(set(map(id, yielded))) != len(futures):
                problems.append(f"{len(yielded)} yielded, {len(set(map(id, yielded)))} distinct")
    finally:
        sys.setswitchinterval(interval)
    assert not problems, problems[:5]
