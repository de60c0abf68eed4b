"""Intake: what a valid item and a valid enqueue call are, decided in one place.

``enqueue``, ``enqueue_predict`` and ``enqueue_async`` all go through :meth:`Intake.put`.
It checks the call's arguments (timeout, priority, deadline) and the item against the
run's schema — array or not, dtype, sample shape, byte budget — and hands the queue only
what it has checked; the cores just copy. The common case (a row of the schema, default
priority, no deadline) costs one C call: the queue's ``put_row`` checks the row itself.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np

from ._config import BatchPriority, BatchProcessorConfig
from . import _tensors
from ._counters import Counters
from ._errors import (BatchDtypeError, BatchShapeError, ProcessorStoppedError, QueueClosedError,
                      QueueFullError)

#: The priority of a call that names none.
DEFAULT_PRIORITY = BatchPriority.NORMAL
_DEFAULT = DEFAULT_PRIORITY
# Accepts the enum members and their int values; bools are refused separately.
_PRIORITIES = {int(p): int(p) for p in BatchPriority}
_ndarray = np.ndarray
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


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


class Intake:
    """Validates and queues the items of one processor, run after run.

    The schema (the dtype and sample shape every array must have, or "generic" for a
    processor of non-array items) is fixed by the first accepted item of a run and
    forgotten at the next ``attach``.
    """

    def __init__(self, name: str, config: BatchProcessorConfig, counters: Counters) -> None:
        self.name = name
        self._config = config
        self._counters = counters
        self._max_bytes = config.max_batch_bytes
        self._default_deadline = config.default_deadline
        self._lock = threading.Lock()  # fixes the schema once
        self.queue: Any = None  # the current run's queue; None before the first start
        self.run: Any = None
        # The fast path, for the enqueue methods to call directly: the queue's C
        # ``put_row(item, future, None)``, which queues a row of the run's schema and
        # returns False for anything else. Only for a call with no timeout, the default
        # priority and no deadline; None when a default deadline applies to every item.
        # A QueueClosedError from it means: call put() (which says why it is closed).
        self.put_row: Any = None
        self.not_running_hint = ""
        self._reset_schema()

    def attach(self, run: Any) -> None:
        """Route items to ``run``'s queue from now on, with a fresh schema."""
        self._reset_schema()
        self.run = run
        self.queue = run.queue
        self.put_row = run.queue.put_row if self._default_deadline is None else None

    def reset_after_fork(self, hint: str) -> None:
        self._lock = threading.Lock()
        self.queue = self.run = self.put_row = None
        self.not_running_hint = hint

    def _reset_schema(self) -> None:
        self._kind: str | None = None
        self._dtype: Any = None
        self._sample_shape: tuple[int, ...] = ()
        self._row_shape: Any = None  # the sample shape when samples are 1-D
        self._device: Any = None  # tensors: the device every item must be on

    # -- the one way in ---------------------------------------------------------------

    def put(self, item: Any, future: Any, timeout: Any, priority: Any, deadline: Any) -> Any:
        """Queue ``item`` (with ``future``, or None); returns the future it was queued with.

        A deadline needs a future to expire, so one is made for an item without one.

        Raises:
            QueueFullError, ProcessorStoppedError, and TypeError / ValueError /
            BatchShapeError / BatchDtypeError for a bad item or argument.
        """
        queue = self.queue
        if priority is _DEFAULT and deadline is None and self._default_deadline is None and queue is not None:
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
            return self._put(item, future, timeout, priority, deadline)
        return self._put(item, future, check_timeout(timeout), priority, deadline)

    def _put(self, item: Any, future: Any, timeout: float | None, priority: Any, deadline: Any) -> Any:
        # Arguments first: a call refused for them must not fix the schema.
        if deadline is None:
            deadline = self._default_deadline
        else:
            deadline = check_deadline(deadline)
        prio = 2 if priority is _DEFAULT else check_priority(priority)
        if item.__class__ is _ndarray and item.shape == self._row_shape and (
                (dtype := item.dtype) is self._dtype or dtype == self._dtype):
            samples, nbytes = 1, item.nbytes
        else:
            samples, nbytes = self.describe(item)
        queue, run = self.queue, self.run
        if queue is None:
            raise ProcessorStoppedError(f"BatchProcessor {self.name!r} is not running{self.not_running_hint}: "
                                        "call start() first")
        if deadline is not None and future is None:
            future = run.new_future()  # expiry is tracked through a future, even for enqueue()
        try:
            queue.put(item, future, samples, nbytes, prio, timeout)
        except QueueClosedError:
            raise self.stopped_error() from None
        except QueueFullError:
            self._counters.add(refused=1)
            raise
        if deadline is not None:
            run.reaper.add(future, deadline)
        return future

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

    def describe(self, item: Any) -> tuple[int, int]:
        """Check an item against the schema (fixing it on first use); ``(samples, nbytes)``."""
        if not isinstance(item, np.ndarray):
            if item is None:
                raise TypeError("item is None: enqueue a numpy array or an object the batch function accepts")
            if self._kind == "tensor" or (self._kind is None and _tensors.is_tensor(item)):
                return self._describe_tensor(item)
            if self._kind == "array":
                raise TypeError(f"this processor batches numpy arrays (dtype {self._dtype}, sample shape "
                                f"{_shape(self._sample_shape)}); got {type(item).__name__}")
            if self._kind is None:
                with self._lock:
                    first = self._kind is None
                    self._kind = self._kind or "generic"
                if self._kind != "generic":
                    return self.describe(item)
                if first and not self._config.batch_generic_items:
                    self._say_not_batched(item)
            return 1, 0
        if self._kind == "generic":
            raise TypeError("this processor was given non-array items; an array cannot be batched with them")
        if self._kind == "tensor":
            raise TypeError(f"this processor batches torch tensors (dtype {self._dtype}, sample shape "
                            f"{_shape(self._sample_shape)}, device {self._device}); got a numpy array")
        if item.ndim == 0:
            raise ValueError(f"a 0-d array ({item!r}) cannot be batched: pass a 1-D row "
                             "(x.reshape(1)) or an (n, ...) mini-batch")
        if item.dtype.hasobject:
            raise BatchDtypeError(f"arrays of dtype {item.dtype} cannot be batched: they hold Python objects")
        if item.ndim == 1:
            samples, sample_shape = 1, item.shape
        else:
            samples, sample_shape = item.shape[0], item.shape[1:]
            if samples == 0:
                raise ValueError(f"a mini-batch of 0 samples (shape {_shape(item.shape)}) cannot be batched")
        # Before the schema is fixed: an item refused for its size must not let later
        # rows of its shape skip this check through the fast path.
        if self._max_bytes and item.nbytes > self._max_bytes:
            raise ValueError(f"item of {item.nbytes} bytes exceeds the batch byte budget "
                             f"max_batch_memory_mb={self._config.max_batch_memory_mb} ({self._max_bytes} bytes)")
        if self._kind is None:
            self._fix_schema(item, sample_shape)
        if item.dtype != self._dtype:
            raise BatchDtypeError(f"item has dtype {item.dtype} but the batch has dtype {self._dtype}")
        if sample_shape != self._sample_shape:
            if item.ndim == 1:
                raise BatchShapeError(f"item has shape {_shape(item.shape)} but the batch has shape "
                                      f"{_shape(self._sample_shape)}")
            raise BatchShapeError(f"item has sample shape {_shape(sample_shape)} (array shape "
                                  f"{_shape(item.shape)}) but the batch has sample shape "
                                  f"{_shape(self._sample_shape)}")
        return int(samples), item.nbytes

    def _describe_tensor(self, item: Any) -> tuple[int, int]:
        """A torch tensor item: one schema (dtype, sample shape, device) per run."""
        if not _tensors.is_tensor(item):
            raise TypeError(f"this processor batches torch tensors (dtype {self._dtype}, sample shape "
                            f"{_shape(self._sample_shape)}, device {self._device}); got {type(item).__name__}")
        samples, nbytes, signature = _tensors.describe(item)
        if self._max_bytes and nbytes > self._max_bytes:
            raise ValueError(f"item of {nbytes} bytes exceeds the batch byte budget "
                             f"max_batch_memory_mb={self._config.max_batch_memory_mb} ({self._max_bytes} bytes)")
        if self._kind is None:
            with self._lock:
                if self._kind is None:
                    self._dtype, self._sample_shape, self._device = signature
                    self._kind = "tensor"
                    if self.run is not None:
                        self.run.item_kind = "tensor"  # the worker batches by the run's kind
            if self._kind != "tensor":
                return self.describe(item)
        _tensors.check((self._dtype, self._sample_shape, self._device), item, signature)
        return samples, nbytes

    def _say_not_batched(self, item: Any) -> None:
        """Once per run: items that are not numpy arrays each get their own call."""
        kind = type(item)
        hint = (" It offers __array__: pass np.asarray(item) to have it batched."
                if hasattr(item, "__array__") else "")
        logger.warning("fastbatch %s: items of type %s.%s are not numpy arrays, so they are not batched: "
                       "each is processed by its own call of the batch function (on max_workers=%d "
                       "threads).%s Set batch_generic_items=True to receive them as one list instead.",
                       self.name, kind.__module__, kind.__qualname__, self._config.max_workers, hint)

    def _fix_schema(self, item: Any, sample_shape: tuple[int, ...]) -> None:
        with self._lock:
            if self._kind is not None:
                return
            self._dtype, self._sample_shape = item.dtype, sample_shape
            self._row_shape = sample_shape if len(sample_shape) == 1 else None
            self._kind = "array"
            queue = self.queue
            # Rows of this schema now take the queue's C fast path (put_row), unless one
            # row alone would exceed the byte budget.
            if (queue is not None and self._row_shape is not None and not (
                    self._max_bytes and sample_shape[0] * item.dtype.itemsize > self._max_bytes)):
                queue.set_row_schema(item.dtype, self._row_shape)
