"""Failures: retries, wrong results, bad items, full queues, and every shutdown path."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading

import numpy as np
import pytest

import fastbatch


class Flaky:
    """Fails the first ``failures`` calls, then doubles."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls <= self.failures:
            raise ArithmeticError(f"attempt {self.calls} failed")
        return batch * 2


def test_retries_then_success(make_processor):
    func = Flaky(2)
    processor = make_processor(func, max_retries=2)
    assert processor.enqueue_predict(np.array([1.0])).result(timeout=5)[0] == 2.0
    assert func.calls == 3
    stats = processor.get_stats()
    assert stats["batch_errors"] == 2 and stats["total_failed"] == 0 and stats["error_rate"] == 0.0


def test_retries_exhausted_fail_with_original_error(make_processor):
    func = Flaky(100)
    processor = make_processor(func, max_retries=2, max_batch_size=4, initial_batch_size=4,
                               batch_timeout=1.0, processing_strategy="fixed", isolate_failures=False)
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(4)]
    for f in futures:
        with pytest.raises(ArithmeticError, match="attempt 3 failed") as info:
            f.result(timeout=5)
        assert any("after 3 attempt(s)" in note for note in getattr(info.value, "__notes__", []))
    assert func.calls == 3
    stats = processor.get_stats()
    assert stats["total_failed"] == 4 and stats["error_rate"] == 1.0


def test_retry_delay_is_honoured(make_processor):
    times = []

    def func(batch):
        times.append(fastbatch.core._backend.monotonic_ns())
        raise KeyError("no")

    processor = make_processor(func, max_retries=2, retry_delay=0.05)
    with pytest.raises(KeyError):
        processor.enqueue_predict(np.array([1.0])).result(timeout=5)
    assert min(np.diff(times)) / 1e9 >= 0.045


def test_failure_shrinks_batch_size(make_processor):
    processor = make_processor(Flaky(100), max_retries=0, max_batch_size=64, initial_batch_size=64,
                               min_batch_size=10, processing_strategy="fixed")
    with pytest.raises(ArithmeticError):
        processor.enqueue_predict(np.array([1.0])).result(timeout=5)
    assert processor.get_stats()["current_batch_size"] == 32


def test_failure_keeps_size_when_asked(make_processor):
    processor = make_processor(Flaky(100), max_retries=0, max_batch_size=64, initial_batch_size=64,
                               reduce_batch_on_failure=False, processing_strategy="fixed")
    with pytest.raises(ArithmeticError):
        processor.enqueue_predict(np.array([1.0])).result(timeout=5)
    assert processor.get_stats()["current_batch_size"] == 64


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_base_exception_is_wrapped_never_reraised_in_callers(make_processor, exc):
    calls = []

    def func(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise exc
        return batch

    processor = make_processor(func, max_retries=3, max_batch_size=2, initial_batch_size=2,
                               batch_timeout=5.0, processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(2)]
    for f in futures:
        with pytest.raises(fastbatch.BatchFunctionExit, match=type(exc).__name__) as info:
            f.result(timeout=5)
        assert info.value.__cause__ is exc
    assert processor.enqueue_predict(np.array([2.0])).result(timeout=5)[0] == 2.0
    assert calls == [2, 1]  # not retried, not bisected; the worker lives on


@pytest.mark.parametrize("result, message", [
    (lambda b: b[:-1], r"returned 2 results for a batch of 3 samples"),
    (lambda b: 7, r"returned int, expected a sequence of 3 results"),
])
def test_wrong_result_fails_the_batch(make_processor, result, message):
    processor = make_processor(result, max_batch_size=3, initial_batch_size=3, batch_timeout=1.0,
                               processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(3)]
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError, match=message):
            f.result(timeout=5)
    # The worker survives and keeps going.
    ok = make_processor(lambda b: b)
    assert ok.enqueue_predict(np.array([1.0])).result(timeout=5)[0] == 1.0


@pytest.mark.parametrize("item, error, message", [
    (np.array(3.0), ValueError, r"0-d array"),
    (np.zeros((0, 10)), ValueError, r"mini-batch of 0 samples"),
    (np.array([None] * 10, dtype=object), fastbatch.BatchDtypeError, r"dtype object"),
    (None, TypeError, r"item is None"),
])
def test_bad_items_refused_at_enqueue_good_ones_unharmed(make_processor, item, error, message):
    processor = make_processor(lambda b: b + 1, max_batch_size=8)
    first = processor.enqueue_predict(np.zeros(10))
    with pytest.raises(error, match=message):
        processor.enqueue_predict(item)
    with pytest.raises(error, match=message):
        processor.enqueue(item)
    after = processor.enqueue_predict(np.ones(10))
    np.testing.assert_array_equal(first.result(timeout=5), np.ones(10))
    np.testing.assert_array_equal(after.result(timeout=5), np.full(10, 2.0))


def test_item_over_byte_budget_refused(make_processor):
    processor = make_processor(lambda b: b, max_batch_memory_mb=0.001)
    with pytest.raises(ValueError, match=r"item of 8000 bytes exceeds the batch byte budget"):
        processor.enqueue_predict(np.zeros(1000))


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_bad_timeouts_refused(make_processor, timeout):
    processor = make_processor(lambda b: b)
    with pytest.raises(ValueError):
        processor.enqueue(np.zeros(2), timeout=timeout)
    with pytest.raises(ValueError):
        processor.stop(timeout=timeout)


@pytest.mark.parametrize("priority", [5, -1, True, "HIGH", 1.0, None])
def test_bad_priorities_refused(make_processor, priority):
    processor = make_processor(lambda b: b)
    with pytest.raises(ValueError, match="priority must be a BatchPriority"):
        processor.enqueue_predict(np.zeros(2), priority=priority)


def test_queue_full(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_queue_size=2, max_batch_size=1, initial_batch_size=1,
                               batch_timeout=0.0)
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    queued = [processor.enqueue_predict(np.zeros(1)) for _ in range(2)]
    with pytest.raises(fastbatch.QueueFullError) as info:
        processor.enqueue(np.zeros(1), timeout=0.05)
    assert isinstance(info.value, queue.Full)
    refused = processor.enqueue_predict(np.zeros(1), timeout=0)
    with pytest.raises(fastbatch.QueueFullError):
        refused.result(timeout=0)
    assert processor.get_stats()["total_refused"] == 2
    gate.release.set()
    concurrent.futures.wait(queued, timeout=5)
    assert all(f.exception() is None for f in queued)


def test_queue_full_raises_when_configured(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_queue_size=1, max_batch_size=1, initial_batch_size=1,
                               batch_timeout=0.0, raise_on_queue_full=True)
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    processor.enqueue_predict(np.zeros(1))
    with pytest.raises(fastbatch.QueueFullError):
        processor.enqueue_predict(np.zeros(1), timeout=0)
    gate.release.set()


def test_blocked_producer_released_when_room_appears(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_queue_size=1, max_batch_size=1, initial_batch_size=1,
                               batch_timeout=0.0)
    processor.enqueue_predict(np.zeros(1))
    assert gate.entered.wait(5)
    processor.enqueue_predict(np.zeros(1))  # fills the queue
    result = []
    producer = threading.Thread(target=lambda: result.append(processor.enqueue_predict(np.ones(1))))
    producer.start()
    gate.release.set()  # the worker drains, room appears, the producer gets in
    producer.join(10)
    assert not producer.is_alive()
    assert result[0].result(timeout=5)[0] == 2.0


def test_enqueue_before_start_refused(make_processor):
    processor = make_processor()
    with pytest.raises(fastbatch.ProcessorStoppedError, match="call start"):
        processor.enqueue_predict(np.zeros(1))


def test_stop_drains_the_queue(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=5, initial_batch_size=5, batch_timeout=0.0)
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(23)]
    assert gate.entered.wait(5)
    stopper = threading.Thread(target=processor.stop)
    stopper.start()
    assert _poll(lambda: processor.get_stats()["is_stopping"])
    with pytest.raises(fastbatch.ProcessorStoppedError, match="accepts no more items"):
        processor.enqueue(np.zeros(1))  # intake stops at once...
    gate.release.set()  # ...but what was queued is processed
    stopper.join(10)
    assert not stopper.is_alive()
    assert [f.result(timeout=0)[0] for f in futures] == [2.0 * i for i in range(23)]
    assert processor.get_stats()["is_running"] is False


def _poll(condition, timeout=5.0):
    """Wait for a condition another thread makes true; False if it never does."""
    event = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if condition():
            return True
        event.wait(0.001)
    return False


def test_stop_timeout_fails_leftovers_and_running_batch(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=2, initial_batch_size=2, batch_timeout=0.0,
                               processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(7)]
    assert gate.entered.wait(5)
    processor.stop(timeout=0.05)  # the gate stays shut: nothing can finish in time
    for f in futures:
        with pytest.raises(fastbatch.ProcessorStoppedError, match="stopped"):
            f.result(timeout=0)
    gate.release.set()  # the abandoned batch returns; its futures stay failed
    stats = processor.get_stats()
    assert stats["is_running"] is False


def test_stop_is_idempotent_and_safe_from_many_threads(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=4)
    futures = [processor.enqueue_predict(np.zeros(1)) for _ in range(100)]
    barrier = threading.Barrier(8)
    errors = []

    def stop():
        barrier.wait()
        try:
            processor.stop(timeout=5)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=stop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and not any(t.is_alive() for t in threads)
    assert all(f.done() for f in futures)
    processor.stop()
    processor.stop(timeout=0)


def test_stop_from_inside_the_batch_function(make_processor):
    holder = {}

    def func(batch):
        holder["p"].stop()
        return batch * 2

    processor = make_processor(max_batch_size=1, initial_batch_size=1)
    holder["p"] = processor
    processor.start(func)
    assert processor.enqueue_predict(np.array([3.0])).result(timeout=5)[0] == 6.0
    processor.stop(timeout=5)  # waits for the worker-initiated stop to finish
    assert processor.get_stats()["is_running"] is False
    with pytest.raises(fastbatch.ProcessorStoppedError):
        processor.enqueue(np.array([1.0]))


def test_stop_from_a_done_callback(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=1, initial_batch_size=1)
    future = processor.enqueue_predict(np.array([1.0]))
    stopped = threading.Event()
    future.add_done_callback(lambda f: (processor.stop(), stopped.set()))
    assert stopped.wait(5)
    processor.stop(timeout=5)
    assert not processor.is_running


def test_done_callback_that_raises_is_logged_and_worker_lives(make_processor, caplog):
    processor = make_processor(lambda b: b)
    future = processor.enqueue_predict(np.array([1.0]))
    future.add_done_callback(lambda f: 1 / 0)
    future.result(timeout=5)
    assert processor.enqueue_predict(np.array([2.0])).result(timeout=5)[0] == 2.0


def test_enqueue_errors_logged_when_no_future(make_processor, caplog):
    done = threading.Event()

    def func(batch):
        done.set()
        raise RuntimeError("boom without a future")

    processor = make_processor(func, max_retries=0)
    with caplog.at_level(logging.ERROR, logger="fastbatch"):
        processor.enqueue(np.array([1.0]))
        assert done.wait(5)
        processor.stop(timeout=5)
    assert "boom without a future" in caplog.text
    assert processor.get_stats()["total_failed"] == 1


def test_failure_isolation_fails_only_the_poisonous_item(make_processor, gate):
    calls = []

    def func(batch):
        calls.append(len(batch))
        if (batch[:, 0] == 13).any():
            raise ZeroDivisionError("poison")
        return batch * 2

    gate.func = func
    gate.hold()
    processor = make_processor(gate, max_retries=1, max_batch_size=32, initial_batch_size=32,
                               batch_timeout=5.0, processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(32)]
    gate.release.set()
    concurrent.futures.wait(futures, timeout=10)
    for i, f in enumerate(futures):
        if i == 13:
            with pytest.raises(ZeroDivisionError, match="poison") as info:
                f.result()
            assert any("narrowed this failure down to 1 of the batch's 32" in n for n in info.value.__notes__)
        else:
            assert f.result()[0] == 2.0 * i
    # 2 attempts of the whole batch, then 2 calls per level of the bisection.
    assert calls[:2] == [32, 32] and len(calls) == 2 + 2 * 5
    stats = processor.get_stats()
    assert stats["total_failed"] == 1 and stats["total_processed"] == 31


def test_failure_isolation_respects_its_budget(make_processor):
    calls = []

    def func(batch):
        calls.append(len(batch))
        # A different exception type on each side of every split: isolation goes on.
        raise (ValueError if int(batch[0, 0]) // len(batch) % 2 == 0 else KeyError)(f"fails from {batch[0, 0]}")

    processor = make_processor(func, max_retries=0, max_batch_size=16, initial_batch_size=16,
                               batch_timeout=5.0, processing_strategy="fixed", isolation_budget=4)
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(16)]
    concurrent.futures.wait(futures, timeout=10)
    assert all(isinstance(f.exception(), (ValueError, KeyError)) for f in futures)
    assert len(calls) == 1 + 4


def test_a_function_that_fails_every_call_is_not_bisected(make_processor):
    calls = []

    def dead_backend(batch):
        calls.append(len(batch))
        raise ConnectionError("the model server is down")

    processor = make_processor(dead_backend, max_retries=0, max_batch_size=32, initial_batch_size=32,
                               batch_timeout=5.0, processing_strategy="fixed")
    futures = [processor.enqueue_predict(np.array([float(i)])) for i in range(32)]
    concurrent.futures.wait(futures, timeout=10)
    # The whole batch, then both halves three times down one path: same failure, stop.
    assert calls == [32, 16, 16, 8, 8, 4, 4]
    exc = futures[0].exception()
    assert isinstance(exc, ConnectionError)
    assert all(f.exception() is exc for f in futures)
    notes = "\n".join(exc.__notes__)
    assert "the batch function fails whatever the items" in notes
    assert "narrowed" not in notes
    assert processor.get_stats()["total_failed"] == 32


def test_one_exception_instance_raised_every_time_keeps_one_set_of_notes(make_processor):
    shared = ValueError("always the same instance")

    def func(batch):
        raise shared

    processor = make_processor(func, max_retries=1, retry_delay=0.0, max_batch_size=1,
                               initial_batch_size=1, processing_strategy="fixed")
    for i in range(3):
        assert processor.enqueue_predict(np.array([float(i)])).exception(timeout=5) is shared
    assert shared.__notes__ == ["fastbatch: a batch of 1 samples failed after 2 attempt(s)"]


def test_failure_isolation_for_generic_lists(make_processor):
    def func(items):
        if "bad" in items:
            raise KeyError("bad item")
        return [s.upper() for s in items]

    processor = make_processor(func, batch_generic_items=True, max_batch_size=8, initial_batch_size=8,
                               batch_timeout=5.0, processing_strategy="fixed", max_retries=0)
    words = ["a", "b", "bad", "c", "d", "e", "f", "g"]
    futures = [processor.enqueue_predict(w) for w in words]
    concurrent.futures.wait(futures, timeout=10)
    assert [f.exception() is not None for f in futures] == [w == "bad" for w in words]
    assert futures[0].result() == "A"


def test_deadline_expires_queued_items_promptly(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, initial_batch_size=1, batch_timeout=0.0)
    blocker = processor.enqueue_predict(np.array([0.0]))
    assert gate.entered.wait(5)  # the worker is held for as long as the test likes
    t0 = fastbatch.core._backend.monotonic_ns()
    late = processor.enqueue_predict(np.array([1.0]), deadline=0.05)
    kept = processor.enqueue_predict(np.array([2.0]), deadline=30)
    with pytest.raises(fastbatch.ItemExpiredError, match="deadline of 0.05s") as info:
        late.result(timeout=5)  # fails while the worker is still held: promptly
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, fastbatch.ItemTimeoutError)
    assert (fastbatch.core._backend.monotonic_ns() - t0) / 1e9 < 2
    stats = processor.get_stats()
    assert stats["total_expired"] == 1 and stats["queue_size"] == 1  # only `kept` is waiting
    gate.release.set()
    assert kept.result(timeout=5)[0] == 4.0 and blocker.result(timeout=5)[0] == 0.0
    assert [b[0, 0] for b in gate.batches] == [0.0, 2.0]  # the expired item never ran
    stats = processor.get_stats()
    assert stats["total_submitted"] == stats["total_processed"] + stats["total_expired"]


def test_default_deadline_and_enqueue_without_future(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, initial_batch_size=1, batch_timeout=0.0,
                               default_deadline=0.02)
    processor.enqueue(np.array([0.0]), deadline=30)
    assert gate.entered.wait(5)
    doomed = processor.enqueue_predict(np.array([1.0]))
    processor.enqueue(np.array([2.0]))
    with pytest.raises(fastbatch.ItemExpiredError):
        doomed.result(timeout=5)
    assert _poll(lambda: processor.get_stats()["total_expired"] == 2)
    gate.release.set()
    processor.stop(timeout=5)
    assert [b[0, 0] for b in gate.batches] == [0.0]


@pytest.mark.parametrize("deadline, error", [(0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                             (float("inf"), ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_deadlines_refused(make_processor, deadline, error):
    processor = make_processor(lambda b: b)
    with pytest.raises(error, match="deadline must be None or a number of seconds > 0"):
        processor.enqueue_predict(np.zeros(1), deadline=deadline)


def test_oversized_first_row_fixes_no_schema_and_later_ones_are_refused_too(make_processor):
    processor = make_processor(lambda b: b, max_batch_memory_mb=0.001)  # 1048 bytes
    for _ in range(3):
        with pytest.raises(ValueError, match="exceeds the batch byte budget"):
            processor.enqueue_predict(np.zeros(1000))
        with pytest.raises(ValueError, match="exceeds the batch byte budget"):
            processor.enqueue(np.zeros(1000))
    assert processor.enqueue_predict(np.zeros(10)).result(timeout=5).shape == (10,)
    assert processor.get_stats()["total_submitted"] == 1


@pytest.mark.parametrize("bad", [lambda items: {str(i): i for i in range(len(items))},
                                 lambda items: set(range(len(items))),
                                 lambda items: "x" * len(items)])
def test_a_list_result_that_is_not_a_sequence_fails_once_without_isolation(make_processor, bad):
    calls = []

    def func(items):
        calls.append(len(items))
        return bad(items)

    processor = make_processor(func, batch_generic_items=True, max_batch_size=8, initial_batch_size=8,
                               batch_timeout=5.0, processing_strategy="fixed", max_retries=0)
    futures = [processor.enqueue_predict(f"item-{i}") for i in range(8)]
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError, match="cannot be split by item"):
            f.result(timeout=5)
    assert calls == [8]  # the function's bug: no bisection


@pytest.mark.parametrize("step", ["plan", "taken"])
def test_a_failing_batching_policy_is_dropped_and_loses_no_item(make_processor, caplog, step):
    processor = make_processor(lambda b: b * 2, max_batch_size=4)  # ADAPTIVE: the measured policy
    policy = processor.scheduler.policy
    assert policy is not None

    def bug(*args, **kwargs):
        raise RuntimeError("a bug in the policy")

    if step == "plan":
        policy.plan = bug
    else:
        policy.plan = lambda *args, **kwargs: (0.0, 0)
        policy.taken = bug  # the batch's items are out of the queue when it fails
    policy.observe = lambda *args, **kwargs: None  # stays active, whatever the batches cost
    policy.active = True
    with caplog.at_level("ERROR", logger="fastbatch"):
        for i in range(3):  # each a batch of its own: the policy is asked before each
            np.testing.assert_array_equal(processor.enqueue_predict(np.full(2, float(i))).result(5),
                                          np.full(2, 2.0 * i))
    assert processor.scheduler.policy is None
    assert "the batching policy failed; the classic rule" in caplog.text


def test_a_retried_batch_does_not_teach_the_scheduler_what_a_batch_costs(make_processor):
    # The retry waits retry_delay: 0.3 s that are a failure's, not a batch's cost.
    failed_once = threading.Event()

    def flaky(batch):
        if not failed_once.is_set():
            failed_once.set()
            raise ConnectionError("the backend blinked")
        threading.Event().wait(0.002)  # a model of 2 ms: slow enough for the policy to measure
        return batch * 2

    processor = make_processor(flaky, max_batch_size=4, max_retries=1, retry_delay=0.3,
                               processing_strategy="adaptive")
    cost = processor.scheduler.policy.cost
    for _ in range(2):
        np.testing.assert_array_equal(processor.enqueue_predict(np.ones(2)).result(5), np.full(2, 2.0))
    processor.stop()  # the worker has reported both batches
    assert cost._count == 1  # the clean batch only
    assert cost.fixed < 0.1  # 2 ms, not the 0.3 s retry
