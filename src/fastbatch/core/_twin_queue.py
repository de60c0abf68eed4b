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
from .._errors import LaneChangedError, QueueClosedError, QueueFullError
from ._twin_args import as_int64, as_seconds, as_timeout

__all__ = ["RequestQueue", "monotonic_ns"]

monotonic_ns = time.monotonic_ns

_monotonic = time.monotonic
_heappush, _heappop = heapq.heappush, heapq.heappop
# Condition.wait() raises OverflowError above this; longer waits are simply re-armed.
_TIMEOUT_MAX = threading.TIMEOUT_MAX
# Beyond int64 nanoseconds (292 years) a linger is as good as none.
_LINGER_FOREVER = 9e9
# Priority levels counted by samples_ahead (BatchPriority's five).
_LEVELS = 5


def _level(priority: int) -> int:
    return 0 if priority < 0 else min(priority, _LEVELS - 1)


def _wait(cond: threading.Condition, seconds: float | None) -> None:
    cond.wait(None if seconds is None else min(seconds, _TIMEOUT_MAX))


#: The most dimensions of put_row's samples (as in the compiled core).
ROW_MAX_NDIM = 31


class _Lane:
    """The requests of one lane, and the tag that names what they are."""

    __slots__ = ("bytes", "lingerers", "passed_before", "pinned", "queue", "samples", "tag")

    def __init__(self, prioritized: bool, tag: object) -> None:
        self.queue: Any = [] if prioritized else deque()
        self.samples = self.bytes = 0
        self.tag = tag
        self.pinned = False
        self.lingerers = 0  # consumers filling a batch from this lane: not reassigned
        self.passed_before = 0  # bucketed takes: requests with seq below this were passed over


class RequestQueue:
    """Bounded multi-producer queue of requests in lanes, FIFO or by priority.

    A queued request is the record ``(item, future, samples, nbytes, enqueue_ns, tag,
    priority, sequence)`` in its lane; in priority mode it sits in the lane's heap as
    ``(priority, sequence, record)``: the unique sequence keeps equal priorities FIFO and
    ends every comparison before the record. The head of the queue is the smallest lane
    head; a batch is taken from the head's lane only.

    Args:
        capacity: maximum number of queued requests; 0 means unbounded.
        prioritized: order by ``(priority, sequence)`` instead of plain FIFO.
        lanes: how many lanes there are; lane 0 is open from the start, tagged None.

    Raises:
        TypeError: ``capacity`` is not an integer.
        ValueError: ``capacity`` is negative, or ``lanes`` < 1.
    """

    __slots__ = (
        "__weakref__", "_bytes", "_capacity", "_closed", "_idle_waiters", "_lingerers",
        "_count", "_generation", "_interrupt_seq", "_lanes", "_level_samples", "_lock", "_n_lanes", "_need_bytes",
        "_need_lane", "_need_samples", "_not_empty", "_not_full", "_paused", "_prioritized", "_producers_waiting", "_row",
        "_samples", "_seq",
    )  # fmt: skip

    def __init__(self, capacity: int = 0, prioritized: bool = False, lanes: int = 1) -> None:
        capacity = as_int64("capacity", capacity)
        n_lanes = as_int64("lanes", lanes)
        if capacity < 0:
            raise ValueError(msg.QUEUE_CAPACITY.format(value=capacity))
        if not 1 <= n_lanes <= 1 << 20:
            raise ValueError(msg.QUEUE_LANES.format(value=n_lanes))
        self._capacity = capacity
        self._prioritized = bool(prioritized)
        self._n_lanes = n_lanes
        self._lanes: list[_Lane] = [_Lane(self._prioritized, None)]  # the lanes opened so far
        self._count = self._seq = self._samples = self._bytes = 0
        # Queued samples per priority level (priorities outside 0..4 at the nearest).
        self._level_samples = [0] * _LEVELS
        self._closed = self._paused = False
        # interrupt() calls: a take given an older generation ends early, taking no
        # request put after the latest interrupt (seq >= _interrupt_seq).
        self._generation = self._interrupt_seq = 0
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
        self._need_lane: _Lane | None = None  # the lane whose requests the lingerer needs
        # The rows put_row() accepts (None: no schema), and their lane.
        # put_row's schema, replaced whole: (dtype, sample shape, lane, max samples, max bytes).
        self._row: tuple[np.dtype[Any], tuple[int, ...], int, int, int] | None = None

    @property
    def capacity(self) -> int:
        """Maximum number of queued requests; 0 means unbounded."""
        return self._capacity

    @property
    def lanes(self) -> int:
        """Number of lanes (the ``lanes`` argument)."""
        return self._n_lanes

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
        return self._count

    def __repr__(self) -> str:
        state = "closed" if self._closed else "paused" if self._paused else "open"
        return (
            f"<RequestQueue {state} len={self._count} capacity={self._capacity} "
            f"prioritized={self._prioritized}>"
        )

    def open_lane(self, tag: object) -> int:
        """Give ``tag`` a lane: one never opened, else an empty unpinned one; -1 if none."""
        with self._lock:
            lanes = self._lanes
            if len(lanes) < self._n_lanes:
                lanes.append(_Lane(self._prioritized, tag))
                return len(lanes) - 1
            for k, lane in enumerate(lanes):
                # A lane a batch is being filled from keeps its tag until the batch is
                # out: its requests would otherwise join a batch of another tag.
                if not lane.queue and not lane.pinned and not lane.lingerers:
                    lane.tag = tag
                    return k
            return -1

    def lane_tag(self, lane: int) -> object:
        """The tag of ``lane`` (None for a lane never opened)."""
        k = self._lane_index(lane)
        with self._lock:
            return self._lanes[k].tag if k < len(self._lanes) else None

    def _lane_index(self, lane: object) -> int:
        k = as_int64("lane", lane)
        if not 0 <= k < self._n_lanes:
            raise ValueError(msg.LANE_RANGE.format(lanes=self._n_lanes, value=k))
        return k

    def put(
        self, item: object, future: object | None = None, samples: int = 1,
        nbytes: int = 0, priority: int = 0, timeout: float | None = None,
        lane: int = 0, tag: object = None,
    ) -> None:  # fmt: skip
        """Append a request to ``lane``, waiting while the queue is full.

        Args:
            item, future: opaque objects, held by strong reference until handed out.
            samples, nbytes: the request's size for the budgets of ``take_batch``.
            priority: lower goes first; ignored unless the queue is prioritized.
            timeout: seconds to wait for room; ``None`` waits forever, 0 not at all.
            lane, tag: the lane, and the tag it must still have (``open_lane``).

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds.
            QueueClosedError: the queue is closed, or was closed while waiting.
            LaneChangedError: ``tag`` is not (or no longer) the lane's tag.
            ValueError: ``samples < 1``, ``nbytes < 0``, a lane out of range, or a
                negative/NaN ``timeout``.
        """
        samples = as_int64("samples", samples)
        if samples < 1:
            raise ValueError(msg.SAMPLES.format(value=samples))
        nbytes = as_int64("nbytes", nbytes)
        if nbytes < 0:
            raise ValueError(msg.NBYTES.format(value=nbytes))
        priority = as_int64("priority", priority)
        self._push(item, future, samples, nbytes, priority, timeout, self._lane_index(lane), tag)

    def set_row_schema(self, dtype: npt.DTypeLike, shape: tuple[int, ...], lane: int = 0,
                       max_samples: int = 0, max_bytes: int = 0) -> None:  # fmt: skip
        """Accept samples of ``shape`` and ``dtype`` in :meth:`put_row`, into ``lane``:
        at most ``max_samples`` samples (0: any) of at most ``max_bytes`` bytes (0: any) a put.

        The lane is pinned: it keeps its tag for the queue's lifetime.

        Raises:
            ValueError: ``shape`` is not a tuple of 1 to 31 integers ``>= 0``, a limit is
                negative, or the lane is out of range or was never opened.
            TypeError: ``dtype`` is not a dtype, or a size or limit not an integer.
        """
        k = self._lane_index(lane)
        most = as_int64("max_samples", max_samples)
        budget = as_int64("max_bytes", max_bytes)
        dt = np.dtype(dtype)
        if type(shape) is not tuple or not 1 <= len(shape) <= ROW_MAX_NDIM:
            raise ValueError(msg.ROW_SCHEMA_SHAPE.format(shape=shape))
        dims = tuple(as_int64("shape", n) for n in shape)
        if min(dims) < 0:
            raise ValueError(msg.ROW_SCHEMA_LENGTH.format(shape=shape))
        if most < 0 or budget < 0:
            raise ValueError(msg.ROW_SCHEMA_LIMIT.format(max_samples=max_samples, max_bytes=max_bytes))
        with self._lock:
            if k >= len(self._lanes):
                raise ValueError(msg.LANE_NOT_OPEN.format(lane=k))
            self._lanes[k].pinned = True
        self._row = (dt, dims, k, most, budget)

    def put_row(self, item: object, future: object | None = None,
                timeout: float | None = None) -> bool:  # fmt: skip
        """``put(item, future, samples, item.nbytes, 2, timeout, lane, tag)`` for samples of
        the schema.

        Returns:
            True when queued; False, queuing nothing, when there is no schema or ``item``
            is not exactly an ndarray of the schema's samples: a 1-D array of the sample
            shape (one sample, when samples are 1-D) or ``(n, *shape)`` with ``1 <= n``
            (``<= max_samples`` when set), of the schema's dtype (or an equivalent one),
            of at most ``max_bytes`` bytes when set.

        Raises:
            As :meth:`put`.
        """
        row = self._row
        it: Any = item
        if row is None or it.__class__ is not np.ndarray:
            return False
        dtype, shape, lane, most, budget = row
        dims = it.shape
        if len(dims) == 1:
            if dims != shape:
                return False
            samples = 1
        elif dims[1:] == shape:
            samples = dims[0]
            if samples < 1 or (most and samples > most):
                return False
        else:
            return False
        if (dt := it.dtype) is not dtype and dt != dtype:
            return False
        nbytes = it.nbytes
        if budget and nbytes > budget:
            return False
        # A pinned lane's tag never changes.
        self._push(item, future, samples, nbytes, 2, timeout, lane, self._lanes[lane].tag)
        return True

    def _push(self, item: object, future: object | None, samples: int, nbytes: int,
              priority: int, timeout: Any, k: int, tag: object) -> None:  # fmt: skip
        # put() and put_row(), arguments validated but for the timeout.
        wait = as_timeout(timeout)
        with self._lock:
            if self._closed:
                raise QueueClosedError(msg.QUEUE_CLOSED)
            lanes = self._lanes
            if self._capacity and self._count >= self._capacity:
                self._check_tag(k, tag)
                self._wait_for_room(wait, timeout)
            self._check_tag(k, tag)  # again: a wait for room lets others recycle the lane
            lane = lanes[k]
            if not self._prioritized:
                priority = 0  # plain FIFO: only the sequence orders requests, across lanes too
            # Stamped under the lock, so FIFO order and timestamp order agree.
            record = (item, future, samples, nbytes, monotonic_ns(), tag, priority, self._seq)
            if self._prioritized:
                _heappush(lane.queue, (priority, self._seq, record))
            else:
                lane.queue.append(record)
            self._seq += 1
            self._count += 1
            self._samples += samples
            self._level_samples[_level(priority)] += samples
            self._bytes += nbytes
            lane.samples += samples
            lane.bytes += nbytes
            if self._idle_waiters or self._lingerers:
                self._wake_consumers(lane)

    def _check_tag(self, k: int, tag: object) -> None:
        lanes = self._lanes
        if k >= len(lanes) or lanes[k].tag is not tag:
            raise LaneChangedError(msg.LANE_CHANGED.format(lane=k))

    def _wait_for_room(self, wait: float | None, timeout: Any) -> None:
        # Called with the lock held and the queue full; ``wait`` is ``timeout`` validated.
        if wait == 0.0:
            raise QueueFullError(msg.QUEUE_FULL.format(capacity=self._capacity))
        end = None if wait is None else _monotonic() + wait
        capacity = self._capacity
        self._producers_waiting += 1
        try:
            while self._count >= capacity and not self._closed:
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

    def _wake_consumers(self, lane: _Lane) -> None:
        # Called with the lock held, right after a put into ``lane``. Wake-up economy: a
        # lingering consumer is woken only once it can finish its batch (the need it
        # recorded in its lane is met, or the queue is full and producers would stall on
        # it); an idle consumer only when it can take something (not paused).
        if self._lingerers and (
            self._lingerers > 1  # several needs recorded: cheaper to wake them all
            or (lane is self._need_lane and (
                lane.samples >= self._need_samples
                or (self._need_bytes is not None and lane.bytes >= self._need_bytes)))
            or (self._capacity and self._count >= self._capacity)
        ):
            self._not_empty.notify_all()
        elif self._idle_waiters and not self._paused:
            if self._lingerers:  # notify() might pick the lingerer, whose need is not met
                self._not_empty.notify_all()
            else:
                self._not_empty.notify()

    def take_batch(
        self, max_samples: int, max_bytes: int = 0, linger: float = 0.0,
        timeout: float | None = None, tagged: bool = False, bucket: bool = False,
        until_ns: int = 0, generation: int = -1,
    ) -> tuple[Any, ...] | None:  # fmt: skip
        """Remove and return one batch: ``(items, futures, enqueue_ns)`` in queue order.

        Waits (up to ``timeout``) for a request while the queue is empty or paused; takes
        the head request whatever its size; then keeps taking the head requests of its
        lane while they fit in ``max_samples`` (and ``max_bytes`` when > 0), waiting for
        more until the head request's enqueue time + ``linger`` seconds. With ``bucket``,
        it fills the batch, once the lane can fill it or the wait is over, with the lane's
        requests closest in size to the head request. ``_core.pyi`` has every rule.

        Returns:
            The batch (with ``tagged``, its lane's tag as a fourth element), or ``None``
            when ``timeout`` passed with nothing to take.

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
        until_ns = as_int64("until_ns", until_ns)
        if until_ns < 0:
            raise ValueError(f"until_ns must be a monotonic_ns time >= 0, not {until_ns}")
        generation = as_int64("generation", generation)
        if generation < -1:
            raise ValueError(f"generation must be -1 (none) or a generation >= 0, not {generation}")

        with self._lock:
            prioritized = self._prioritized
            # Step 1: wait for something to take (the fast path does not count as a waiter).
            if generation >= 0 and generation != self._generation:
                return None  # interrupted before taking anything: the caller starts over
            ready = self._count and (not self._paused or self._closed)
            if not ready and not self._wait_until_ready(timeout, generation):
                return None
            # Step 2: the head request, always; its lane is the batch's.
            lane = self._head_lane()
            queue = lane.queue
            item, future, samples, nbytes, stamp, tag, priority = (
                _heappop(queue)[2] if prioritized else queue.popleft()
            )[:7]
            self._count -= 1
            self._samples -= samples
            self._level_samples[_level(priority)] -= samples
            self._bytes -= nbytes
            lane.samples -= samples
            lane.bytes -= nbytes
            items, futures, stamps = [item], [future], [stamp]
            nbytes_first = nbytes
            room = max_samples - samples
            byte_room = max_bytes - nbytes if max_bytes else None
            deadline = None if linger_ns is None else stamp + linger_ns
            if until_ns and deadline is not None and deadline < until_ns:
                deadline = until_ns
            freed = 0  # slots already announced to waiting producers
            # Step 3: fill up.
            while room > 0 and (byte_room is None or byte_room > 0):
                if lane.tag is not tag:
                    break  # reassigned meanwhile: its requests are not this batch's
                if generation >= 0 and generation != self._generation and (
                        bucket or not queue or (queue[0][2] if prioritized else queue[0])[7] >= self._interrupt_seq):
                    # Interrupted: the batch's limits changed. It goes now, with what was
                    # put before the interrupt (in queue order, as it fits); what is put
                    # after is taken under the new limits.
                    break
                if bucket and queue:
                    # Choose only once the lane can fill the batch, or the wait is over.
                    if (lane.samples >= room or (byte_room is not None and lane.bytes >= byte_room)
                            or self._closed or (deadline is not None and monotonic_ns() >= deadline)):
                        for record in self._take_closest(lane, room, byte_room, nbytes_first):
                            items.append(record[0])
                            futures.append(record[1])
                            stamps.append(record[4])
                        break
                elif queue:
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
                    self._count -= 1
                    self._samples -= samples
                    self._level_samples[_level(record[6])] -= samples
                    self._bytes -= nbytes
                    lane.samples -= samples
                    lane.bytes -= nbytes
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
                # The lane is empty here: record what would fill the batch, so that put()
                # wakes us once, when it is there, instead of once per request.
                self._need_samples, self._need_bytes, self._need_lane = room, byte_room, lane
                self._lingerers += 1
                lane.lingerers += 1
                try:
                    _wait(self._not_empty, wait_s)
                finally:
                    self._lingerers -= 1
                    lane.lingerers -= 1
            if self._producers_waiting and len(items) > freed:
                self._not_full.notify(len(items) - freed)
        if tagged:
            return items, futures, np.array(stamps, dtype=np.int64), tag
        return items, futures, np.array(stamps, dtype=np.int64)

    def _take_closest(self, lane: _Lane, room: int, byte_room: int | None, target: int) -> list[Any]:
        # Called with the lock held: remove and return, in queue order, the requests of
        # ``lane`` closest in nbytes to ``target`` that fit the room, those passed over
        # by an earlier bucketed take first.
        prioritized = self._prioritized
        records = [e[2] for e in lane.queue] if prioritized else list(lane.queue)
        passed = lane.passed_before
        order = sorted(records, key=lambda r: (0 if r[7] < passed else 1, abs(r[3] - target), r[6], r[7]))
        chosen = []
        for r in order:
            if room <= 0 or (byte_room is not None and byte_room <= 0):
                break
            if r[2] <= room and (byte_room is None or r[3] <= byte_room):
                chosen.append(r)
                room -= r[2]
                if byte_room is not None:
                    byte_room -= r[3]
        taken = {r[7] for r in chosen}
        rest = [r for r in records if r[7] not in taken]
        lane.queue.clear()
        if prioritized:
            lane.queue.extend((r[6], r[7], r) for r in rest)
            heapq.heapify(lane.queue)
        else:
            lane.queue.extend(rest)
        for r in chosen:
            self._count -= 1
            self._samples -= r[2]
            self._level_samples[_level(r[6])] -= r[2]
            self._bytes -= r[3]
            lane.samples -= r[2]
            lane.bytes -= r[3]
        if records:
            lane.passed_before = max(lane.passed_before, max(r[7] for r in records) + 1)
        chosen.sort(key=lambda r: (r[6], r[7]))
        return chosen

    def _head_lane(self) -> _Lane:
        # Called with the lock held and a request queued: the lane of the head request.
        lanes = self._lanes
        if len(lanes) == 1:
            return lanes[0]
        heads = [(lane.queue[0][:2] if self._prioritized else (0, lane.queue[0][7]), k)
                 for k, lane in enumerate(lanes) if lane.queue]
        return lanes[min(heads)[1]]

    def _wait_until_ready(self, timeout: float | None, generation: int) -> bool:
        # Called with the lock held. True once there is a request to take and the queue
        # is not paused (or is closed: a closed queue is drained even when paused);
        # False when the timeout passed.
        end = None if timeout is None else _monotonic() + timeout
        self._idle_waiters += 1
        try:
            while True:
                if self._count and (not self._paused or self._closed):
                    return True
                if self._closed:
                    raise QueueClosedError(msg.QUEUE_CLOSED_AND_EMPTY)
                if generation >= 0 and generation != self._generation:
                    return False  # interrupted, nothing taken: the caller starts over
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
            records: list[Any] = []
            for lane in self._lanes:
                queue = lane.queue
                records.extend((e[2] for e in queue) if self._prioritized else queue)
                queue.clear()
                lane.samples = lane.bytes = 0
            records.sort(key=lambda r: (r[6], r[7]))
            self._count = self._samples = self._bytes = 0
            self._level_samples = [0] * _LEVELS
            if self._producers_waiting:
                self._not_full.notify_all()
        stamps = np.array([r[4] for r in records], dtype=np.int64)
        return [r[0] for r in records], [r[1] for r in records], stamps

    def samples_ahead(self, priority: int) -> int:
        """Queued samples a new request of ``priority`` would wait behind: those of its
        priority level and above (all of them in FIFO order)."""
        top = _level(as_int64("priority", priority)) if self._prioritized else _LEVELS - 1
        with self._lock:
            return sum(self._level_samples[:top + 1])

    @property
    def generation(self) -> int:
        """How many times ``interrupt()`` was called."""
        with self._lock:
            return self._generation

    def interrupt(self) -> None:
        """End early every ``take_batch`` given a ``generation`` older than the new one
        (see ``_core.pyi``)."""
        with self._lock:
            self._generation += 1
            self._interrupt_seq = self._seq
            self._not_empty.notify_all()

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
