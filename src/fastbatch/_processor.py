"""``BatchProcessor``: lifecycle (start/stop/pause/resume) and intake (enqueue).

The batching itself happens in ``_worker``; this module validates what comes in, owns the
state machine and the threads, and assembles ``get_stats()`` and ``health()``.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from . import _backend
from ._adaptive import BatchSizer
from ._config import BatchPriority, BatchProcessorConfig
from ._errors import (BatchDtypeError, BatchShapeError, ProcessorStoppedError, QueueClosedError,
                      QueueFullError)
from ._future import BatchFuture, fail_futures
from ._deadlines import DeadlineReaper
from ._health import HealthMonitor, HealthSnapshot
from ._stats import BatchStats
from ._threads import CallbackRunner
from ._worker import Worker

logger = logging.getLogger("fastbatch")

T = TypeVar("T")
R = TypeVar("R")
_P = TypeVar("_P", bound="BatchProcessor[Any, Any]")

_IDLE, _RUNNING, _STOPPING, _STOPPED = "idle", "running", "stopping", "stopped"
_ids = itertools.count(1)
_live: weakref.WeakSet[BatchProcessor[Any, Any]] = weakref.WeakSet()
_ndarray = np.ndarray
_NORMAL = BatchPriority.NORMAL
# Accepts the enum members and their int values; bools are refused separately.
_PRIORITIES = {int(p): int(p) for p in BatchPriority}
# How long stop() still waits for a worker whose batch function overran the deadline.
_ABANDON_GRACE_S = 1.0


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


class BatchProcessor(Generic[T, R]):
    """Collects items from any thread into batches and runs a batch function on them.

    Args:
        config: the settings; ``BatchProcessorConfig()`` when omitted.
        name: used in thread names, logs and errors; ``batch-<n>`` when omitted.

    Raises:
        TypeError: ``config`` is not a ``BatchProcessorConfig``.
        ValueError: the config breaks one of its rules (checked again here).
    """

    def __init__(self, config: BatchProcessorConfig | None = None, *, name: str | None = None) -> None:
        if config is None:
            config = BatchProcessorConfig()
        elif not isinstance(config, BatchProcessorConfig):
            raise TypeError(f"config must be a BatchProcessorConfig, not {type(config).__name__}")
        config.validate()
        self.config = config
        self.name = name or f"batch-{next(_ids)}"
        self.stats = BatchStats(config.monitoring_window, enabled=config.enable_monitoring)
        self.sizer = BatchSizer(config)
        self._lock = threading.Lock()  # guards the lifecycle fields below and the schema
        self._state = _IDLE
        self._stopped = threading.Event()
        self._stoppers: set[int | None] = set()  # threads inside stop(), for re-entrant calls
        self._paused = False
        self._queue: Any = None
        self._worker: Worker | None = None
        self._monitor: HealthMonitor | None = None
        self._abort = threading.Event()
        self._reaper: DeadlineReaper | None = None
        self._callbacks: CallbackRunner | None = None
        self._expired_before = 0  # expired in earlier runs
        self._default_deadline = config.default_deadline
        self._max_bytes = config.max_batch_bytes
        self._reset_schema()
        self._forked = False
        _live.add(self)
        self._count_lock = threading.Lock()
        self._submitted_before = 0  # accepted by the queues of earlier runs
        self._refused = 0

    def __repr__(self) -> str:
        return f"<BatchProcessor {self.name!r} {self._state} core={_backend.NAME}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, process_func: Callable[[Any], Any]) -> None:
        """Start the worker (and the health monitor) with ``process_func``.

        ``process_func`` receives a batch (an ``(n, ...)`` array for array items, one item
        or a list for other items, see the README) and returns one result per sample.

        Raises:
            TypeError: ``process_func`` is not callable.
            RuntimeError: the processor is already running or still stopping.
        """
        if not callable(process_func):
            raise TypeError(f"process_func must be callable, not {type(process_func).__name__}")
        with self._lock:
            if self._state in (_RUNNING, _STOPPING):
                raise RuntimeError(f"BatchProcessor {self.name!r} is already {self._state}")
            self._reset_schema()
            if self._queue is not None:
                self._submitted_before += self._queue.total_puts
            if self._reaper is not None:
                self._expired_before += self._reaper.expired
            self._abort = threading.Event()
            self._stopped.clear()
            cfg = self.config
            queue = _backend.RequestQueue(cfg.max_queue_size, cfg.enable_priority_queue)
            if self._paused:
                queue.pause()
            callbacks = CallbackRunner(self.name)
            worker = Worker(self.name, cfg, process_func, queue, self.sizer, self.stats, self._abort,
                            callbacks)
            worker.on_exit = self._worker_exited
            monitor = HealthMonitor(self.name, cfg, self.sizer, queue.__len__,
                                    lambda: worker.batch_started_ns)
            self._reaper = DeadlineReaper(self.name, callbacks.submit)
            self._callbacks = callbacks
            self._queue, self._worker, self._monitor = queue, worker, monitor
            self._state = _RUNNING
            worker.thread.start()
            if cfg.enable_health_monitoring:
                monitor.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop intake at once, process what is queued while time remains, then fail the rest.

        Later enqueues raise ``ProcessorStoppedError``. Items still queued (or a batch still
        running) when ``timeout`` runs out get ``ProcessorStoppedError``. Joins the threads
        it started. Idempotent and safe from any thread; called from inside the batch
        function or a done-callback it returns at once and the worker finishes the stop.

        Args:
            timeout: seconds to wait for the queue to drain; ``None`` waits until it has.

        Raises:
            ValueError: ``timeout`` is negative or NaN.
        """
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be None or a number >= 0, not {timeout!r}")
        me = threading.current_thread()
        with self._lock:
            state, worker, queue = self._state, self._worker, self._queue
            if state == _RUNNING:
                self._state = _STOPPING
                queue.close()  # intake stops at once, whoever asked
            if state in (_IDLE, _STOPPED) or worker is None:
                return
            nested = me.ident in self._stoppers
            if not nested:
                self._stoppers.add(me.ident)
        if nested or me is worker.thread or me.name.startswith(
                (f"fastbatch-item-{self.name}-", f"fastbatch-callbacks-{self.name}")):
            # A done-callback inside our own stop(), or the worker's own threads: waiting
            # here would wait for ourselves. The drain goes on; the worker ends the stop.
            if not nested:
                with self._lock:
                    self._stoppers.discard(me.ident)
            return
        try:
            # Every caller bounds its own wait: stop(0) fails what is left at once even
            # while another stop(None) is draining.
            worker.thread.join(timeout)
            if worker.thread.is_alive():
                self._abandon(worker, queue, timeout)
            self._finish_stop()
        finally:
            with self._lock:
                self._stoppers.discard(me.ident)

    def _abandon(self, worker: Worker, queue: Any, timeout: float | None) -> None:
        """Past the stop deadline: fail what is queued and the batch in flight."""
        self._abort.set()
        message = f"BatchProcessor {self.name!r} stopped (timeout={timeout}s) before this item was processed"
        _, futures, _ = queue.drain()
        worker.fail_leftovers(futures, message)
        self.stats.record_error(fail_futures(worker.inflight, ProcessorStoppedError(message),
                                             run_callbacks=worker.callbacks.submit))
        worker.thread.join(_ABANDON_GRACE_S)
        if worker.thread.is_alive():
            logger.warning("fastbatch %s: the batch function is still running after stop(); "
                           "its thread is left to finish on its own", self.name)

    def _worker_exited(self) -> None:
        """Called on the worker thread as it ends; completes a stop begun on that thread."""
        if self._state == _STOPPING and not self._stopped.is_set():
            self._finish_stop()

    def _finish_stop(self) -> None:
        monitor = self._monitor
        if monitor is not None:
            monitor.stop()
        if self._reaper is not None:
            self._reaper.stop()
        if self._callbacks is not None:
            self._callbacks.stop()  # after everything that can finish a future
        with self._lock:
            if self._state == _STOPPING:
                self._state = _STOPPED
            self._stopped.set()

    def pause(self) -> None:
        """Hold dispatch: no new batch starts until ``resume()``; items still queue up."""
        with self._lock:
            self._paused = True
            if self._queue is not None:
                self._queue.pause()

    def resume(self) -> None:
        """Let batches start again after ``pause()``."""
        with self._lock:
            self._paused = False
            if self._queue is not None:
                self._queue.resume()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._state == _RUNNING

    # -- intake ---------------------------------------------------------------------------

    def enqueue(self, item: T, timeout: float | None = None,
                priority: BatchPriority | int = BatchPriority.NORMAL, deadline: float | None = None) -> None:
        """Queue ``item`` for processing without a future (errors are logged and counted).

        Args:
            item: a numpy array (1-D: one sample; ``(n, ...)``: n samples) or, for a
                processor of non-array items, any object but ``None``.
            timeout: seconds to wait for room in a full queue; ``None`` waits as long as
                it takes, 0 not at all.
            priority: a ``BatchPriority`` (lower goes first when priorities are enabled).
            deadline: seconds the item may wait in the queue (default: the config's
                ``default_deadline``); past it the item is dropped before its batch forms
                and, from ``enqueue_predict``, its future fails with ``ItemExpiredError``.

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds.
            ProcessorStoppedError: the processor is not running.
            TypeError, ValueError, BatchShapeError, BatchDtypeError: a bad item, timeout
                or priority (the message names the problem).
        """
        # The hot path: default priority, no deadline, running. The queue checks in C that
        # the item is a row like the ones before (put_row); anything else goes to _put.
        if (priority is _NORMAL and deadline is None and self._default_deadline is None
                and (queue := self._queue) is not None):
            try:
                if queue.put_row(item, None, timeout):
                    return
            except QueueClosedError:
                raise self._stopped_error() from None
            except QueueFullError:
                self._count_refusal()
                raise
        self._put(item, None, timeout, priority, deadline)

    def enqueue_predict(self, item: T, timeout: float | None = None,
                        priority: BatchPriority | int = BatchPriority.NORMAL,
                        deadline: float | None = None) -> BatchFuture[R]:
        """Queue ``item`` and return a future of its result (its rows of the batch result).

        Arguments as for :meth:`enqueue`. A full queue gives a future failed with
        ``QueueFullError`` (seed behaviour), or raises it when ``raise_on_queue_full``.

        Raises:
            ProcessorStoppedError: the processor is not running.
            TypeError, ValueError, BatchShapeError, BatchDtypeError: as for ``enqueue``.
        """
        future: BatchFuture[R] = BatchFuture()
        try:
            if (priority is _NORMAL and deadline is None and self._default_deadline is None
                    and (queue := self._queue) is not None):
                try:
                    queued = queue.put_row(item, future, timeout)
                except QueueClosedError:
                    raise self._stopped_error() from None
                except QueueFullError:
                    self._count_refusal()
                    raise
                if not queued:
                    self._put(item, future, timeout, priority, deadline)
            else:
                self._put(item, future, timeout, priority, deadline)
        except QueueFullError as exc:
            if self.config.raise_on_queue_full:
                raise
            # Stored without its traceback: the frames in it would keep the item alive
            # for as long as the caller keeps the future.
            future.set_exception(exc.with_traceback(None))
        return future

    def _put(self, item: Any, future: Any, timeout: float | None, priority: Any,
             deadline: float | None = None) -> None:
        """The general path of both enqueue methods: validate everything, then put."""
        # Arguments first: a call refused for them must not fix the processor's schema.
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout >= 0):
            raise (ValueError if isinstance(timeout, (int, float)) else TypeError)(
                f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
        if deadline is None:
            deadline = self._default_deadline
        elif isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline < math.inf:
            raise ValueError(f"deadline must be None or a number of seconds > 0, not {deadline!r}")
        if deadline is not None and future is None:
            future = BatchFuture()  # expiry is tracked through a future, even for enqueue()
        prio: int | None
        if priority is _NORMAL:
            prio = 2
        else:
            cls = priority.__class__
            prio = _PRIORITIES.get(priority) if cls is BatchPriority or cls is int or (
                cls is not bool and isinstance(priority, np.integer)) else None
            if prio is None:
                raise ValueError(f"priority must be a BatchPriority (0..4), not {priority!r}")
        if item.__class__ is _ndarray and item.shape == self._row_shape and (
                (dtype := item.dtype) is self._dtype or dtype == self._dtype):
            samples, nbytes = 1, item.nbytes
        else:
            samples, nbytes = self._describe(item)
        queue = self._queue
        if queue is None:
            hint = (" (it was running in the parent process; its threads do not exist in this"
                    " forked child)" if self._forked else "")
            raise ProcessorStoppedError(f"BatchProcessor {self.name!r} is not running{hint}: call start() first")
        try:
            queue.put(item, future, samples, nbytes, prio, timeout)
        except QueueClosedError:
            raise self._stopped_error() from None
        except QueueFullError:
            self._count_refusal()
            raise
        if deadline is not None:
            reaper = self._reaper
            if reaper is not None:
                reaper.add(future, deadline)

    def _count_refusal(self) -> None:
        with self._count_lock:
            self._refused += 1

    def _stopped_error(self) -> ProcessorStoppedError:
        return ProcessorStoppedError(f"BatchProcessor {self.name!r} is {self._state}: it accepts no more items")

    def _reset_schema(self) -> None:
        # Fixed by the first item: the dtype and sample shape every later array must have,
        # or "generic" for a processor of non-array items.
        self._kind: str | None = None
        self._dtype: Any = None
        self._sample_shape: tuple[int, ...] = ()
        self._row_shape: Any = None  # shape of a 1-D item (= the sample shape) when 1-D

    def _describe(self, item: Any) -> tuple[int, int]:
        """Validate an item against the processor's schema; returns (samples, nbytes)."""
        if not isinstance(item, np.ndarray):
            if item is None:
                raise TypeError("item is None: enqueue a numpy array or an object the batch function accepts")
            if self._kind == "array":
                raise TypeError(f"this processor batches numpy arrays (dtype {self._dtype}, sample shape "
                                f"{_shape(self._sample_shape)}); got {type(item).__name__}")
            if self._kind is None:
                with self._lock:
                    self._kind = self._kind or "generic"
                if self._kind != "generic":
                    return self._describe(item)
            return 1, 0
        if self._kind == "generic":
            raise TypeError("this processor was given non-array items; an array cannot be batched with them")
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
        # rows of its shape skip this check through the fast paths.
        if self._max_bytes and item.nbytes > self._max_bytes:
            raise ValueError(f"item of {item.nbytes} bytes exceeds the batch byte budget "
                             f"max_batch_memory_mb={self.config.max_batch_memory_mb} ({self._max_bytes} bytes)")
        if self._kind is None:
            with self._lock:
                if self._kind is None:
                    self._dtype, self._sample_shape = item.dtype, sample_shape
                    self._row_shape = sample_shape if len(sample_shape) == 1 else None
                    self._kind = "array"
                    queue = self._queue
                    # Rows of this schema now take the queue's C fast path (put_row),
                    # unless one row alone would exceed the byte budget.
                    if (queue is not None and self._row_shape is not None and not (
                            self._max_bytes and sample_shape[0] * item.dtype.itemsize > self._max_bytes)):
                        queue.set_row_schema(item.dtype, self._row_shape)
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

    # -- control and observation ----------------------------------------------------------

    def update_batch_size(self, new_size: int) -> None:
        """Set the batch size (samples) used from the next batch on.

        Raises:
            TypeError: ``new_size`` is not an int.
            ValueError: ``new_size`` is outside ``[min_batch_size, max_batch_size]``.
        """
        if isinstance(new_size, bool) or not isinstance(new_size, (int, np.integer)):
            raise TypeError(f"new_size must be an int, not {type(new_size).__name__}")
        lo, hi = self.config.min_batch_size, self.config.max_batch_size
        if not lo <= new_size <= hi:
            raise ValueError(f"new_size={new_size} is outside [min_batch_size={lo}, max_batch_size={hi}]")
        self.sizer.set(int(new_size))

    def get_stats(self) -> dict[str, Any]:
        """A snapshot of every statistic the seed lists, plus a few of ours (README)."""
        stats = self.stats.get_stats()
        queue, worker = self._queue, self._worker
        submitted = self._submitted_before + (queue.total_puts if queue is not None else 0)
        refused = self._refused
        reaper = self._reaper
        expired = self._expired_before + (reaper.expired if reaper is not None else 0)
        # Expired items stay in the queue until the worker drops them: count them once.
        queued = len(queue) if queue is not None and self._state != _STOPPED else 0
        queued = max(0, queued - max(0, expired - self.stats.expired_dropped))
        stats.update(
            current_batch_size=self.sizer.size,
            system_load=self.sizer.load,
            active_batches=1 if worker is not None and worker.batch_started_ns else 0,
            items_in_flight=worker.holding if worker is not None and self._state != _STOPPED else 0,
            queue_size=queued,
            is_paused=self._paused,
            is_stopping=self._state == _STOPPING,
            is_running=self._state == _RUNNING,
            total_submitted=submitted,
            total_refused=refused,
            total_expired=expired,
            arrival_rate=self.sizer.arrival_rate,
            core=_backend.NAME,
        )
        return stats

    def health(self) -> HealthSnapshot:
        """Check health now (read-only: no garbage collection, no resizing)."""
        monitor = self._monitor
        if monitor is None or self._state != _RUNNING:
            return HealthSnapshot("stopped", (f"the processor is {self._state}",), math.nan, 0, 0.0,
                                  self.sizer.size)
        return monitor.check(act=False)

    # -- asyncio --------------------------------------------------------------------------

    async def enqueue_async(self, item: T, timeout: float | None = None,
                            priority: BatchPriority | int = BatchPriority.NORMAL,
                            deadline: float | None = None) -> R:
        """Queue ``item`` and await its result without ever blocking the event loop.

        A full queue is waited out with ``asyncio.sleep`` back-off, not a blocking put.
        Cancelling the awaiting task cancels the item: it is skipped if its batch has not
        started (and never queued if it was still waiting for room).

        Args:
            item: as for :meth:`enqueue`.
            timeout: seconds to wait for room in a full queue; ``None`` waits, 0 does not.
                To bound the whole wait, use ``asyncio.wait_for``.
            priority: a ``BatchPriority``.
            deadline: seconds the item may wait in the queue once queued, as for
                :meth:`enqueue` (``ItemExpiredError`` past it).

        Returns:
            The item's result (its rows of the batch result).

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds (whatever
                ``raise_on_queue_full`` says: there is no future to hand back).
            ProcessorStoppedError: the processor is not running, or stopped first.
            TypeError, ValueError, BatchShapeError, BatchDtypeError: as for ``enqueue``.
            BaseException: what the batch function raised for the item's batch.
        """
        from ._aio import enqueue_async  # asyncio is imported only by those who use it

        return await enqueue_async(self, item, priority=priority, timeout=timeout, deadline=deadline)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's threads are gone and any lock may be held."""
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self.sizer._lock = threading.Lock()
        self.stats._lock = threading.Lock()
        if self._state in (_RUNNING, _STOPPING):
            self._forked = True
        self._state = _STOPPED if self._state != _IDLE else _IDLE
        self._queue = self._worker = self._monitor = self._reaper = self._callbacks = None
        self._stoppers = set()
        self._stopped = threading.Event()
        self._stopped.set()


def _after_fork_in_child() -> None:
    from . import _future

    _future._LOCK = threading.Lock()
    for processor in list(_live):
        processor._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
