"""BatchFuture behaves like concurrent.futures.Future, including under races."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pytest

from fastbatch import BatchFuture
from fastbatch.observe._counters import Counters
from fastbatch._future import fail_futures, resolve_batch, start_batch


def test_lifecycle_matches_stdlib():
    for make in (cf.Future, BatchFuture):
        f = make()
        assert not f.done() and not f.running() and not f.cancelled()
        assert f.set_running_or_notify_cancel() is True
        assert f.running() and not f.cancel()
        f.set_result(5)
        assert f.done() and f.result() == 5 and f.exception() is None
        with pytest.raises(cf.InvalidStateError):
            f.set_result(6)
        g = make()
        g.set_exception(KeyError("k"))
        with pytest.raises(KeyError):
            g.result()
        assert isinstance(g.exception(), KeyError)
        h = make()
        assert h.cancel() and h.cancelled() and h.done()
        with pytest.raises(cf.CancelledError):
            h.result()
        assert h.set_running_or_notify_cancel() is False
        with pytest.raises(RuntimeError):
            f.set_running_or_notify_cancel()


def test_result_timeout():
    f = BatchFuture()
    with pytest.raises(cf.TimeoutError):  # the builtin TimeoutError from 3.11 on
        f.result(timeout=0.01)
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0)


def test_callbacks_before_and_after_completion():
    f = BatchFuture()
    seen = []
    f.add_done_callback(lambda fut: seen.append(("before", fut.result())))
    f.set_result(1)
    f.add_done_callback(lambda fut: seen.append(("after", fut.result())))
    assert seen == [("before", 1), ("after", 1)]
    c = BatchFuture()
    c.add_done_callback(lambda fut: seen.append(("cancelled", fut.cancelled())))
    c.cancel()
    assert seen[-1] == ("cancelled", True)


def test_wait_and_as_completed_with_every_final_state():
    futures = [BatchFuture() for _ in range(4)]
    futures[0].cancel()
    start_batch(futures)  # notifies the cancelled one, runs the others
    done, pending = cf.wait(futures, timeout=0)
    assert done == {futures[0]} and len(pending) == 3

    def finish():
        resolve_batch([futures[1]], ["one"])
        fail_futures([futures[2]], ValueError("two"))
        futures[3].set_result("three")

    timer = threading.Timer(0.02, finish)
    timer.start()
    first = cf.wait(futures[1:], timeout=5, return_when=cf.FIRST_COMPLETED)
    assert first.done
    assert set(cf.as_completed(futures, timeout=5)) == set(futures)
    timer.join()
    assert futures[1].result() == "one" and futures[3].result() == "three"
    assert isinstance(futures[2].exception(), ValueError)


def test_wait_first_exception():
    good, bad = BatchFuture(), BatchFuture()
    bad.set_exception(RuntimeError("x"))
    done, pending = cf.wait([good, bad], timeout=1, return_when=cf.FIRST_EXCEPTION)
    assert done == {bad} and pending == {good}


def test_asyncio_wrap_future_result_and_cancellation():
    async def main():
        f = BatchFuture()
        threading.Timer(0.01, f.set_result, args=(7,)).start()
        assert await asyncio.wrap_future(f) == 7
        g = BatchFuture()
        task = asyncio.ensure_future(asyncio.wrap_future(g))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return g

    g = asyncio.run(main())
    assert g.cancelled()  # cancelling the awaiting task cancels the item


def test_start_batch_skips_cancelled_and_finished():
    futures = [BatchFuture(), None, BatchFuture(), BatchFuture()]
    futures[2].cancel()
    futures[3].set_exception(RuntimeError("failed by stop"))
    counters = Counters()
    counters.add(in_flight=4)  # the worker took the four items
    assert start_batch(futures, counters) == [0, 1]
    assert futures[0].running() and futures[2]._state == "CANCELLED_AND_NOTIFIED"
    # The cancelled and the finished-while-queued one are counted as they leave the batch.
    c = counters.snapshot()
    assert (c["cancelled"], c["expired_dropped"], c["in_flight"]) == (1, 1, 2)
    assert start_batch([BatchFuture(), None]) is None


def test_resolve_batch_leaves_finished_futures_alone():
    futures = [BatchFuture() for _ in range(3)]
    start_batch(futures)
    fail_futures([futures[1]], RuntimeError("stop"))
    assert resolve_batch(futures, ["a", "b", "c"]) == 2
    assert futures[0].result() == "a" and futures[2].result() == "c"
    with pytest.raises(RuntimeError, match="stop"):
        futures[1].result()


def test_base_exception_in_callback_does_not_stop_the_batch():
    futures = [BatchFuture() for _ in range(3)]
    start_batch(futures)

    def explode(_):
        raise SystemExit("callback")

    futures[0].add_done_callback(explode)
    assert resolve_batch(futures, [1, 2, 3]) == 3
    assert [f.result() for f in futures] == [1, 2, 3]


@pytest.mark.parametrize("seed", range(5))
def test_no_lost_wakeups_between_waiters_and_resolver(seed):
    """Many threads wait on futures while the batch is resolved: every waiter wakes."""
    n = 400
    futures = [BatchFuture() for _ in range(n)]
    start_batch(futures)
    barrier = threading.Barrier(9)
    results = []
    lock = threading.Lock()

    def waiter(k):
        barrier.wait()
        got = [futures[i].result(timeout=10) for i in range(k, n, 8)]
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=waiter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    barrier.wait()
    for i in range(0, n, 50):  # in chunks, racing with the waiters
        resolve_batch(futures[i:i + 50], list(range(i, i + 50)))
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    assert sorted(results) == list(range(n))


def test_cancel_races_start_batch():
    """Each future ends either running (then resolved) or cancelled, never both."""
    for _ in range(50):
        futures = [BatchFuture() for _ in range(200)]
        canceller = threading.Thread(target=lambda: [f.cancel() for f in futures[::-1]])
        canceller.start()
        keep = start_batch(futures)
        canceller.join()
        kept = range(200) if keep is None else keep
        resolve_batch([futures[i] for i in kept], [i for i in kept])
        for i, f in enumerate(futures):
            assert f.done()
            assert f.cancelled() != (i in set(kept))
