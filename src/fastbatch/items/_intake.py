"""Intake: what a valid item and a valid enqueue call are, decided in one place.

``enqueue``, ``enqueue_predict`` and ``enqueue_async`` all go through :meth:`Intake.put`.
It checks the call's arguments (timeout, priority, deadline, key) and the item — array,
tensor, tuple or dict of arrays (several inputs), or other object; dtype, sample shape,
byte budget — and puts it into the lane of its signature (``_lanes``); the cores just copy. The common case (a 1-D row of the first
row lane, default priority, no deadline, no key) costs one C call: the queue's
``put_row`` checks the row itself.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _split, _tensors
from .._config import BatchPriority, BatchProcessorConfig
from .._errors import (BatchDtypeError, LaneChangedError, OverloadedError, ProcessorStoppedError, QueueClosedError,
                      QueueFullError)
from ..core import _backend
from ..observe._counters import Counters
from ._lanes import ARRAY, FIELDS, GENERIC, PADDED, PADDED_FIELDS, TENSOR, Lane, LaneTable
from ._padding import pad_element

#: The priority of a call that names none.
DEFAULT_PRIORITY = BatchPriority.NORMAL
_DEFAULT = DEFAULT_PRIORITY
# Accepts the enum members and their int values; bools are refused separately.
_PRIORITIES = {int(p): int(p) for p in BatchPriority}
_ndarray = np.ndarray
_ROW_MAX_NDIM = 31  # the queues' put_row takes samples of up to 31 dimensions
logger = logging.getLogger("fastbatch")


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """A wait in seconds: None (no limit) or a real number >= 0; the same rule everywhere.

    Raises:
        TypeError: not None and not a number (a bool is not a number of seconds).
        ValueError: negative or NaN.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be None or a number of seconds >= 0, not {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"{name} must be None or a number of seconds >= 0, not {timeout!r}")
    return float(timeout)


def check_deadline(deadline: Any) -> float:
    """A deadline in seconds: a finite number > 0."""
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float, np.integer, np.floating)):
        raise TypeError(f"deadline must be None or a number of seconds > 0, not {deadline!r}")
    if not 0 < deadline < math.inf:
        raise ValueError(f"deadline must be None or a number of seconds > 0, not {deadline!r}")
    return float(deadline)


def check_priority(priority: Any) -> int:
    """A ``BatchPriority`` or its int value (0..4)."""
    cls = priority.__class__
    prio = _PRIORITIES.get(priority) if cls is BatchPriority or cls is int or (
        cls is not bool and isinstance(priority, np.integer)) else None
    if prio is None:
        raise ValueError(f"priority must be a BatchPriority (0..4), not {priority!r}")
    return prio


def check_key(key: Any) -> Any:
    """A lane key: any hashable object (None: no key)."""
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"key must be hashable (a str, an int, a tuple ...), not {type(key).__name__} "
                        f"{key!r}") from None
    return key


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def _field(name: Any, is_dict: bool) -> str:
    return f"field {name!r}" if is_dict else f"field {name}"


class Intake:
    """Validates and queues the items of one processor, run after run.

    Each run has its own lanes (``LaneTable``): a lane opens with the first item of its
    signature and is reused once empty.
    """

    def __init__(self, name: str, config: BatchProcessorConfig, counters: Counters,
                 predicted_latency_s: Callable[[int, bool], float]) -> None:
        self.name = name
        # With a latency target: the scheduler's estimate of a new item's latency, given the
        # samples queued; an item over the target is shed.
        self._target_s = None if config.target_latency_ms is None else config.target_latency_ms / 1e3
        self._predicted_latency_s = predicted_latency_s
        self._config = config
        self._counters = counters
        self._max_bytes = config.max_batch_bytes
        self._default_deadline = config.default_deadline
        self._variable = config.variable_length
        # Items of more samples than this are queued in parts (0: never split).
        self._split_above = config.max_batch_size if config.split_oversized else 0
        self.queue: Any = None  # the current run's queue; None before the first start
        self.run: Any = None
        # (queue, run, lanes) of the current run, read at once by a put: a put racing a
        # restart sees one run, never the queue of one and the lanes of another.
        self._target: tuple[Any, Any, LaneTable] | None = None
        # The fast path, for the enqueue methods to call directly: the queue's C
        # ``put_row(item, future, None)``, which queues a row of the run's row lane and
        # returns False for anything else. Only for a call with no timeout, the default
        # priority, no deadline and no key; None when a default deadline applies.
        # A QueueClosedError from it means: call put() (which says why it is closed).
        self.put_row: Any = None
        self.not_running_hint = ""
        # The array lane the queue's put_row takes (pinned for the run), and the queue.
        self._pinned: tuple[Lane, Any] | None = None
        # That lane as (lane, dtype, shape) when its samples are 1-D rows within the byte
        # budget: put() checks such a row in Python without describe().
        self._row: tuple[Lane, Any, tuple[int, ...]] | None = None
        self._said_generic = False
        self._say_lock = threading.Lock()
        # Orders pinning a lane (set_row_schema with the split size of the moment) against
        # reconfigure() changing that size: either one sees the other's write.
        self._schema_lock = threading.Lock()

    def reconfigure(self, config: BatchProcessorConfig) -> None:
        """A new ``max_batch_size``: items larger than it are split from the next call on."""
        self._config = config
        with self._schema_lock:
            self._split_above = config.max_batch_size if config.split_oversized else 0
            pinned = self._pinned
            if pinned is not None:  # the queue's fast path must leave larger items to put()
                lane, queue = pinned
                queue.set_row_schema(lane.dtype, lane.sample_shape, lane.index, self._split_above, self._max_bytes)

    def attach(self, run: Any) -> None:
        """Route items to ``run``'s queue from now on, with lanes of its own."""
        self._row = self._pinned = None
        self._said_generic = False
        self.run = run
        self.queue = run.queue
        self._target = (run.queue, run, LaneTable(run.queue, self._config.max_lanes, self._make_lane,
                                                   self.lane_opened))
        # The C fast path checks nothing but the row: not for a default deadline or a
        # latency target, which every put must see.
        self.put_row = (run.queue.put_row if self._default_deadline is None and self._target_s is None
                        else None)

    def reset_after_fork(self, hint: str) -> None:
        self.queue = self.run = self.put_row = self._target = self._pinned = self._row = None
        self._say_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self.not_running_hint = hint

    # -- the one way in ---------------------------------------------------------------

    def put(self, item: Any, future: Any, timeout: Any, priority: Any, deadline: Any, key: Any = None) -> Any:
        """Queue ``item`` (with ``future``, or None); returns the future it was queued with.

        A deadline needs a future to expire, so one is made for an item without one.

        Raises:
            QueueFullError (TooManyLanesError among them), ProcessorStoppedError, and
            TypeError / ValueError / BatchDtypeError for a bad item or argument.
        """
        queue = self.queue
        if (priority is _DEFAULT and deadline is None and key is None and self._default_deadline is None
                and self._target_s is None and queue is not None):
            if timeout is not None:
                timeout = check_timeout(timeout)
            try:
                if queue.put_row(item, future, timeout):
                    return future
            except QueueClosedError:
                raise self.stopped_error() from None
            except QueueFullError:
                self._counters.add(refused=1)
                raise
            return self._put(item, future, timeout, priority, deadline, None)
        return self._put(item, future, check_timeout(timeout), priority, deadline, key)

    def _put(self, item: Any, future: Any, timeout: float | None, priority: Any, deadline: Any,
             key: Any) -> Any:
        # Arguments first: a call refused for them must not open a lane.
        if deadline is None:
            deadline = self._default_deadline
        else:
            deadline = check_deadline(deadline)
        prio = 2 if priority is _DEFAULT else check_priority(priority)
        if key is not None:
            check_key(key)
        row = self._row
        lane: Lane | None = None
        if (key is None and row is not None and item.__class__ is _ndarray and item.shape == row[2]
                and ((dtype := item.dtype) is row[1] or dtype == row[1])):
            lane, samples, nbytes = row[0], 1, item.nbytes
        else:
            samples, nbytes, signature = self.describe(item, key)
            if samples > self._split_above > 0 and signature[0] in _split.SPLITTABLE:
                return self._put_parts(item, future, samples, timeout, prio, deadline, key)
        target = self._target
        if target is None:
            raise self._not_started_error()
        queue, run, lanes = target
        if self._target_s is not None:
            self._shed_if_late(self._target_s, queue.samples_ahead(prio), run.busy())
        if deadline is not None and future is None:
            future = run.new_future()  # expiry is tracked through a future, even for enqueue()
        try:
            if lane is None:
                lane = lanes.get(signature)
            while True:
                try:
                    queue.put(item, future, samples, nbytes, prio, timeout, lane.index, lane)
                    break
                except LaneChangedError:
                    lane = lanes.renew(lane)  # the lane was given to another signature meanwhile
        except QueueClosedError:
            raise self.stopped_error() from None
        except QueueFullError:
            self._counters.add(refused=1)
            raise
        if deadline is not None:
            run.reaper.add(future, deadline)
        return future

    def _put_parts(self, item: Any, future: Any, samples: int, timeout: float | None, prio: int,
                   deadline: float | None, key: Any) -> Any:
        """Queue an item larger than a batch as parts, each with a future joined into ``future``.

        All parts are queued or none: a part refused (queue full, stopped) cancels those
        already queued and the error goes to the caller, as for an item that is not split.
        """
        target = self._target
        if target is None:
            raise self._not_started_error()
        run = target[1]
        if future is None:
            future = run.new_future()
            future.add_done_callback(_split.log_failure(self.name))
        # One timeout for the whole item, not one per part.
        end = None if timeout is None else _backend.monotonic_ns() + timeout * 1e9
        children: list[Any] = []
        try:
            for part in _split.parts(item, samples, self._split_above):
                child = run.new_future()
                left = None if end is None else max(0.0, (end - _backend.monotonic_ns()) / 1e9)
                self._put(part, child, left, prio, deadline, key)
                children.append(child)
        except BaseException:
            _split.cancel(children)
            raise
        _split.Joined(future, children).attach()
        return future

    def _not_started_error(self) -> ProcessorStoppedError:
        return ProcessorStoppedError(f"BatchProcessor {self.name!r} is not running{self.not_running_hint}: "
                                     "call start() first")

    def _shed_if_late(self, target_s: float, queued: int, busy: bool) -> None:
        """Refuse an item predicted to miss the target behind the ``queued`` samples ahead
        of it in queue order (its priority level and above)."""
        predicted = self._predicted_latency_s(queued, busy)
        if predicted > target_s:
            self._counters.add(refused=1, shed=1)
            raise OverloadedError(
                f"BatchProcessor {self.name!r} is overloaded: a new item would take about "
                f"{predicted * 1e3:.1f} ms ({queued} samples queued ahead of it), over "
                f"target_latency_ms={self._config.target_latency_ms}; retry later or elsewhere")

    def stopped_error(self) -> ProcessorStoppedError:
        state = self.run.state if self.run is not None else "idle"
        return ProcessorStoppedError(f"BatchProcessor {self.name!r} is {state}: it accepts no more items")

    def has_room(self) -> bool:
        """Whether a non-blocking put would find room (racy: only decides whether to try)."""
        queue = self.queue
        if queue is None or queue.closed:
            return True  # not running: let put() raise ProcessorStoppedError
        capacity = queue.capacity
        return not capacity or len(queue) < capacity

    # -- what a valid item is ---------------------------------------------------------

    def describe(self, item: Any, key: Any = None) -> tuple[int, int, tuple[Any, ...]]:
        """``(samples, nbytes, signature)`` of a valid item; the signature names its lane.

        Raises:
            TypeError, ValueError, BatchDtypeError: an item that cannot be batched.
        """
        if not isinstance(item, np.ndarray):
            if item is None:
                raise TypeError("item is None: enqueue a numpy array or an object the batch function accepts")
            if _tensors.is_tensor(item):
                if self._variable:
                    raise TypeError(
                        f"a torch tensor (shape {_shape(item.shape)}) cannot be a variable-length item: "
                        "variable_length=True pads numpy arrays into a PaddedBatch; enqueue "
                        "item.cpu().numpy() (and torch.from_numpy(batch.data) in the batch function), or "
                        "use a processor without variable_length for tensors of a fixed shape")
                samples, nbytes, (dtype, sample_shape, device) = _tensors.describe(item)
                self._check_bytes(nbytes)
                return samples, nbytes, (TENSOR, dtype, sample_shape, device, key)
            if isinstance(item, (tuple, dict)):
                fields = self._describe_fields(item, key)
                if fields is not None:
                    return fields
            if self._variable:
                # The batch function takes PaddedBatches: an object would reach it as itself
                # and fail there (token ids as a list are the usual slip).
                raise TypeError(f"a {type(item).__name__} item cannot be batched with variable_length=True: "
                                "each item is a numpy array whose first axis may vary (or a tuple / dict "
                                "of them); pass np.asarray(item)")
            if not self._said_generic:
                self._first_generic(item)
            return 1, 0, (GENERIC, key)
        if item.ndim == 0:
            raise ValueError(f"a 0-d array ({item!r}) cannot be batched: pass a 1-D row "
                             "(x.reshape(1)) or an (n, ...) mini-batch")
        if item.dtype.hasobject:
            raise BatchDtypeError(f"arrays of dtype {item.dtype} cannot be batched: they hold Python objects")
        if self._variable:
            if item.shape[0] == 0:
                raise ValueError(f"a sample of length 0 (shape {_shape(item.shape)}) cannot be batched: "
                                 "variable-length samples have at least one element on their first axis")
            self._check_bytes(item.nbytes)
            return 1, item.nbytes, (PADDED, item.dtype, item.shape[1:], key)
        if item.ndim == 1:
            samples, sample_shape = 1, item.shape
        else:
            samples, sample_shape = item.shape[0], item.shape[1:]
            if samples == 0:
                raise ValueError(f"a mini-batch of 0 samples (shape {_shape(item.shape)}) cannot be batched")
        self._check_bytes(item.nbytes)
        return int(samples), item.nbytes, (ARRAY, item.dtype, sample_shape, key)

    def _describe_fields(self, item: tuple[Any, ...] | dict[Any, Any], key: Any
                         ) -> tuple[int, int, tuple[Any, ...]] | None:
        """``describe`` for a tuple or dict: several inputs when every field is an array,
        None (a generic item) when none is."""
        is_dict = isinstance(item, dict)
        names: list[Any] = list(item) if is_dict else list(range(len(item)))
        values: list[Any] = list(item.values()) if is_dict else list(item)  # type: ignore[union-attr]
        container = "dict" if is_dict else "tuple"
        arrays = [isinstance(v, _ndarray) for v in values]
        if not any(arrays):
            if not values:
                raise ValueError(f"an empty {container} cannot be batched: several inputs need at least "
                                 "one field (a numpy array)")
            return None  # a tuple / dict of Python objects: a generic item, as always
        if not all(arrays):
            others = ", ".join(f"{_field(n, is_dict)} is {type(v).__name__}"
                               for n, v, a in zip(names, values, arrays) if not a)
            raise TypeError(f"a {container} of several inputs must hold only numpy arrays: {others} "
                            "(convert with np.asarray, or enqueue no arrays at all for a generic item)")
        per_field = []
        counts = []
        nbytes = 0
        for name, a in zip(names, values):
            what = _field(name, is_dict)
            if a.ndim == 0:
                raise ValueError(f"{what} is a 0-d array ({a!r}) and cannot be batched: pass a 1-D row "
                                 "(x.reshape(1)) or an (n, ...) mini-batch")
            if a.dtype.hasobject:
                raise BatchDtypeError(f"{what} has dtype {a.dtype}, which cannot be batched: it holds "
                                      "Python objects")
            if self._variable:
                if a.shape[0] == 0:
                    raise ValueError(f"{what} has length 0 (shape {_shape(a.shape)}): variable-length "
                                     "samples have at least one element on their first axis")
                counts.append(1)
            else:
                counts.append(1 if a.ndim == 1 else int(a.shape[0]))
            sample_shape = a.shape[1:] if self._variable or a.ndim > 1 else a.shape
            per_field.append((name, a.dtype, sample_shape) if is_dict else (a.dtype, sample_shape))
            nbytes += a.nbytes
        samples = counts[0]
        if any(c != samples for c in counts):
            described = ", ".join(f"{_field(n, is_dict)} has {c}" for n, c in zip(names, counts))
            raise ValueError(f"the fields of a {container} item must hold the same number of samples "
                             f"(a 1-D field is one sample, an (n, ...) field n): {described}")
        if samples == 0:
            raise ValueError(f"a {container} of mini-batches of 0 samples cannot be batched")
        self._check_bytes(nbytes)
        kind = PADDED_FIELDS if self._variable else FIELDS
        return samples, nbytes, (kind, container, tuple(per_field), key)

    def _check_bytes(self, nbytes: int) -> None:
        if self._max_bytes and nbytes > self._max_bytes:
            raise ValueError(f"item of {nbytes} bytes exceeds the batch byte budget "
                             f"max_batch_memory_mb={self._config.max_batch_memory_mb} ({self._max_bytes} bytes)")

    # -- lanes (called by the LaneTable, under its lock) ----------------------------------

    def _make_lane(self, signature: tuple[Any, ...]) -> Lane:
        kind = signature[0]
        if kind == GENERIC:
            return Lane(signature, GENERIC, key=signature[1])
        if kind == TENSOR:
            return Lane(signature, TENSOR, signature[1], signature[2], signature[3], signature[4])
        if kind == FIELDS or kind == PADDED_FIELDS:
            container, per_field = signature[1], signature[2]
            # (name, dtype, sample shape) per field; a tuple's fields are named by position.
            fields = per_field if container == "dict" else tuple((i, *f) for i, f in enumerate(per_field))
            if kind == PADDED_FIELDS:
                for field in fields:
                    pad_element(self._config.pad_value, field[1])
            return Lane(signature, kind, key=signature[3], fields=fields, container=container)
        if kind == PADDED:
            pad_element(self._config.pad_value, signature[1])  # a pad value the dtype cannot hold fails here
        return Lane(signature, kind, signature[1], signature[2], key=signature[3])

    def lane_opened(self, lane: Lane, queue: Any) -> None:
        """A lane just opened (its queue lane is empty and known to nobody else yet)."""
        # The first array lane without a key takes the queue's C fast path (put_row) and
        # stays pinned for the run: with a single lane allowed, it would keep every other
        # signature out for good. The queue takes what describe() would send to this lane
        # whole: no more samples than split_oversized allows in one part, no more bytes
        # than the budget (put() says why an item is refused).
        if (lane.kind == ARRAY and self._pinned is None and lane.key is None and self.put_row is not None
                and self._config.max_lanes > 1 and len(lane.sample_shape) <= _ROW_MAX_NDIM):
            with self._schema_lock:
                queue.set_row_schema(lane.dtype, lane.sample_shape, lane.index, self._split_above, self._max_bytes)
                self._pinned = (lane, queue)
            if len(lane.sample_shape) == 1 and not (
                    self._max_bytes and lane.sample_shape[0] * lane.dtype.itemsize > self._max_bytes):
                self._row = (lane, lane.dtype, lane.sample_shape)

    def _first_generic(self, item: Any) -> None:
        """Once per run: items that are not numpy arrays each get their own call."""
        with self._say_lock:
            if self._said_generic:
                return
            self._said_generic = True
        if self._config.batch_generic_items:
            return
        kind = type(item)
        hint = (" It offers __array__: pass np.asarray(item) to have it batched."
                if hasattr(item, "__array__") else "")
        logger.warning("fastbatch %s: items of type %s.%s are not numpy arrays, so they are not batched: "
                       "each is processed by its own call of the batch function (on max_workers=%d "
                       "threads).%s Set batch_generic_items=True to receive them as one list instead.",
                       self.name, kind.__module__, kind.__qualname__, self._config.max_workers, hint)
