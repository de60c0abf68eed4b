"""``await processor.enqueue_async(item)``: results, a full queue, cancellation, timeouts."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
from typing import Any

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchPriority, ProcessorStoppedError, QueueFullError


def row(tag: float, width: int = 3) -> np.ndarray:
    """A 1-D item whose first value tags it in the batches the function sees."""
    return np.full(width, float(tag))


def test_enqueue_async_is_a_coroutine_function() -> None:
    assert inspect.iscoroutinefunction(fastbatch.BatchProcessor.enqueue_async)


def test_results_rows_and_mini_batches(make_processor: Any) -> None:
    p = make_processor(lambda b: b * 2)

    async def main() -> list[Any]:
        items = [row(i) if i % 3 else np.full((2, 3), float(i)) for i in range(60)]
        results = await asyncio.gather(*(p.enqueue_async(x) for x in items))
        return list(zip(items, results))

    for item, result in asyncio.run(main()):
        np.testing.assert_array_equal(result, item * 2)


def test_many_concurrent_awaits_through_a_small_queue(make_processor: Any) -> None:
    # 500 tasks through a 4-item queue: most of them wait for room, none is refused.
    p = make_processor(lambda b: b + 1, max_queue_size=4, max_batch_size=4)

    async def main() -> list[Any]:
        return await asyncio.gather(*(p.enqueue_async(row(i)) for i in range(500)))

    results = asyncio.run(main())
    assert [float(r[0]) for r in results] == [i + 1.0 for i in range(500)]
    p.stop()
    stats = p.get_stats()
    assert (stats["total_submitted"], stats["total_processed"], stats["total_refused"]) == (500, 500, 0)


def test_errors_of_the_batch_function_are_raised(make_processor: Any) -> None:
    def fail(batch: np.ndarray) -> np.ndarray:
        raise ArithmeticError("bad batch")

    p = make_processor(fail, max_retries=0)
    with pytest.raises(ArithmeticError, match="bad batch"):
        asyncio.run(p.enqueue_async(row(1)))


def test_priority_is_passed_on(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_batch_size=1)
    gate.hold()

    async def main() -> None:
        first = asyncio.create_task(p.enqueue_async(row(0)))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        low = asyncio.create_task(p.enqueue_async(row(1), priority=BatchPriority.LOW))
        high = asyncio.create_task(p.enqueue_async(row(2), priority=BatchPriority.HIGH))
        await asyncio.sleep(0)  # both tasks run up to their first real await: both queued
        gate.release.set()
        await asyncio.gather(first, low, high)

    asyncio.run(main())
    assert gate.seen() == [0.0, 2.0, 1.0]


def test_a_full_queue_does_not_block_the_loop(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_queue_size=1, max_batch_size=1)
    gate.hold()
    first = p.enqueue_predict(row(1))
    assert gate.entered.wait(5)  # the worker holds item 1; the queue is empty
    second = p.enqueue_predict(row(2), timeout=0)  # ... and now full
    # Were the loop blocked by a waiting put, nothing would release the gate: the
    # watchdog does, after which the asserts below fail instead of the test hanging.
    watchdog = threading.Timer(10, gate.release.set)
    watchdog.start()

    async def main() -> tuple[Any, int]:
        waiting = asyncio.create_task(p.enqueue_async(row(3)))
        ticks = 0
        for _ in range(20):  # another task ticks on timers while the put waits for room
            await asyncio.sleep(0.001)
            assert not waiting.done(), "the enqueue finished although the queue stayed full"
            ticks += 1
        stats = p.get_stats()
        assert (stats["total_submitted"], stats["total_refused"]) == (2, 0)
        gate.release.set()
        return await waiting, ticks

    try:
        result, ticks = asyncio.run(main())
    finally:
        watchdog.cancel()
    assert ticks == 20
    np.testing.assert_array_equal(result, row(6))
    np.testing.assert_array_equal(first.result(5), row(2))
    np.testing.assert_array_equal(second.result(5), row(4))


def test_cancel_while_queued_skips_the_item(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_batch_size=1)
    gate.hold()

    async def main() -> tuple[Any, Any]:
        first = asyncio.create_task(p.enqueue_async(row(1)))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        doomed = asyncio.create_task(p.enqueue_async(row(2)))
        await asyncio.sleep(0)  # `doomed` runs until it awaits its result: it is queued
        assert p.get_stats()["total_submitted"] == 2
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        gate.release.set()
        # FIFO: by the time item 3 has its result, the worker has passed item 2.
        return await first, await p.enqueue_async(row(3))

    a, c = asyncio.run(main())
    np.testing.assert_array_equal(a, row(2))
    np.testing.assert_array_equal(c, row(6))
    assert gate.seen() == [1.0, 3.0]  # the batch function never saw item 2
    p.stop()
    stats = p.get_stats()
    assert (stats["total_cancelled"], stats["total_processed"], stats["total_failed"]) == (1, 2, 0)


def test_cancel_while_waiting_for_room_queues_nothing(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_queue_size=1, max_batch_size=1)
    gate.hold()
    first = p.enqueue_predict(row(1))
    assert gate.entered.wait(5)
    second = p.enqueue_predict(row(2), timeout=0)

    async def main() -> Any:
        doomed = asyncio.create_task(p.enqueue_async(row(3)))
        await asyncio.sleep(0.005)  # not for ordering: lets it go through a few retries
        assert not doomed.done()
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        gate.release.set()
        return await p.enqueue_async(row(4))

    np.testing.assert_array_equal(asyncio.run(main()), row(8))
    first.result(5), second.result(5)
    p.stop()
    assert gate.seen() == [1.0, 2.0, 4.0]
    stats = p.get_stats()
    assert (stats["total_submitted"], stats["total_cancelled"], stats["total_refused"]) == (3, 0, 0)


def test_cancel_after_the_batch_started_drops_the_result(
        make_processor: Any, gate: Any, caplog: pytest.LogCaptureFixture) -> None:
    p = make_processor(gate, max_batch_size=1)
    gate.hold()

    async def main() -> None:
        running = asyncio.create_task(p.enqueue_async(row(1)))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        gate.release.set()
        await p.enqueue_async(row(2))  # the dropped result has been set by now

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    p.stop()
    assert gate.seen() == [1.0, 2.0]
    assert p.get_stats()["total_processed"] == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_wait_for_on_the_result_cancels_the_item(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_batch_size=1)
    gate.hold()

    async def main() -> None:
        first = asyncio.create_task(p.enqueue_async(row(1)))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(p.enqueue_async(row(2)), 0.01)
        gate.release.set()
        await first
        await p.enqueue_async(row(3))

    asyncio.run(main())
    p.stop()
    assert gate.seen() == [1.0, 3.0]
    assert p.get_stats()["total_cancelled"] == 1


def test_timeout_for_room(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_queue_size=1, max_batch_size=1)
    gate.hold()
    p.enqueue_predict(row(1))
    assert gate.entered.wait(5)
    p.enqueue_predict(row(2), timeout=0)

    async def main() -> None:
        with pytest.raises(QueueFullError, match="stayed full"):
            await p.enqueue_async(row(3), timeout=0.02)
        assert p.get_stats()["total_refused"] == 1  # counted once, not per retry
        with pytest.raises(QueueFullError):
            await p.enqueue_async(row(4), timeout=0)
        assert p.get_stats()["total_refused"] == 2

    asyncio.run(main())
    gate.release.set()
    p.stop()
    assert gate.seen() == [1.0, 2.0]
    assert p.get_stats()["total_submitted"] == 2


@pytest.mark.parametrize("timeout", [-1, math.nan])
def test_bad_timeout(make_processor: Any, timeout: float) -> None:
    p = make_processor(lambda b: b)
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(p.enqueue_async(row(1), timeout=timeout))
    assert p.get_stats()["total_submitted"] == 0


def test_bad_item_is_refused_at_the_call(make_processor: Any) -> None:
    p = make_processor(lambda b: b)

    async def main() -> None:
        await p.enqueue_async(row(1))
        with pytest.raises(ValueError, match="0-d array"):
            await p.enqueue_async(np.array(1.0))
        with pytest.raises(TypeError, match="key must be hashable"):
            await p.enqueue_async(row(1), key=["not", "hashable"])
        assert (await p.enqueue_async(row(1, width=4))).shape == (4,)  # another lane, no error

    asyncio.run(main())


def test_not_running(make_processor: Any) -> None:
    p = make_processor()
    with pytest.raises(ProcessorStoppedError):
        asyncio.run(p.enqueue_async(row(1)))


def test_stop_while_waiting_for_room(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_queue_size=1, max_batch_size=1)
    gate.hold()
    p.enqueue_predict(row(1))
    assert gate.entered.wait(5)
    p.enqueue_predict(row(2), timeout=0)
    stopper = threading.Thread(target=p.stop, name="test-stop")

    async def main() -> None:
        waiting = asyncio.create_task(p.enqueue_async(row(3)))
        await asyncio.sleep(0)
        stopper.start()  # closes intake at once, then drains what is queued
        while not p.get_stats()["is_stopping"]:  # intake closed before room appears
            await asyncio.sleep(0.001)
        gate.release.set()
        with pytest.raises(ProcessorStoppedError):
            await waiting

    asyncio.run(main())
    stopper.join(5)
    assert gate.seen() == [1.0, 2.0]


def test_deadline_expires_a_queued_item(make_processor: Any, gate: Any) -> None:
    p = make_processor(gate, max_batch_size=1)
    gate.hold()

    async def main() -> None:
        first = asyncio.create_task(p.enqueue_async(row(1)))
        assert await asyncio.to_thread(gate.entered.wait, 5)
        with pytest.raises(fastbatch.ItemExpiredError):
            await p.enqueue_async(row(2), deadline=0.01)  # the reaper fails it in the queue
        gate.release.set()
        await first
        await p.enqueue_async(row(3), deadline=5)

    asyncio.run(main())
    assert gate.seen() == [1.0, 3.0]


def test_deadline_counts_from_queueing_after_a_wait_for_room(make_processor: Any) -> None:
    hold = {1: threading.Event(), 2: threading.Event()}
    entered = {1: threading.Event(), 2: threading.Event()}

    def func(batch: np.ndarray) -> np.ndarray:
        tag = int(batch[0, 0])
        if tag in hold:
            entered[tag].set()
            assert hold[tag].wait(30)
        return batch

    p = make_processor(func, max_queue_size=1, max_batch_size=1)
    p.enqueue_predict(row(1))
    assert entered[1].wait(5)
    p.enqueue_predict(row(2), timeout=0)  # the queue is full

    async def main() -> None:
        waiting = asyncio.create_task(p.enqueue_async(row(3), deadline=0.02))
        await asyncio.sleep(0)  # it waits for room
        hold[1].set()  # the worker moves on to item 2 and holds there: item 3 gets queued...
        assert await asyncio.to_thread(entered[2].wait, 5)
        with pytest.raises(fastbatch.ItemExpiredError):  # ... and expires there
            await asyncio.wait_for(waiting, 5)

    try:
        asyncio.run(main())
    finally:
        for event in hold.values():
            event.set()
