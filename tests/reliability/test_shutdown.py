"""Shutdown matrix: drain, leftovers, enqueue around stop, blocked producers, concurrent and
re-entrant stop(), restart, interpreter exit without stop(), fork while running.

Every scenario is checked with the ledger: after ``stop()`` returns, each future handed
out is final (a result, ``ProcessorStoppedError`` or a cancellation), and the statistics
agree. Nothing waits unbounded: every wait has a timeout, child interpreters included.
"""

from __future__ import annotations

import textwrap
import threading
import time

import numpy as np
import pytest

import fastbatch

from fb_reliability import Ledger, join_threads, poll, processor_threads, run_python

STOPPED = fastbatch.ProcessorStoppedError
ABANDON_GRACE = 1.0  # how long stop() may still wait for a batch function that overran


def oracle(item):
    return item * 2 + 1


def row(i: int) -> np.ndarray:
    return np.array([float(i), 0.5])


def pending(ledger: Ledger) -> list[int]:
    return [e.id for e in ledger.entries if e.future is not None and e.accepted and not e.future.done()]


def settle_threads(processor) -> None:
    """Wait for the processor's own threads (an abandoned worker included) to end."""
    left = join_threads(processor_threads(processor), timeout=10)
    assert not left, f"threads left: {left}"


# -- drain and leftovers ---------------------------------------------------------------------

def test_stop_drains_a_paused_queue(make_processor):
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=4)
    ledger = Ledger(oracle)
    processor.pause()
    for i in range(50):
        ledger.submit(processor, row(i))
    processor.stop()  # a closed queue is drained even while paused
    assert not pending(ledger)
    report = ledger.check(processor)
    assert not report.problems, str(report)
    assert report.states["result"] == 50


@pytest.mark.parametrize("timeout", [0, 0.01, 0.1])
def test_stop_timeout_fails_leftovers_and_the_running_batch(make_processor, gate, timeout):
    gate.hold()
    processor = make_processor(gate, max_batch_size=2, processing_strategy="fixed")
    ledger = Ledger(oracle)
    for i in range(21):
        ledger.submit(processor, row(i))
    assert gate.entered.wait(5)
    started = time.monotonic()
    processor.stop(timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed < timeout + ABANDON_GRACE + 1.0, f"stop({timeout}) took {elapsed:.2f}s"
    assert not pending(ledger), "stop() returned with futures still pending"
    for e in ledger.entries:
        assert isinstance(e.future.exception(timeout=0), STOPPED)
    gate.release.set()  # the abandoned batch returns now; its futures stay failed
    settle_threads(processor)
    report = ledger.check(processor)
    # The abandoned batch's items were failed: the statistics must say so too.
    assert not report.problems, str(report)
    assert report.stats["total_failed"] == 21 and report.stats["total_processed"] == 0


def test_stop_zero_while_paused_fails_everything_at_once(make_processor):
    processor = make_processor(lambda b: b * 2 + 1)
    ledger = Ledger(oracle)
    processor.pause()
    for i in range(30):
        ledger.submit(processor, row(i))
    processor.stop(timeout=0)
    assert not pending(ledger)
    settle_threads(processor)
    report = ledger.check(processor)
    assert not report.problems, str(report)
    assert report.states["failed"] + report.states["result"] == 30


def test_cancelled_items_left_in_the_queue_count_as_cancelled(make_processor, gate):
    """Cancelled futures still queued at stop(timeout) are counted once, as cancelled."""
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    entries = [ledger.submit(processor, row(i)) for i in range(6)]
    assert gate.entered.wait(5)
    for e in entries[2:5]:
        assert ledger.cancel(e)
    processor.stop(timeout=0)
    gate.release.set()
    settle_threads(processor)
    report = ledger.check(processor)
    assert report.states["cancelled"] == 3
    assert not report.problems, str(report)


# -- enqueue around stop ---------------------------------------------------------------------

def test_enqueue_before_start_during_and_after_stop_is_refused(make_processor, gate):
    processor = make_processor(max_batch_size=1)
    for call in (processor.enqueue, processor.enqueue_predict):
        with pytest.raises(STOPPED, match="start"):
            call(row(0))
    gate.hold()
    processor.start(gate)
    ledger = Ledger(oracle)
    for i in range(5):
        ledger.submit(processor, row(i))
    assert gate.entered.wait(5)
    stopper = threading.Thread(target=processor.stop)
    stopper.start()
    assert poll(lambda: processor.get_stats()["is_stopping"])
    for call in (processor.enqueue, processor.enqueue_predict):
        with pytest.raises(STOPPED, match="accepts no more items"):
            call(row(99))  # raised, never a failed future
    gate.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    for call in (processor.enqueue, processor.enqueue_predict):
        with pytest.raises(STOPPED):
            call(row(100))
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == 5, str(report)


@pytest.mark.parametrize("timeout", [0, 0.05, None])
@pytest.mark.parametrize("predict", [True, False])
def test_producers_blocked_on_a_full_queue_are_released_by_stop(make_processor, gate, timeout, predict):
    gate.hold()
    processor = make_processor(gate, max_queue_size=2, max_batch_size=1)
    ledger = Ledger(oracle)
    for i in range(3):  # one in the gate, two fill the queue
        ledger.submit(processor, row(i))
    assert gate.entered.wait(5)
    assert poll(lambda: processor.get_stats()["queue_size"] == 2)
    outcomes: list[BaseException | None] = []
    started = threading.Barrier(5)

    def producer(i: int) -> None:
        started.wait(5)
        entry = ledger.submit(processor, row(100 + i), predict=predict)  # timeout=None: blocks
        outcomes.append(entry.refused)

    producers = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in producers:
        t.start()
    started.wait(5)
    stopper = threading.Thread(target=processor.stop, args=(timeout,))
    stopper.start()
    # Released by stop(): whether or not the gate ever opens.
    assert not join_threads(producers, timeout=5), "a producer is still blocked after stop()"
    gate.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert len(outcomes) == 4
    for refused in outcomes:
        assert refused is None or isinstance(refused, STOPPED), repr(refused)
    assert not pending(ledger)
    settle_threads(processor)
    report = ledger.check(processor, exact=predict)
    assert not report.problems, str(report)


# -- concurrent and re-entrant stop ----------------------------------------------------------

def test_stop_from_eight_threads_with_mixed_timeouts(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=3)
    ledger = Ledger(oracle)
    for i in range(40):
        ledger.submit(processor, row(i))
    assert gate.entered.wait(5)
    barrier = threading.Barrier(8)
    timeouts = [0, 0.01, 0.05, None, 0, 0.2, None, 0.001]
    returned: dict[int, float] = {}
    errors: list[BaseException] = []

    def stop(k: int) -> None:
        barrier.wait(5)
        t0 = time.monotonic()
        try:
            processor.stop(timeout=timeouts[k])
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)
        returned[k] = time.monotonic() - t0

    threads = [threading.Thread(target=stop, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    finite = [t for k, t in enumerate(threads) if timeouts[k] is not None]
    stuck = join_threads(finite, timeout=max(t for t in timeouts if t is not None) + ABANDON_GRACE + 2)
    gate.release.set()
    assert not join_threads(threads, timeout=10)
    assert not errors, errors
    assert not stuck, f"stop(timeout) calls still waiting while a batch was held: {stuck}"
    assert not pending(ledger)
    settle_threads(processor)
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_a_bounded_stop_bounds_even_while_another_stop_drains(make_processor, gate):
    """stop(timeout) fails what is left after ``timeout``, whoever began the stop.

    Thread A calls ``stop()`` (drain, no timeout) while a batch is held; then the main
    thread calls ``stop(timeout=0.05)``. It must return within its bound with every future
    final (README: "processes what is queued while time remains, then fails what is left").
    """
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    for i in range(10):
        ledger.submit(processor, row(i))
    assert gate.entered.wait(5)
    drainer = threading.Thread(target=processor.stop)
    drainer.start()
    assert poll(lambda: processor.get_stats()["is_stopping"])
    t0 = time.monotonic()
    processor.stop(timeout=0.05)
    elapsed = time.monotonic() - t0
    still = pending(ledger)
    gate.release.set()
    drainer.join(10)
    assert elapsed < 0.05 + ABANDON_GRACE + 1.0
    assert not still, f"stop(timeout=0.05) returned with {len(still)} futures pending"


def test_stop_from_inside_the_batch_function_drains_the_queue(make_processor):
    holder = {}
    calls = []

    def func(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            holder["p"].stop()  # returns at once; the worker finishes the stop
        return batch * 2 + 1

    processor = make_processor(max_batch_size=1)
    holder["p"] = processor
    ledger = Ledger(oracle)
    processor.start(func)
    processor.pause()
    for i in range(10):
        ledger.submit(processor, row(i))
    processor.resume()
    assert poll(lambda: not processor.is_running and not processor_threads(processor), timeout=10)
    assert not pending(ledger)
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == 10, str(report)
    processor.stop(timeout=5)
    with pytest.raises(STOPPED):
        processor.enqueue(row(0))


def test_stop_that_finishes_a_stop_in_progress_returns_after_the_threads_end(make_processor):
    """stop() "joins every thread it started" -- also when another call began the stop.

    The batch function calls stop() (the worker then finishes the stop); the main thread's
    stop() waits for that. When it returns, the worker thread must have ended, not merely
    signalled that it is about to.
    """
    alive_after = 0
    for _ in range(30):
        entered = threading.Event()
        holder = {}

        def func(batch, holder=holder, entered=entered):
            holder["p"].stop()
            entered.set()
            return batch * 2 + 1

        processor = make_processor(max_batch_size=1)
        holder["p"] = processor
        processor.start(func)
        future = processor.enqueue_predict(row(0))
        assert entered.wait(5)
        processor.stop(timeout=5)
        alive_after += bool(processor_threads(processor))
        assert future.done()
    assert alive_after == 0, f"stop() returned {alive_after} times of 30 with the worker still running"


def test_stop_from_a_done_callback_on_the_worker(make_processor):
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=1)
    ledger = Ledger(oracle)
    processor.pause()
    entries = [ledger.submit(processor, row(i)) for i in range(6)]
    called = threading.Event()
    entries[0].future.add_done_callback(lambda f: (processor.stop(), called.set()))
    processor.resume()
    assert called.wait(5)
    processor.stop(timeout=5)
    assert not pending(ledger)
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_stop_from_a_done_callback_run_by_stop_itself(make_processor, gate):
    """stop(timeout) fails a queued future; that future's callback calls stop() again.

    The callback runs on the thread inside the first stop(); the nested call must return
    (it cannot wait for the stop its own thread is completing).
    """
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    ledger.submit(processor, row(0))
    assert gate.entered.wait(5)
    entry = ledger.submit(processor, row(1))
    nested = threading.Event()
    entry.future.add_done_callback(lambda f: (processor.stop(), nested.set()))
    stopper = threading.Thread(target=processor.stop, args=(0.05,), daemon=True)
    stopper.start()
    stopper.join(0.05 + ABANDON_GRACE + 2)
    done_in_time = not stopper.is_alive()
    gate.release.set()  # unblocks the deadlock, if there is one, so that the test can end
    stopper.join(10)
    assert done_in_time, "stop() deadlocked: the nested stop() waited for its own thread"
    assert nested.is_set()


def test_stop_from_a_done_callback_of_a_cancelled_future(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    ledger.submit(processor, row(0))
    assert gate.entered.wait(5)
    entry = ledger.submit(processor, row(1))
    entry.future.add_done_callback(lambda f: processor.stop(timeout=0))
    assert ledger.cancel(entry)  # the callback (and so stop) runs on this thread
    assert not processor.is_running
    gate.release.set()
    settle_threads(processor)
    assert not pending(ledger)


ITEM_STOP_SCRIPT = textwrap.dedent("""
    import threading
    from fastbatch import BatchProcessor, BatchProcessorConfig

    holder = {}

    def func(item):
        if item == "stop":
            holder["p"].stop()  # from a pool thread of the one-call-per-item path
        return item

    p = BatchProcessor(BatchProcessorConfig(enable_health_monitoring=False, min_batch_size=1,
                                            initial_batch_size=4, max_batch_size=4, item_timeout=None))
    holder["p"] = p
    p.start(func)
    f = p.enqueue_predict("stop")
    print("result:", f.result(timeout=5), flush=True)
    p.stop(timeout=5)
    left = [t.name for t in threading.enumerate() if t.name.startswith("fastbatch-")]
    print("threads left:", left, flush=True)
""")


def test_stop_from_an_item_call_on_a_worker_pool_thread(core_name):
    """Non-array items run one call each on a pool thread; stop() from there must not hang.

    Run in a child interpreter: a deadlock here cannot be broken from outside (the worker
    waits for the call without a timeout, the call waits for the worker).
    """
    result = run_python(ITEM_STOP_SCRIPT, core_name, timeout=20)
    assert result.returncode is not None, f"hung:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert "result: stop" in result.stdout and "threads left: []" in result.stdout


def test_restart_after_stop_with_an_abandoned_batch(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    ledger.submit(processor, row(0))
    assert gate.entered.wait(5)
    processor.stop(timeout=0)
    processor.start(lambda b: b * 2 + 1)  # the old worker is still inside the gate
    entries = [ledger.submit(processor, row(i)) for i in range(1, 11)]
    for e in entries:
        np.testing.assert_array_equal(e.future.result(timeout=5), oracle(e.item))
    gate.release.set()
    processor.stop()
    settle_threads(processor)
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_with_block_drains(make_processor):
    ledger = Ledger(oracle)
    with fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(
            max_batch_size=4, initial_batch_size=4, min_batch_size=1,
            enable_health_monitoring=False)) as processor:
        processor.start(lambda b: b * 2 + 1)
        for i in range(30):
            ledger.submit(processor, row(i))
    assert not pending(ledger)
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == 30, str(report)


def test_a_with_block_exit_is_bounded_by_shutdown_timeout(gate):
    """A stuck model cannot hang the end of a ``with`` block: it stops with shutdown_timeout."""
    config = fastbatch.BatchProcessorConfig(max_batch_size=2, batch_timeout=0.0, shutdown_timeout=0.2,
                                            enable_health_monitoring=False)
    gate.hold()
    with fastbatch.BatchProcessor(config) as processor:
        processor.start(gate)
        futures = [processor.enqueue_predict(row(i)) for i in range(6)]
        assert gate.entered.wait(5)
        start = time.monotonic()
    elapsed = time.monotonic() - start
    gate.release.set()
    assert elapsed < 0.2 + ABANDON_GRACE, f"the with block took {elapsed:.2f}s to exit"
    for f in futures:  # the stuck batch and everything behind it failed, nothing hangs
        assert isinstance(f.exception(timeout=0), STOPPED)
    settle_threads(processor)


# -- interpreter exit without stop() ------------------------------------------------------------

EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from fastbatch import BatchProcessor, BatchProcessorConfig

    mode = sys.argv[1]
    never = threading.Event()
    entered = threading.Event()

    def stall(batch):
        entered.set()
        never.wait()
        return batch

    fields = dict(enable_health_monitoring=True, health_check_interval=0.01, min_batch_size=1,
                  initial_batch_size=2, max_batch_size=2, batch_timeout=0.0, item_timeout=0.1,
                  shutdown_timeout=0.3)  # the exit drain of a stuck function
    if mode == "generic_list":
        fields["batch_generic_items"] = True
    p = BatchProcessor(BatchProcessorConfig(**fields))
    if mode == "idle":
        p.start(lambda b: b)
        p.enqueue_predict(np.ones(2)).result(5)
    elif mode == "busy":
        p.start(stall)
        futures = [p.enqueue_predict(np.ones(2)) for _ in range(10)]
        assert entered.wait(5)
    elif mode == "paused":
        p.start(lambda b: b)
        p.pause()
        futures = [p.enqueue_predict(np.ones(2)) for _ in range(10)]
    elif mode == "blocked_producer":
        p = BatchProcessor(BatchProcessorConfig(max_queue_size=1, **fields))
        p.start(stall)
        p.enqueue_predict(np.ones(2))
        assert entered.wait(5)
        p.enqueue_predict(np.ones(2))
        def blocked():
            try:
                p.enqueue_predict(np.ones(2))
            except Exception as exc:  # the exit's stop() refuses it
                assert "accepts no more items" in str(exc), exc
        threading.Thread(target=blocked, daemon=True).start()
    elif mode in ("generic_items", "generic_list"):
        p.start(stall)
        futures = [p.enqueue_predict({"a": i}) for i in range(3)]
        assert entered.wait(5)
        if mode == "generic_items":
            futures[0].exception(5)  # the call overran item_timeout and is still running
    print("main done", flush=True)
""")


@pytest.mark.parametrize("mode", ["idle", "busy", "paused", "blocked_producer", "generic_items",
                                  "generic_list"])
def test_interpreter_exit_without_stop_is_clean(core_name, mode):
    result = run_python(EXIT_SCRIPT, core_name, timeout=20, args=[mode])
    assert result.returncode is not None, f"the interpreter hung at exit:\n{result.stderr[-3000:]}"
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "main done"
    # The exit stops the processor (a bounded drain) and says so; nothing else is printed.
    lines = [line for line in result.stderr.splitlines() if "are not numpy arrays" not in line]
    assert lines and "was dropped without stop()" in lines[0], result.stderr
    assert all(line.startswith("fastbatch") for line in lines), result.stderr
    # What the drain could not finish is counted: the queued items behind a stuck batch.
    unfinished = [line for line in lines if "were not processed within shutdown_timeout=0.3" in line]
    if mode in ("busy", "generic_list"):
        assert unfinished, result.stderr
    elif mode in ("idle",):
        assert not unfinished, result.stderr


def test_a_processor_dropped_without_stop_is_stopped_and_its_threads_end(make_processor, caplog):
    import gc
    import weakref

    processor = fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(
        max_batch_size=4, initial_batch_size=4, min_batch_size=1, health_check_interval=0.01))
    processor.start(lambda b: b * 2)
    futures = [processor.enqueue_predict(row(i)) for i in range(10)]
    threads = processor_threads(processor)
    assert threads
    ref = weakref.ref(processor)
    with caplog.at_level("WARNING", logger="fastbatch"):
        del processor
        gc.collect()
    assert ref() is None, "the processor's own threads keep it alive"
    assert "was dropped without stop()" in caplog.text
    assert not join_threads(threads, timeout=5), "a dropped processor's threads did not end"
    for i, f in enumerate(futures):  # what was queued was processed by the bounded drain
        np.testing.assert_array_equal(f.result(timeout=0), row(i) * 2)


# -- fork while running -------------------------------------------------------------------------

FORK_SCRIPT = textwrap.dedent("""
    import concurrent.futures, os, sys, threading, time, warnings
    warnings.simplefilter("ignore")  # Python 3.12+ warns about fork() with threads
    import numpy as np
    import fastbatch
    from fastbatch import BatchProcessor, BatchProcessorConfig

    p = BatchProcessor(BatchProcessorConfig(enable_health_monitoring=True, health_check_interval=0.005,
                                            min_batch_size=1, initial_batch_size=4, max_batch_size=8,
                                            batch_timeout=0.001))
    p.start(lambda b: b * 2)
    stop = threading.Event()
    busy = threading.Barrier(3)

    def produce():
        busy.wait()
        while not stop.is_set():
            p.enqueue_predict(np.ones(3)).result(5)

    producers = [threading.Thread(target=produce) for _ in range(2)]
    for t in producers:
        t.start()
    busy.wait()
    for _ in range(int(sys.argv[1])):  # fork at different moments of the traffic
        p.enqueue_predict(np.ones(3)).result(5)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            try:
                f = p.enqueue_predict(np.ones(3))
            except fastbatch.FastBatchError as exc:
                print("child: old processor refused:", type(exc).__name__, exc, flush=True)
            else:
                try:
                    value = f.result(timeout=2)
                except fastbatch.FastBatchError as exc:
                    print("child: old processor failed the item:", type(exc).__name__, flush=True)
                except concurrent.futures.TimeoutError:  # not yet the builtin one on 3.10
                    print("child: HANG: the inherited processor took the item and never answered",
                          flush=True)
                    code = 3
                else:
                    assert (value == 2).all()
                    print("child: old processor works", flush=True)
            q = BatchProcessor(BatchProcessorConfig(enable_health_monitoring=False, min_batch_size=1,
                                                    initial_batch_size=4, max_batch_size=8))
            q.start(lambda b: b + 1)
            assert (q.enqueue_predict(np.ones(2)).result(timeout=3) == 2).all()
            q.stop(timeout=3)
            print("child: new processor works", flush=True)
        except BaseException as exc:
            print("child: error", repr(exc), flush=True)
            code = 4
        os._exit(code)
    deadline = time.monotonic() + 15
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            print("parent: child hung and was killed", flush=True)
            sys.exit(5)
        time.sleep(0.01)
    stop.set()
    for t in producers:
        t.join(5)
    assert (p.enqueue_predict(np.ones(3)).result(5) == 2).all()  # the parent is unharmed
    p.stop(timeout=5)
    code = os.waitstatus_to_exitcode(status)
    print("parent: child exit", code, flush=True)
    sys.exit(code)
""")


@pytest.mark.parametrize("moment", [0, 7, 50])
def test_fork_while_running_gives_the_child_an_error_or_a_working_processor(core_name, moment):
    result = run_python(FORK_SCRIPT, core_name, timeout=30, args=[str(moment)])
    assert result.returncode is not None, f"hung:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert "child: new processor works" in result.stdout
