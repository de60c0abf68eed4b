"""Pure-Python twin of :mod:`fastbatch._core`.

Same classes, same behaviour, same exceptions and messages as the compiled core; the
contract is written in ``_core.pyi``. This module is the readable reference, the oracle
the compiled core is tested against, and the fallback when the extension is missing
(``fastbatch._backend`` picks one of the two).

The queue follows CPython's ``Lib/queue.py``: one lock, two conditions over it. Waiting
on a condition releases the GIL, so a blocked consumer or producer costs other threads
nothing.
"""

from __future__ import annotations

import heapq
import math
import operator
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import (
    BatchDtypeError,
    BatchShapeError,
    QueueClosedError,
    QueueFullError,
    ResultMismatchError,
)

__all__ = ["BatchAssembler", "RequestQueue", "StatsWindow", "monotonic_ns"]

monotonic_ns = time.monotonic_ns

_monotonic = time.monotonic
_heappush, _heappop = heapq.heappush, heapq.heappop
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_NAN = math.nan
# Condition.wait() raises OverflowError above this; longer waits are simply re-armed.
_TIMEOUT_MAX = threading.TIMEOUT_MAX
# Beyond int64 nanoseconds (292 years) a linger is as good as none.
_LINGER_FOREVER = 9e9


def _as_float(name: str, value: Any) -> float:
    # float() would also parse strings; the compiled core (a C double) refuses them.
    if isinstance(value, float):
        return value
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    try:
        return float(value)
    except TypeError:
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}") from None


def _int64(name: str, value: Any) -> int:
    # The compiled core stores these as int64: same range, same errors.
    if type(value) is not int:
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise OverflowError(f"{name} is out of range: {value}")
    return int(value)


def _seconds(name: str, value: Any) -> float:
    seconds = _as_float(name, value)
    if not seconds >= 0.0:  # written this way round so that NaN fails too
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return seconds


def _timeout(value: Any) -> float | None:
    # Stdlib semantics: None (and inf) wait forever, 0 does not wait.
    if value is None:
        return None
    seconds = _seconds("timeout", value)
    return None if seconds == math.inf else seconds


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
        capacity = _int64("capacity", capacity)
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 (0 means unbounded), got {capacity}")
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
    def prioritized(self) -> bool:
        """Whether requests are ordered by ``(priority, sequence)``."""
        return self._prioritized

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._closed

    @property
    def paused(self) -> bool:
        """Whether ``take_batch`` is held by ``pause()``."""
        return self._paused

    @property
    def queued_samples(self) -> int:
        """Sum of ``samples`` over the queued requests."""
        return self._samples

    @property
    def queued_bytes(self) -> int:
        """Sum of ``nbytes`` over the queued requests."""
        return self._bytes

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
        samples = _int64("samples", samples)
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        nbytes = _int64("nbytes", nbytes)
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        priority = _int64("priority", priority)
        self._push(item, future, samples, nbytes, priority, _timeout(timeout))

    def set_row_schema(self, dtype: npt.DTypeLike, shape: tuple[int]) -> None:
        """Accept 1-D rows of ``shape == (n,)`` and ``dtype`` in :meth:`put_row`.

        Raises:
            ValueError: ``shape`` is not a 1-tuple of an integer ``>= 0``.
            TypeError: ``dtype`` is not a dtype, or ``shape[0]`` not an integer.
        """
        dt = np.dtype(dtype)
        if type(shape) is not tuple or len(shape) != 1:
            raise ValueError(f"a row schema has a 1-D shape (n,), got {shape!r}")
        n = _int64("shape[0]", shape[0])
        if n < 0:
            raise ValueError(f"a row schema has a 1-D shape (n,) with n >= 0, got {shape!r}")
        self._row_shape, self._row_dtype = (n,), dt

    def clear_row_schema(self) -> None:
        """Make :meth:`put_row` refuse every item until the next :meth:`set_row_schema`."""
        self._row_dtype = None

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
        self._push(item, future, 1, it.nbytes, 2, _timeout(timeout))
        return True

    def _push(self, item: object, future: object | None, samples: int, nbytes: int,
              priority: int, timeout: float | None) -> None:  # fmt: skip
        # put() and put_row(), arguments validated.
        with self._lock:
            if self._closed:
                raise QueueClosedError("the queue is closed: put() refused")
            queue = self._queue
            if self._capacity and len(queue) >= self._capacity:
                self._wait_for_room(timeout)
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

    def _wait_for_room(self, timeout: float | None) -> None:
        # Called with the lock held and the queue full.
        if timeout == 0.0:
            raise QueueFullError(f"the queue is full ({self._capacity} requests)")
        end = None if timeout is None else _monotonic() + timeout
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
                            f"the queue stayed full ({capacity} requests) for {timeout} s"
                        )
                    _wait(self._not_full, remaining)
            if self._closed:
                raise QueueClosedError("the queue was closed while put() waited for room")
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
        max_samples = _int64("max_samples", max_samples)
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        max_bytes = _int64("max_bytes", max_bytes)
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0 means no byte budget), got {max_bytes}")
        linger_s = _seconds("linger", linger)
        linger_ns = None if linger_s >= _LINGER_FOREVER else round(linger_s * 1e9)
        timeout = _timeout(timeout)

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
                    raise QueueClosedError("the queue is closed and empty")
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


# The buffer of a BatchAssembler may be reused only when nothing but the assembler refers
# to it. numpy collapses view chains, so every view of a batch (and of its views) holds a
# reference to the buffer itself. The count of a sole owner is measured once, through the
# same code path as the real check, so that it is right whatever the interpreter does.
class _Probe:
    __slots__ = ("_buf",)


def _buffer_refs(owner: Any) -> int:
    return sys.getrefcount(owner._buf)


_probe: Any = _Probe()
_probe._buf = np.empty(0, dtype=np.uint8)
_SOLE_OWNER_REFS = _buffer_refs(_probe)
del _probe


class BatchAssembler:
    """Copies the items of a batch into one reused, C-contiguous array.

    A 1-D item is one sample; an item with ``ndim >= 2`` is a mini-batch of
    ``shape[0]`` samples. Item 0 fixes the dtype and the sample shape. The returned batch
    is a view of a buffer the assembler owns; the buffer is reused only when nothing else
    refers to it, so a batch (or a view of it) handed out never changes afterwards.
    """

    __slots__ = ("_allocations", "_buf", "_offsets", "_rows", "_total")

    def __init__(self) -> None:
        self._buf: npt.NDArray[Any] | None = None
        self._allocations = 0
        self._offsets: npt.NDArray[np.int64] = np.zeros(1, dtype=np.int64)
        self._offsets.flags.writeable = False
        self._rows: list[bool] = []  # per item of the last batch: was it a 1-D row?
        self._total = 0

    @property
    def buffer_nbytes(self) -> int:
        """Capacity of the current buffer in bytes (0 before the first batch)."""
        return 0 if self._buf is None else self._buf.nbytes

    @property
    def allocations(self) -> int:
        """How many buffers have been allocated so far."""
        return self._allocations

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """Start row of each item of the last batch, plus the total (read-only)."""
        return self._offsets

    def assemble(self, items: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """Return the batch of ``items``: shape ``(total_samples, *sample_shape)``.

        Args:
            items: a non-empty sequence of numpy arrays with ``ndim >= 1``.

        Raises:
            ValueError: ``items`` is empty, or an item has ``ndim == 0`` or zero samples.
            TypeError: an item is not a numpy array.
            BatchDtypeError: an item's dtype differs from item 0's, or is ``object``.
            BatchShapeError: an item's sample shape differs from item 0's.
        """
        if not isinstance(items, (list, tuple)):
            items = list(items)
        n_items = len(items)
        if n_items == 0:
            raise ValueError("cannot assemble a batch of no items")
        # Validate everything before touching the buffer: a bad item leaves no
        # half-written batch behind.
        counts = [1] * n_items
        rows = [True] * n_items
        for i in range(n_items):
            item = items[i]
            if not isinstance(item, np.ndarray):
                raise TypeError(f"item {i} is {type(item).__name__}, expected a numpy array")
            shape = item.shape
            if not shape:
                raise ValueError(f"item {i} is a 0-d array; an item needs at least one dimension")
            if i == 0:
                dtype = item.dtype
                if dtype.hasobject:
                    raise BatchDtypeError(
                        f"item 0 has dtype {dtype}, which holds Python objects and cannot be "
                        "batched"
                    )
                sample_shape = shape[1:] if len(shape) > 1 else shape
            elif item.dtype != dtype:
                raise BatchDtypeError(
                    f"item {i} has dtype {item.dtype} but the batch has dtype {dtype}"
                )
            if len(shape) == 1:
                if shape != sample_shape:
                    raise BatchShapeError(
                        f"item {i} has shape {shape} but the batch has shape {sample_shape}"
                    )
                continue
            if shape[1:] != sample_shape:
                raise BatchShapeError(
                    f"item {i} has sample shape {shape[1:]} (array shape {shape}) "
                    f"but the batch has sample shape {sample_shape}"
                )
            if shape[0] == 0:
                raise ValueError(f"item {i} has zero samples (array shape {shape})")
            counts[i] = shape[0]
            rows[i] = False

        total = sum(counts)
        nbytes = total * math.prod(sample_shape) * dtype.itemsize
        batch = self._reserve(nbytes)[:nbytes].view(dtype).reshape((total, *sample_shape))
        # One assignment per item: numpy handles strides, Fortran order and broadcasts,
        # and never casts, since every dtype equals the batch's.
        offsets = [0] * (n_items + 1)
        row = 0
        for i in range(n_items):
            if rows[i]:
                batch[row] = items[i]
                row += 1
            else:
                end = row + counts[i]
                batch[row:end] = items[i]
                row = end
            offsets[i + 1] = row
        self._offsets = np.array(offsets, dtype=np.int64)
        self._offsets.flags.writeable = False
        self._rows = rows
        self._total = total
        return batch

    def _reserve(self, nbytes: int) -> npt.NDArray[Any]:
        # The current buffer when it is big enough and nobody else refers to it, else a
        # new one, grown geometrically.
        if self._buf is not None:
            if _buffer_refs(self) <= _SOLE_OWNER_REFS and self._buf.nbytes >= nbytes:
                return self._buf
            old = self._buf.nbytes
            nbytes = max(nbytes, 2 * old) if nbytes > old else old
        self._buf = np.empty(nbytes, dtype=np.uint8)
        self._allocations += 1
        return self._buf

    def split(self, result: Any) -> list[Any]:
        """Split a batch function's result back into one piece per item of the last batch.

        A 1-D item gets ``result[offset]`` (one row); a mini-batch item of n samples gets
        ``result[offset:offset+n]``.

        Raises:
            ResultMismatchError: ``result`` has no length or its length differs.
        """
        total = self._total
        try:
            n = len(result)
        except TypeError:
            raise ResultMismatchError(
                f"the batch function returned {type(result).__name__}, "
                f"expected a sequence of {total} results"
            ) from None
        if n != total:
            raise ResultMismatchError(
                f"the batch function returned {n} results for a batch of {total} samples"
            )
        starts = self._offsets.tolist()
        return [
            result[starts[i]] if is_row else result[starts[i] : starts[i + 1]]
            for i, is_row in enumerate(self._rows)
        ]


def _percentile_q(q: Any) -> float:
    value = _as_float("q", q)
    if not 0.0 <= value <= 100.0:  # NaN fails too
        raise ValueError(f"percentile q must be between 0 and 100, got {q!r}")
    return value


class StatsWindow:
    """A fixed-size ring of float64 values: the last ``capacity`` values recorded.

    Thread-safe: recording is O(1) per value under a short lock; summaries copy the ring
    under the lock and compute outside it. Percentiles equal ``numpy.percentile``
    (linear interpolation) on ``values()``.

    Args:
        capacity: the number of values kept (``>= 1``).

    Raises:
        TypeError: ``capacity`` is not an integer.
        ValueError: ``capacity < 1``.
    """

    __slots__ = ("_capacity", "_lock", "_pos", "_ring", "_total")

    def __init__(self, capacity: int) -> None:
        capacity = _int64("capacity", capacity)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._ring = np.zeros(capacity, dtype=np.float64)
        self._pos = 0  # where the next value goes; the oldest value once the ring is full
        self._total = 0
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        """The number of values the window keeps."""
        return self._capacity

    @property
    def total_count(self) -> int:
        """Values recorded since creation or ``clear()``, including those overwritten."""
        return self._total

    def __len__(self) -> int:
        """Values currently in the window (``min(total_count, capacity)``)."""
        return min(self._total, self._capacity)

    def record(self, value: float) -> None:
        """Record one value."""
        if not isinstance(value, float):
            if isinstance(value, (str, bytes, bytearray)):  # the compiled core's message
                raise TypeError(f"must be real number, not {type(value).__name__}")
            value = float(value)
        with self._lock:
            pos = self._pos
            self._ring[pos] = value
            self._pos = 0 if pos + 1 == self._capacity else pos + 1
            self._total += 1

    def record_many(self, values: npt.ArrayLike) -> None:
        """Record each value of a 1-D float sequence, in order.

        Raises:
            ValueError: ``values`` is not one-dimensional.
        """
        data = np.asarray(values, dtype=np.float64)
        if data.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {data.shape}")
        n, cap = data.shape[0], self._capacity
        with self._lock:
            ring = self._ring
            if n >= cap:
                # Only the last `cap` values survive; store them oldest first from slot 0.
                ring[:] = data[n - cap :]
                self._pos = 0
            else:
                pos = self._pos
                head = min(n, cap - pos)
                ring[pos : pos + head] = data[:head]
                ring[: n - head] = data[head:]
                self._pos = (pos + n) % cap
            self._total += n

    def record_elapsed_ms(self, start_ns: npt.NDArray[np.int64], end_ns: int) -> None:
        """Record ``(end_ns - s) / 1e6`` for each ``s`` of ``start_ns`` (milliseconds)."""
        starts = np.asarray(start_ns, dtype=np.int64)
        if starts.ndim != 1:
            raise ValueError(f"start_ns must be one-dimensional, got shape {starts.shape}")
        # Subtract in int64 first: nanosecond timestamps lose precision as doubles.
        self.record_many((np.int64(_int64("end_ns", end_ns)) - starts) / 1e6)

    def values(self) -> npt.NDArray[np.float64]:
        """A copy of the window, oldest first."""
        with self._lock:
            if self._total < self._capacity:
                return self._ring[: self._total].copy()
            pos = self._pos
            return np.concatenate((self._ring[pos:], self._ring[:pos]))

    def percentile(self, q: float) -> float:
        """The q-th percentile (``0 <= q <= 100``, else ``ValueError``); NaN when empty."""
        q = _percentile_q(q)
        data = self.values()
        return float(np.percentile(data, q)) if data.shape[0] else _NAN

    def summary(
        self, percentiles: Sequence[float] = ()
    ) -> tuple[int, float, float, float, tuple[float, ...]]:
        """``(count, mean, min, max, (percentile(q) for q in percentiles))``, one copy.

        ``count`` is the number of values in the window. Mean/min/max/percentiles are NaN
        when the window is empty.

        Raises:
            ValueError: a ``q`` outside ``[0, 100]`` (or NaN).
        """
        qs = [_percentile_q(q) for q in percentiles]
        data = self.values()
        n = data.shape[0]
        if n == 0:
            return 0, _NAN, _NAN, _NAN, tuple(_NAN for _ in qs)
        pcts = tuple(np.percentile(data, qs).tolist()) if qs else ()
        return n, float(data.mean()), float(data.min()), float(data.max()), pcts

    @staticmethod
    def summaries(
        windows: Sequence[StatsWindow], percentiles: Sequence[Sequence[float]]
    ) -> list[tuple[int, float, float, float, tuple[float, ...]]]:
        """``[w.summary(qs) for w, qs in zip(windows, percentiles)]`` in one call.

        Raises:
            ValueError: not one percentile sequence per window, or a ``q`` outside
                ``[0, 100]`` (or NaN).
            TypeError: an element of ``windows`` is not a ``StatsWindow``.
        """
        ws = tuple(windows)
        qss = [tuple(qs) for qs in percentiles]
        if len(ws) != len(qss):
            raise ValueError(
                f"{len(ws)} windows but {len(qss)} percentile sequences: one per window"
            )
        for w in ws:
            if not isinstance(w, StatsWindow):
                raise TypeError(f"expected StatsWindow objects, got {type(w).__name__}")
        for qs in qss:  # every q checked before any window is read, as the compiled core does
            for q in qs:
                _percentile_q(q)
        return [w.summary(qs) for w, qs in zip(ws, qss)]

    def clear(self) -> None:
        """Forget every value; ``total_count`` restarts from 0."""
        with self._lock:
            self._pos = self._total = 0
