"""Coroutine batch functions: on the processor's own event loop, or on the caller's."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import numpy as np
import pytest

import fastbatch


def rows(n: int) -> list[np.ndarray]:
    return [np.array([float(i), 1.0]) for i in range(n)]


def test_an_async_function_runs_on_the_processors_own_loop(make_processor):
    loops = []

    async def model(batch):
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return batch * 2

    processor = make_processor(model, max_batch_size=4)
    futures = [processor.enqueue_predict(r) for r in rows(10)]
    for f, r in zip(futures, rows(10)):
        np.testing.assert_array_equal(f.result(5), r * 2)
    assert loops and all(loop is loops[0] for loop in loops)  # one loop for the run
    stats = processor.get_stats()
    assert stats["total_processed"] == 10 and stats["total_failed"] == 0
    processor.stop()
    assert loops[0].is_closed()  # stopped with the run; the fixture checks its thread ended
    assert not [t for t in threading.enumerate() if t.name.startswith("fastbatch-loop-")]


def test_an_async_function_runs_on_the_given_loop(make_processor):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop")
    thread.start()
    seen = []
    try:
        async def model(batch):
            seen.append(asyncio.get_running_loop())
            return batch + 1

        processor = make_processor(max_batch_size=8)
        processor.start(model, loop=loop)
        futures = [processor.enqueue_predict(r) for r in rows(5)]
        for f, r in zip(futures, rows(5)):
            np.testing.assert_array_equal(f.result(5), r + 1)
        processor.stop()
        assert seen and all(s is loop for s in seen)
        assert loop.is_running() and not loop.is_closed()  # the caller's loop is not ours to stop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_partials_and_async_callables_and_functions_returning_coroutines(make_processor):
    async def scaled(factor, batch):
        return batch * factor

    class Model:
        async def __call__(self, batch):
            return batch * 3

    def returns_coroutine(batch):  # not declared async: seen at the call
        return scaled(4, batch)

    for func, factor in ((functools.partial(scaled, 2), 2), (Model(), 3), (returns_coroutine, 4)):
        processor = make_processor(func, max_batch_size=4)
        futures = [processor.enqueue_predict(r) for r in rows(6)]
        for f, r in zip(futures, rows(6)):
            np.testing.assert_array_equal(f.result(5), r * factor)
        processor.stop()


def test_async_failures_are_retried_and_isolated_like_sync_ones(make_processor):
    calls = []

    async def model(batch):
        calls.append(len(batch))
        if (batch[:, 0] == 3.0).any():
            raise ValueError("poison 3")
        return batch

    processor = make_processor(model, max_batch_size=8, max_retries=1, batch_timeout=0.05)
    futures = [processor.enqueue_predict(r) for r in rows(8)]
    for i, f in enumerate(futures):
        if i == 3:
            with pytest.raises(ValueError, match="poison 3"):
                f.result(5)
        else:
            np.testing.assert_array_equal(f.result(5), rows(8)[i])
    assert calls[:2] == [8, 8]  # the batch and its retry, then isolation


def test_stop_is_bounded_while_a_coroutine_hangs(make_processor):
    started = threading.Event()

    async def hang(batch):
        started.set()
        await asyncio.sleep(3600)
        return batch

    processor = make_processor(hang, max_batch_size=2)
    futures = [processor.enqueue_predict(r) for r in rows(4)]
    assert started.wait(5)
    t0 = time.monotonic()
    processor.stop(timeout=0.1)
    assert time.monotonic() - t0 < 1.0
    for f in futures:
        assert isinstance(f.exception(timeout=1), fastbatch.ProcessorStoppedError)


def test_a_loop_that_stops_fails_the_batch_with_a_clear_error(make_processor):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop")
    thread.start()
    entered = threading.Event()

    async def model(batch):
        entered.set()
        await asyncio.sleep(3600)
        return batch

    processor = make_processor(max_batch_size=2, max_retries=0, isolate_failures=False)
    processor.start(model, loop=loop)
    try:
        future = processor.enqueue_predict(rows(1)[0])
        assert entered.wait(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        with pytest.raises(RuntimeError, match="stopped running before the batch function's coroutine"):
            future.result(5)
    finally:
        processor.stop(timeout=1)
        # The caller's loop, stopped with the coroutine pending: its owner cleans up.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


def test_start_checks_the_loop(make_processor):
    processor = make_processor()

    async def model(batch):
        return batch

    with pytest.raises(TypeError, match="loop must be an asyncio event loop, not int"):
        processor.start(model, loop=3)
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(ValueError, match="loop is closed"):
        processor.start(model, loop=closed)
    assert not processor.is_running


def test_the_decorator_makes_an_async_function_of_one_item():
    @fastbatch.batch(max_batch_size=8, batch_timeout=0.005)
    async def embed(texts):
        await asyncio.sleep(0)
        return [len(t) for t in texts]

    assert isinstance(embed, fastbatch._decorator.AsyncBatchedFunction)

    async def main():
        return await asyncio.gather(*(embed(w) for w in ("a", "bb", "ccc")))

    try:
        assert asyncio.run(main()) == [1, 2, 3]
        assert embed.processor.get_stats()["total_processed"] == 3
    finally:
        embed.stop()


def test_a_coroutine_raising_timeout_error_fails_its_batch(make_processor):
    async def model(batch):
        raise TimeoutError("the backend timed out")

    processor = make_processor(model, max_batch_size=2, max_retries=0, isolate_failures=False)
    with pytest.raises(TimeoutError, match="the backend timed out"):
        processor.enqueue_predict(rows(1)[0]).result(5)


def test_a_coroutine_raising_system_exit_does_not_kill_the_loop(make_processor):
    calls = []

    async def model(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise SystemExit(3)
        return batch

    processor = make_processor(model, max_batch_size=1, max_retries=0, isolate_failures=False)
    with pytest.raises(fastbatch.BatchFunctionExit) as info:
        processor.enqueue_predict(rows(1)[0]).result(5)
    assert isinstance(info.value.__cause__, SystemExit)
    np.testing.assert_array_equal(processor.enqueue_predict(rows(2)[1]).result(5), rows(2)[1])


def test_waiting_on_an_own_future_from_the_given_loop_is_a_self_wait(make_processor):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop")
    thread.start()
    processor = make_processor(max_batch_size=1, max_retries=0, isolate_failures=False)
    try:
        async def model(batch):
            if batch[0, 0] == 0.0:
                return processor.enqueue_predict(rows(2)[1]).result(5)  # blocks the loop it needs
            return batch

        processor.start(model, loop=loop)
        with pytest.raises(fastbatch.SelfWaitError):
            processor.enqueue_predict(rows(1)[0]).result(5)
        processor.stop(timeout=2)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_an_abandoned_coroutine_is_cancelled_and_runs_its_cleanup(make_processor):
    started, cleaned = threading.Event(), threading.Event()

    async def hang(batch):
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()
        return batch

    processor = make_processor(hang, max_batch_size=2)
    future = processor.enqueue_predict(rows(1)[0])
    assert started.wait(5)
    processor.stop(timeout=0.05)
    assert isinstance(future.exception(timeout=1), fastbatch.ProcessorStoppedError)
    assert cleaned.wait(2), "the coroutine's finally block never ran"


def test_start_refuses_a_loop_that_is_not_running_and_changes_nothing(make_processor):
    processor = make_processor(lambda b: b)
    processor.enqueue_predict(np.ones(2)).result(5)
    processor.stop()
    loop = asyncio.new_event_loop()

    async def model(batch):
        return batch

    try:
        for _ in range(2):
            with pytest.raises(ValueError, match=r"loop is not running: start it"):
                processor.start(model, loop=loop)  # not started yet (nor closed)
        assert not processor.is_running
        assert processor.get_stats()["total_submitted"] == 1  # the refused starts counted nothing
    finally:
        loop.close()


def test_a_loop_given_with_a_plain_function_is_said_to_be_unused(make_processor, caplog):
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop")
    thread.start()
    processor = make_processor(max_batch_size=2)
    try:
        processor.start(lambda batch: batch * 2, loop=loop)
        with caplog.at_level("WARNING", logger="fastbatch"):
            np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(5), np.full(2, 2.0))
            np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(5), np.full(2, 2.0))
        said = [r.getMessage() for r in caplog.records if "loop is not used" in r.getMessage()]
        assert len(said) == 1 and "returned ndarray, not a coroutine" in said[0]
        processor.stop()

        async def inner(batch):
            return batch + 1

        caplog.clear()
        processor.start(lambda batch: inner(batch), loop=loop)  # returns a coroutine: runs on the loop
        np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(5), np.full(2, 2.0))
        assert not [r for r in caplog.records if "loop is not used" in r.getMessage()]
    finally:
        processor.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


_LOOP_STOPS_MID_BATCH = """
import asyncio, gc, threading
import numpy as np
import fastbatch

loop = asyncio.new_event_loop()
thread = threading.Thread(target=loop.run_forever)
thread.start()
entered = threading.Event()

async def model(batch):
    entered.set()
    await asyncio.sleep(3600)
    return batch

config = fastbatch.BatchProcessorConfig(max_batch_size=2, max_retries=0, isolate_failures=False,
                                        enable_health_monitoring=False)
processor = fastbatch.BatchProcessor(config)
processor.start(model, loop=loop)
future = processor.enqueue_predict(np.ones(2))
assert entered.wait(10)
loop.call_soon_threadsafe(loop.stop)
thread.join(10)
print(type(future.exception(10)).__name__)
processor.stop(5)
loop.close()  # the owner drops its loop with our task still pending on it
del loop
gc.collect()
print("done")
"""


def test_a_user_loop_stopping_mid_batch_leaves_no_noise_on_stderr(core):
    import os
    import subprocess
    import sys

    from fb_fixtures import core_name

    env = {**os.environ, "FASTBATCH_NO_EXTENSIONS": "1" if core_name(core) == "python" else ""}
    out = subprocess.run([sys.executable, "-X", "dev", "-c", _LOOP_STOPS_MID_BATCH], capture_output=True, text=True,
                         timeout=50, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["RuntimeError", "done"]
    # Neither "Task was destroyed but it is pending!" nor "Exception ignored in ...".
    assert out.stderr == "", out.stderr
