"""asyncio intake: queue an item and await its result without ever blocking the event loop.

The queue's blocking ``put`` waits on a condition variable, which would stall every task
of the loop. So the coroutine only ever makes non-blocking puts, and while the queue is
full it waits with ``asyncio.sleep`` (short, growing back-off) before trying again.

Why polling rather than a blocking put in a worker thread: a thread cannot be cancelled.
If the awaiting task were cancelled while the thread waited for room, the thread would
still put the item later — a stray item the batch function might see — and each waiting
coroutine would hold one executor thread (with ``timeout=None``, possibly for ever).
With polling, nothing is queued until a put succeeds, and cancelling the task before
that leaves no trace. The price: a thread blocked in ``enqueue`` is woken by the queue
itself and so gets freed room before a polling coroutine does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, TypeVar

from ._config import BatchPriority
from ._errors import OverloadedError, QueueFullError, TooManyLanesError
from ._future import BatchFuture
from .items._intake import DEFAULT_PRIORITY, check_timeout

if TYPE_CHECKING:
    from ._processor import BatchProcessor

R = TypeVar("R")

# Back-off while the queue is full: room appears when the worker takes a batch, so the
# cap stays near a typical batch time; the first retries are quick for short bursts.
_FIRST_DELAY_S = 0.0005
_MAX_DELAY_S = 0.01
# Refusals that room in the queue would not cure: raised at once, as enqueue() raises them
# (shed for a latency target; a new signature while every lane holds items).
_NOT_FOR_ROOM = (OverloadedError, TooManyLanesError)


async def submit_async(processor: BatchProcessor[Any, R], item: Any, *,
                       priority: BatchPriority | int = DEFAULT_PRIORITY,
                       timeout: float | None = None,
                       deadline: float | None = None, key: Hashable | None = None) -> BatchFuture[R]:
    """Queue ``item`` without blocking the event loop and return its future once queued.

    Args:
        processor: a running ``BatchProcessor``.
        item: as for ``BatchProcessor.enqueue_predict``.
        priority: a ``BatchPriority``.
        timeout: seconds to wait for room in a full queue; ``None`` waits as long as it
            takes, 0 not at all.
        deadline: seconds the item may then wait in the queue (see ``enqueue``).
        key: the item's lane key (see ``enqueue``).

    Returns:
        The item's future (never one failed with ``QueueFullError``).

    Raises:
        QueueFullError: the queue stayed full for ``timeout`` seconds (counted once in
            ``total_refused``, as a blocking ``enqueue`` would be).
        OverloadedError, TooManyLanesError: at once, as from ``enqueue``: waiting for
            room in the queue would not change the answer.
        ProcessorStoppedError: the processor is not running, or stopped while waiting.
        TypeError, ValueError, BatchDtypeError: a bad item, timeout, priority or key.
        asyncio.CancelledError: the task was cancelled; the item was not queued.
    """
    timeout = check_timeout(timeout)
    intake = processor._intake
    future: BatchFuture[R] = BatchFuture(intake.run)
    # First attempt straight away: the common case costs one put and no await.
    if timeout == 0 or intake.has_room():
        try:
            intake.put(item, future, 0, priority, deadline, key)
            return future
        except _NOT_FOR_ROOM:
            raise
        except QueueFullError:
            if timeout == 0:
                raise
    loop = asyncio.get_running_loop()
    give_up = None if timeout is None else loop.time() + timeout
    delay = _FIRST_DELAY_S
    while True:
        if give_up is not None:
            remaining = give_up - loop.time()
            if remaining <= 0:
                try:
                    # One last try; a refusal here is the one total_refused counts.
                    intake.put(item, future, 0, priority, deadline, key)
                except _NOT_FOR_ROOM:
                    raise
                except QueueFullError:
                    raise QueueFullError(
                        f"the queue stayed full ({processor.config.max_queue_size} items) "
                        f"for {timeout} s") from None
                return future
            delay = min(delay, remaining)
        await asyncio.sleep(delay)
        delay = min(delay * 2, _MAX_DELAY_S)
        # Only try when there is room, so that waiting does not count as refusals; a
        # producer that takes the room between the check and the put costs a retry.
        if intake.has_room():
            try:
                intake.put(item, future, 0, priority, deadline, key)
                return future
            except _NOT_FOR_ROOM:
                raise
            except QueueFullError:
                continue


async def result_async(future: BatchFuture[R]) -> R:
    """Await ``future`` on the running loop; cancelling the awaiting task cancels it.

    A cancelled future is skipped before its batch is formed; a future whose batch
    already runs cannot be cancelled, and its result is dropped.

    Raises:
        BaseException: whatever the item failed with.
        asyncio.CancelledError: the task was cancelled.
    """
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        # wrap_future propagates the cancellation too; saying it here keeps the
        # guarantee independent of asyncio's internals (and of the loop being alive).
        future.cancel()
        raise


async def enqueue_async(processor: BatchProcessor[Any, R], item: Any, *,
                        priority: BatchPriority | int = DEFAULT_PRIORITY,
                        timeout: float | None = None, deadline: float | None = None,
                        key: Hashable | None = None) -> R:
    """Queue ``item`` and await its result, never blocking the event loop.

    Args:
        processor: a running ``BatchProcessor``.
        item: as for ``BatchProcessor.enqueue_predict``.
        priority: a ``BatchPriority``.
        timeout: seconds to wait for room in a full queue (not for the result: wrap the
            call in ``asyncio.wait_for`` for that, which cancels the item on expiry).
        deadline: seconds the item may wait in the queue once queued; past it the
            await raises ``ItemExpiredError``.
        key: the item's lane key (see ``BatchProcessor.enqueue``).

    Returns:
        The item's result: its rows of the batch result.

    Raises:
        QueueFullError: the queue stayed full for ``timeout`` seconds.
        ProcessorStoppedError: the processor is not running, or stopped before the item
            was processed.
        TypeError, ValueError, BatchDtypeError: a bad item, timeout, priority or key.
        asyncio.CancelledError: the task was cancelled; the item is skipped unless its
            batch had already started.
        BaseException: whatever the batch function raised for the item's batch.
    """
    future = await submit_async(processor, item, priority=priority, timeout=timeout, deadline=deadline,
                                key=key)
    return await result_async(future)
