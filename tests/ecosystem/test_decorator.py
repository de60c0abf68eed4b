"""``@fastbatch.batch``: calls from threads and coroutines, config, lifecycle, exit."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest

import fastbatch
from fastbatch import ProcessorStoppedError


def row(tag: float) -> np.ndarray:
    return np.full(3, float(tag))


def double(batch: np.ndarray) -> np.ndarray:
    """Doubles a batch."""
    return batch * 2


def workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fastbatch-")]


# -- calls --------------------------------------------------------------------------------


def test_calls_from_threads_are_batched_together(make_batched: Any, gate: Any, threads: Any) -> None:
    fn = make_batched(gate, max_batch_size=16, enable_adaptive_batching=False)  # no shrinking
    gate.hold()
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = fn(row(i))

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert gate.entered.wait(5)  # item 0 is in a batch of its own, held
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 16)]
    for t in others:
        t.start()
    threads.wait_until(lambda: fn.processor.get_stats()["queue_size"] == 15)  # all callers wait
    gate.release.set()
    for t in [first, *others]:
        t.join(5)
    assert sorted(results) == list(range(16))
    for i, result in results.items():
        np.testing.assert_array_equal(result, row(2 * i))
    assert [len(b) for b in gate.batches] == [1, 15]


def test_a_function_of_a_list(make_batched: Any) -> None:
    seen: list[Any] = []

    def upper(batch: list[str]) -> list[str]:
        seen.append(batch)
        return [s.upper() for s in batch]

    fn = make_batched(upper, max_batch_size=8)
    threads = [threading.Thread(target=lambda i=i: fn(f"item{i}")) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert fn("abc") == "ABC"
    assert all(isinstance(b, list) for b in seen)
    assert sum(len(b) for b in seen) == 21


def test_calls_from_coroutines(make_batched: Any) -> None:
    fn = make_batched(double, max_batch_size=32)

    async def main() -> list[Any]:
        return await asyncio.gather(*(fn.call_async(row(i)) for i in range(200)))

    results = asyncio.run(main())
    assert [float(r[0]) for r in results] == [2.0 * i for i in range(200)]
    assert fn.processor.get_stats()["batch_count"] < 200


def test_threads_and_coroutines_share_batches(make_batched: Any, gate: Any) -> None:
    fn = make_batched(gate, max_batch_size=64, enable_adaptive_batching=False)
    gate.hold()
    threads = [threading.Thread(target=fn, args=(row(i),)) for i in range(8)]
    threads[0].start()
    assert gate.entered.wait(5)

    async def main() -> list[Any]:
        tasks = [asyncio.create_task(fn.call_async(row(100 + i))) for i in range(8)]
        for t in threads[1:]:
            t.start()
        await asyncio.sleep(0)  # every task is queued
        while fn.processor.get_stats()["queue_size"] < 15:
            await asyncio.sleep(0.001)
        gate.release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    for t in threads:
        t.join(5)
    assert [float(r[0]) for r in results] == [2.0 * (100 + i) for i in range(8)]
    assert [len(b) for b in gate.batches] == [1, 15]  # both kinds of caller in one batch


def test_submit_returns_a_future(make_batched: Any) -> None:
    fn = make_batched(double)
    futures = [fn.submit(row(i)) for i in range(10)]
    assert [float(f.result(5)[0]) for f in futures] == [2.0 * i for i in range(10)]


def test_errors_reach_the_caller(make_batched: Any) -> None:
    def fail(batch: np.ndarray) -> np.ndarray:
        raise KeyError("broken model")

    fn = make_batched(fail, max_retries=0)
    with pytest.raises(KeyError, match="broken model"):
        fn(row(1))
    with pytest.raises(KeyError, match="broken model"):
        asyncio.run(fn.call_async(row(1)))


# -- timeouts -----------------------------------------------------------------------------


def test_call_timeout_cancels_the_item(make_batched: Any, gate: Any) -> None:
    fn = make_batched(gate, max_batch_size=1)
    gate.hold()
    first = fn.submit(row(1))
    assert gate.entered.wait(5)
    with pytest.raises(TimeoutError, match="within timeout=0.01s"):
        fn(row(2), timeout=0.01)

    async def late() -> Any:
        return await fn.call_async(row(3), timeout=0.01)

    with pytest.raises(TimeoutError, match="within timeout=0.01s"):
        asyncio.run(late())
    gate.release.set()
    np.testing.assert_array_equal(fn(row(4), timeout=5), row(8))
    first.result(5)
    assert gate.seen() == [1.0, 4.0]  # items 2 and 3 were skipped
    assert fn.processor.get_stats()["total_cancelled"] == 2


def test_the_functions_own_timeout_error_is_not_ours(make_batched: Any) -> None:
    def slow(batch: np.ndarray) -> np.ndarray:
        raise TimeoutError("the model server timed out")

    fn = make_batched(slow, max_retries=0)
    with pytest.raises(TimeoutError, match="model server"):
        fn(row(1), timeout=5)
    with pytest.raises(TimeoutError, match="model server"):
        asyncio.run(fn.call_async(row(1), timeout=5))


@pytest.mark.parametrize("raise_on_queue_full", [False, True])
def test_timeout_waiting_for_room(make_batched: Any, gate: Any, raise_on_queue_full: bool) -> None:
    fn = make_batched(gate, max_batch_size=1, max_queue_size=1, raise_on_queue_full=raise_on_queue_full)
    gate.hold()
    fn.submit(row(1))
    assert gate.entered.wait(5)
    fn.submit(row(2))
    with pytest.raises(fastbatch.QueueFullError):
        fn(row(3), timeout=0.01)
    with pytest.raises(fastbatch.QueueFullError):
        asyncio.run(fn.call_async(row(3), timeout=0.01))


# -- configuration ------------------------------------------------------------------------


def test_config_from_the_arguments() -> None:
    fn = fastbatch.batch(max_batch_size=8, batch_timeout=0.002, max_retries=0)(double)
    cfg = fn.processor.config
    assert (cfg.max_batch_size, cfg.initial_batch_size, cfg.min_batch_size) == (8, 8, 8)
    assert (cfg.batch_timeout, cfg.max_retries, cfg.batch_generic_items) == (0.002, 0, True)
    big = fastbatch.batch(max_batch_size=500)(double).processor.config
    assert (big.initial_batch_size, big.min_batch_size) == (500, 50)  # as BatchProcessorConfig does
    bare = fastbatch.batch(double).processor.config
    assert (bare.max_batch_size, bare.batch_timeout) == (200, 0.01)


def test_invalid_config_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        fastbatch.batch(max_batch_size=0)
    with pytest.raises(TypeError, match="max_batch_size"):
        fastbatch.batch(max_batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fastbatch.batch(no_such_field=1)
    with pytest.raises(TypeError, match="callable"):
        fastbatch.batch(max_batch_size=8)(42)  # type: ignore[arg-type]


def test_identity_and_signature() -> None:
    fn = fastbatch.batch(double)
    assert (fn.__name__, fn.__doc__, fn.func) == ("double", "Doubles a batch.", double)
    assert fn.processor.name == "double"
    assert list(inspect.signature(fn).parameters) == ["item", "timeout", "priority", "key"]
    assert fastbatch.batch(name="mlp")(double).processor.name == "mlp"


def test_a_method_in_a_class_body_is_refused() -> None:
    with pytest.raises((TypeError, RuntimeError)) as info:  # RuntimeError wraps it before 3.12
        class Model:
            @fastbatch.batch(max_batch_size=8)
            def predict(self, batch: np.ndarray) -> np.ndarray:
                return batch

    error = info.value if isinstance(info.value, TypeError) else info.value.__cause__
    assert "cannot decorate the method Model.predict" in str(error)

    class Holder:  # a plain function stored on a class is fine
        predict = fastbatch.batch(double)

    assert Holder.predict.func is double


# -- lifecycle ----------------------------------------------------------------------------


def test_lazy_start_stop_and_restart(make_batched: Any) -> None:
    fn = make_batched(double)
    assert not fn.processor.is_running and not workers()
    np.testing.assert_array_equal(fn(row(1)), row(2))
    assert fn.processor.is_running and workers()
    fn.stop()
    assert not fn.processor.is_running and not workers()
    np.testing.assert_array_equal(fn(row(2)), row(4))  # the next call starts it again
    assert fn.processor.is_running
    assert fn.processor.get_stats()["total_processed"] == 2  # statistics carry over


def test_concurrent_first_calls_start_once(make_batched: Any) -> None:
    fn = make_batched(double)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def call(i: int) -> None:
        barrier.wait()
        try:
            assert float(fn(row(i))[0]) == 2.0 * i
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not errors
    assert len([n for n in workers() if n.startswith("fastbatch-worker-")]) == 1


def test_finalizer_shuts_it_down_for_good(make_batched: Any) -> None:
    fn = make_batched(double)
    fn(row(1))
    fn._finalizer()  # what interpreter exit runs
    assert not fn.processor.is_running and not workers()
    with pytest.raises(ProcessorStoppedError, match="shut down"):
        fn(row(1))


def test_garbage_collection_stops_the_processor(backend: Any) -> None:
    fn = fastbatch.batch(enable_health_monitoring=False)(double)
    fn(row(1))
    processor = fn.processor
    assert processor.is_running
    del fn
    gc.collect()
    assert not processor.is_running and not workers()


@pytest.mark.parametrize("health", [False, True])
def test_interpreter_exit_lets_the_last_batch_finish(backend: Any, health: bool) -> None:
    script = textwrap.dedent(f"""
        import time
        import numpy as np, fastbatch

        @fastbatch.batch(max_batch_size=1, enable_health_monitoring={health})
        def model(batch):
            if batch[0, 0] == 2:
                time.sleep(0.2)  # a slow batch, still running when the script ends
            print("ran", batch[0, 0], flush=True)
            return batch

        model(np.ones(3))
        model.submit(np.full(3, 2.0))
    """)
    src = os.path.dirname(os.path.dirname(fastbatch.__file__))
    env = {**os.environ, "PYTHONPATH": src,
           "FASTBATCH_NO_EXTENSIONS": "0" if backend.__name__.endswith("._core") else "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=False,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ran 1.0", "ran 2.0"], done.stdout  # not killed
    assert done.stderr == ""


def test_import_is_light(backend: Any) -> None:
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fastbatch.__file__))}
    code = ("import sys, fastbatch; bad = {'asyncio', 'prometheus_client'} & set(sys.modules); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False, timeout=30)
    assert done.returncode == 0, done.stderr
