"""The pure-Python twin's ``RequestQueue`` (see ``_core.pyi`` for the contract).

It follows CPython's ``Lib/queue.py``: one lock, two conditions over it. Waiting on a
condition releases the GIL, so a blocked consumer or producer costs other threads
nothing. Also the twin's clock, ``monotonic_ns``, which stamps every request.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _messages as msg
from ._errors import QueueClosedError, QueueFullError
from ._twin_args import as_int64, as_seconds, as_timeout

__all__ = ["RequestQueue", "monotonic_ns"]

monotonic_ns = time.monotonic_ns

_monotonic = time.monotonic
_heappush, _heappop = heapq.heappush, heapq.heappop
# Condition.wait() raises OverflowError above this; longer waits are simply re-armed.
_TIMEOUT_MAX = threading.TIMEOUT_MAX
# Beyond int64 nanoseconds (292 years) a linger is as good as none.
_LINGER_FOREVER = 9e9


def _wait(cond: threading.Condition, seconds: float | None) -> None:
    cond.wait(None if seconds is None else min(seconds, _TIMEOUT_MAX))


class RequestQueue:
    """Bounded multi-producer queue of requests, FIFO or by priority.

    A queued request is the record ``(item, future, samples, nbytes, enqueue_ns)``; in
    priority mode it sits in a heap as ``(priority, sequence, record)``: the unique
    sequence keeps equal priorities FIFO and ends every comparison before the record.

    Args:
        capacity: maximum number of queued requests; 0 means unbounded.
        prioritized: order by ``(priority, sequence)`` instead of plain FIFO.

    Raises:
        TypeError: ``capacity`` is not an integer.
        ValueError: ``capacity`` is negative.
    """

    __slots__ = (
        "__weakref__", "_bytes", "_capacity", "_closed", "_idle_waiters", "_lingerers",
        "_lock", "_need_bytes", "_need_samples", "_not_empty", "_not_full", "_paused",
        "_prioritized", "_producers_waiting", "_queue", "_row_dtype", "_row_shape", "_samples",
        "_seq",
    )  # fmt: skip

    def __init__(self, capacity: int = 0, prioritized: bool = False) -> None:
        capacity = as_int64("capacity", capacity)
        if capacity < 0:
            raise ValueError(msg.QUEUE_CAPACITY.format(value=capacity))
        self._capacity = capacity
        self._prioritized = bool(prioritized)
        self._queue: Any = [] if self._prioritized else deque()
        self._seq = self._samples = self._bytes = 0
        self._closed = self._paused = False
        self._lock = threading.Lock()
        # Consumers wait on _not_empty, producers on _not_full (as in Lib/queue.py).
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        # Who waits, so that put/take notify only when a waiter can make progress.
        self._producers_waiting = 0
        self._idle_waiters = 0  # consumers in step 1 (no batch started yet)
        self._lingerers = 0  # consumers in step 3 (batch started, waiting to fill it)
        self._need_samples = 0  # what the (single) lingerer still needs to fill its batch
        self._need_bytes: int | None = None
        # The rows put_row() accepts (None: no schema).
        self._row_dtype: np.dtype[Any] | None = None
        self._row_shape: tuple[int] | None = None

    @property
    def capacity(self) -> int:
        """Maximum number of queued requests; 0 means unbounded."""
        return self._capacity

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @property
    def queued_samples(self) -> int:
        """Sum of ``samples`` over the queued requests."""
        return self._samples

    @property
    def total_puts(self) -> int:
        """Requests accepted by ``put`` since the queue was created."""
        return self._seq

    def __len__(self) -> int:
        """Number of queued requests."""
        return len(self._queue)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "paused" if self._paused else "open"
        return (
            f"<RequestQueue {state} len={len(self._queue)} capacity={self._capacity} "
            f"prioritized={self._prioritized}>"
        )

    def put(
        self, item: object, future: object | None = None, samples: int = 1,
        nbytes: int = 0, priority: int = 0, timeout: float | None = None,
    ) -> None:  # fmt: skip
        """Append a request, waiting while the queue is full.

        Args:
            item, future: opaque objects, held by strong reference until handed out.
            samples, nbytes: the request's size for the budgets of ``take_batch``.
            priority: lower goes first; ignored unless the queue is prioritized.
            timeout: seconds to wait for room; ``None`` waits forever, 0 not at all.

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds.
            QueueClosedError: the queue is closed, or was closed while waiting.
            ValueError: ``samples < 1``, ``nbytes < 0``, or a negative/NaN ``timeout``.
        """
        samples = as_int64("samples", samples)
        if samples < 1:
            raise ValueError(msg.SAMPLES.format(value=samples))
        nbytes = as_int64("nbytes", nbytes)
        if nbytes < 0:
            raise ValueError(msg.NBYTES.format(value=nbytes))
        priority = as_int64("priority", priority)
        self._push(item, future, samples, nbytes, priority, timeout)

    def set_row_schema(self, dtype: npt.DTypeLike, shape: tuple[int]) -> None:
        """Accept 1-D rows of ``shape == (n,)`` and ``dtype`` in :meth:`put_row`.

        Raises:
            ValueError: ``shape`` is not a 1-tuple of an integer ``>= 0``.
            TypeError: ``dtype`` is not a dtype, or ``shape[0]`` not an integer.
        """
        dt = np.dtype(dtype)
        if type(shape) is not tuple or len(shape) != 1:
            raise ValueError(msg.ROW_SCHEMA_SHAPE.format(shape=shape))
        n = as_int64("shape[0]", shape[0])
        if n < 0:
            raise ValueError(msg.ROW_SCHEMA_LENGTH.format(shape=shape))
        self._row_shape, self._row_dtype = (n,), dt

    def put_row(self, item: object, future: object | None = None,
                timeout: float | None = None) -> bool:  # fmt: skip
        """``put(item, future, 1, item.nbytes, 2, timeout)`` if ``item`` is a schema row.

        Returns:
            True when queued; False, queuing nothing, when there is no schema or ``item``
            is not exactly an ndarray, not 1-D, or of another length or dtype.

        Raises:
            As :meth:`put`.
        """
        dtype = self._row_dtype
        it: Any = item
        if dtype is None or it.__class__ is not np.ndarray or it.shape != self._row_shape:
            return False
        if (dt := it.dtype) is not dtype and dt != dtype:
            return False
        self._push(item, future, 1, it.nbytes, 2, timeout)
        return True

    def _push(self, item: object, future: object | None, samples: int, nbytes: int,
              priority: int, timeout: Any) -> None:  # fmt: skip
        # put() and put_row(), arguments validated but for the timeout.
        wait = as_timeout(timeout)
        with self._lock:
            if self._closed:
                raise QueueClosedError(msg.QUEUE_CLOSED)
            queue = self._queue
            if self._capacity and len(queue) >= self._capacity:
                self._wait_for_room(wait, timeout)
            # Stamped under the lock, so FIFO order and timestamp order agree.
            record = (item, future, samples, nbytes, monotonic_ns())
            if self._prioritized:
                _heappush(queue, (priority, self._seq, record))
            else:
                queue.append(record)
            self._seq += 1
            self._samples += samples
            self._bytes += nbytes
            if self._idle_waiters or self._lingerers:
                self._wake_consumers()

    def _wait_for_room(self, wait: float | None, timeout: Any) -> None:
        # Called with the lock held and the queue full; ``wait`` is ``timeout`` validated.
        if wait == 0.0:
            raise QueueFullError(msg.QUEUE_FULL.format(capacity=self._capacity))
        end = None if wait is None else _monotonic() + wait
        queue, capacity = self._queue, self._capacity
        self._producers_waiting += 1
        try:
            while len(queue) >= capacity and not self._closed:
                if end is None:
                    _wait(self._not_full, None)
                else:
                    remaining = end - _monotonic()
                    if remaining <= 0.0:
                        raise QueueFullError(
                            msg.QUEUE_STAYED_FULL.format(capacity=capacity, timeout=timeout))
                    _wait(self._not_full, remaining)
            if self._closed:
                raise QueueClosedError(msg.QUEUE_CLOSED_WHILE_WAITING)
        finally:
            self._producers_waiting -= 1

    def _wake_consumers(self) -> None:
        # Called with the lock held, right after a put. Wake-up economy: a lingering
        # consumer is woken only once it can finish its batch (the need it recorded is
        # met, or the queue is full and producers would stall on it); an idle consumer
        # only when it can take something (not paused).
        if self._lingerers and (
            self._lingerers > 1  # several needs recorded: cheaper to wake them all
            or self._samples >= self._need_samples
            or (self._need_bytes is not None and self._bytes >= self._need_bytes)
            or (self._capacity and len(self._queue) >= self._capacity)
        ):
            self._not_empty.notify_all()
        elif self._idle_waiters and not self._paused:
            if self._lingerers:  # notify() might pick the lingerer, whose need is not met
                self._not_empty.notify_all()
            else:
                self._not_empty.notify()

    def take_batch(
        self, max_samples: int, max_bytes: int = 0, linger: float = 0.0,
        timeout: float | None = None,
    ) -> tuple[list[Any], list[Any], npt.NDArray[np.int64]] | None:  # fmt: skip
        """Remove and return one batch: ``(items, futures, enqueue_ns)`` in queue order.

        Waits (up to ``timeout``) for a request while the queue is empty or paused; takes
        the head request whatever its size; then keeps taking head requests while they fit
        in ``max_samples`` (and ``max_bytes`` when > 0), waiting for more until the head
        request's enqueue time + ``linger`` seconds. ``_core.pyi`` has every rule.

        Returns:
            The batch, or ``None`` when ``timeout`` passed with nothing to take.

        Raises:
            QueueClosedError: the queue is closed and empty.
            ValueError: ``max_samples < 1``, ``max_bytes < 0``, or a negative or NaN
                ``linger`` or ``timeout``.
        """
        max_samples = as_int64("max_samples", max_samples)
        if max_samples < 1:
            raise ValueError(msg.MAX_SAMPLES.format(value=max_samples))
        max_bytes = as_int64("max_bytes", max_bytes)
        if max_bytes < 0:
            raise ValueError(msg.MAX_BYTES.format(value=max_bytes))
        linger_s = as_seconds("linger", linger)
        linger_ns = None if linger_s >= _LINGER_FOREVER else round(linger_s * 1e9)
        timeout = as_timeout(timeout)

        with self._lock:
            queue, prioritized = self._queue, self._prioritized
            # Step 1: wait for something to take (the fast path does not count as a waiter).
            ready = queue and (not self._paused or self._closed)
            if not ready and not self._wait_until_ready(timeout):
                return None
            # Step 2: the head request, always.
            item, future, samples, nbytes, stamp = (
                _heappop(queue)[2] if prioritized else queue.popleft()
            )
            self._samples -= samples
            self._bytes -= nbytes
            items, futures, stamps = [item], [future], [stamp]
            room = max_samples - samples
            byte_room = max_bytes - nbytes if max_bytes else None
            deadline = None if linger_ns is None else stamp + linger_ns
            freed = 0  # slots already announced to waiting producers
            # Step 3: fill up.
            while room > 0 and (byte_room is None or byte_room > 0):
                if queue:
                    record = queue[0][2] if prioritized else queue[0]
                    samples, nbytes = record[2], record[3]
                    if samples > room or (byte_room is not None and nbytes > byte_room):
                        break  # never skip the head: that would reorder the queue
                    if prioritized:
                        _heappop(queue)
                    else:
                        queue.popleft()
                    items.append(record[0])
                    futures.append(record[1])
                    stamps.append(record[4])
                    self._samples -= samples
                    self._bytes -= nbytes
                    room -= samples
                    if byte_room is not None:
                        byte_room -= nbytes
                    continue
                if self._closed:
                    break
                wait_s = None
                if deadline is not None:
                    remaining_ns = deadline - monotonic_ns()
                    if remaining_ns <= 0:
                        break
                    wait_s = remaining_ns / 1e9
                # Producers may be waiting for the slots taken so far: hand them over now,
                # not when the batch is complete.
                if self._producers_waiting and len(items) > freed:
                    self._not_full.notify(len(items) - freed)
                    freed = len(items)
                # The queue is empty here: record what would fill the batch, so that put()
                # wakes us once, when it is there, instead of once per request.
                self._need_samples, self._need_bytes = room, byte_room
                self._lingerers += 1
                try:
                    _wait(self._not_empty, wait_s)
                finally:
                    self._lingerers -= 1
            if self._producers_waiting and len(items) > freed:
                self._not_full.notify(len(items) - freed)
        return items, futures, np.array(stamps, dtype=np.int64)

    def _wait_until_ready(self, timeout: float | None) -> bool:
        # Called with the lock held. True once there is a request to take and the queue
        # is not paused (or is closed: a closed queue is drained even when paused);
        # False when the timeout passed.
        queue = self._queue
        end = None if timeout is None else _monotonic() + timeout
        self._idle_waiters += 1
        try:
            while True:
                if queue and (not self._paused or self._closed):
                    return True
                if self._closed:
                    raise QueueClosedError(msg.QUEUE_CLOSED_AND_EMPTY)
                if end is None:
                    _wait(self._not_empty, None)
                else:
                    remaining = end - _monotonic()
                    if remaining <= 0.0:
                        return False
                    _wait(self._not_empty, remaining)
        finally:
            self._idle_waiters -= 1

    def drain(self) -> tuple[list[Any], list[Any], npt.NDArray[np.int64]]:
        """Remove and return every queued request at once (paused or not, closed or not).

        Returns:
            ``(items, futures, enqueue_ns)`` in queue order.
        """
        with self._lock:
            queue = self._queue
            records = [e[2] for e in sorted(queue)] if self._prioritized else list(queue)
            queue.clear()  # in place: waiting producers watch this very container
            self._samples = self._bytes = 0
            if self._producers_waiting:
                self._not_full.notify_all()
        stamps = np.array([r[4] for r in records], dtype=np.int64)
        return [r[0] for r in records], [r[1] for r in records], stamps

    def pause(self) -> None:
        """Hold ``take_batch`` at step 1 until ``resume()`` or ``close()``."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """Let ``take_batch`` proceed again, waking consumers held by ``pause()``."""
        with self._lock:
            self._paused = False
            self._not_empty.notify_all()

    def close(self) -> None:
        """Refuse further puts and wake every waiting producer and consumer. Idempotent.

        Queued requests stay and can still be taken or drained.
        """
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
