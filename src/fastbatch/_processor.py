"""``BatchProcessor``: the public face of a processor — lifecycle, intake, observation.

It keeps what outlives a run (config, statistics, scheduler, totals, the pause flag) and
delegates the rest: a ``Run`` (``_run``) owns each ``start()`` → ``stop()`` lifetime and its
stop protocol, ``Intake`` (``_intake``) decides what a valid item is, ``Counters``
(``_counters``) holds every total.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import numpy as np

from ._config import BatchPriority, BatchProcessorConfig
from ._errors import QueueClosedError, QueueFullError
from ._future import BatchFuture
from .core import _backend
from .items._intake import DEFAULT_PRIORITY, Intake, check_timeout
from .observe._counters import Counters
from .observe._stats import BatchStats
from .runtime._health import HealthMonitor, HealthSnapshot
from .runtime._run import RUNNING, STOPPED, STOPPING, Run
from .runtime._scheduler import Scheduler

logger = logging.getLogger("fastbatch")

T = TypeVar("T")
R = TypeVar("R")
_P = TypeVar("_P", bound="BatchProcessor[Any, Any]")

_ids = itertools.count(1)
_live: weakref.WeakSet[BatchProcessor[Any, Any]] = weakref.WeakSet()
_DEFAULT = DEFAULT_PRIORITY


def _stop_dropped(run: Run, name: str, timeout: float) -> None:
    """The finalizer of a running processor: it was garbage-collected, or the interpreter
    is exiting, without ``stop()``. Stop it as ``stop(shutdown_timeout)`` would, and say
    what could not be finished."""
    if run.state != RUNNING:
        return
    logger.warning("fastbatch: BatchProcessor %r was dropped without stop() (garbage-collected or at "
                   "interpreter exit) with %d item(s) queued; stopping it, draining for up to %g s "
                   "(shutdown_timeout)", name, len(run.queue), timeout)
    run.stop(timeout)
    if run.abandoned:
        logger.warning("fastbatch: BatchProcessor %r: %d item(s) were not processed within "
                       "shutdown_timeout=%g s and failed with ProcessorStoppedError",
                       name, run.abandoned, timeout)


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
        self._counters = Counters()
        self.stats = BatchStats(config.monitoring_window, enabled=config.enable_monitoring,
                                counters=self._counters, time_buckets=config.latency_buckets,
                                size_buckets=config.size_buckets)
        self.scheduler = Scheduler(config, name=self.name)
        self._intake = Intake(self.name, config, self._counters, self.scheduler.predicted_latency_s)
        self._lock = threading.Lock()  # one start() or stop() transition at a time
        self._reconfigure_lock = threading.Lock()  # one reconfigure() at a time
        self._run: Run | None = None
        self._finalizer: weakref.finalize | None = None  # type: ignore[type-arg]
        self._paused = False
        # Set by an owner that stops the processor itself when it is dropped (the
        # decorator): then no finalizer of ours is registered.
        self._managed = False
        _live.add(self)

    def __repr__(self) -> str:
        return f"<BatchProcessor {self.name!r} {self._state} core={_backend.NAME}>"

    @property
    def _state(self) -> str:
        run = self._run
        return "idle" if run is None else run.state

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, process_func: Callable[[Any], Any], *, loop: Any = None) -> None:
        """Start the worker (and the health monitor) with ``process_func``.

        ``process_func`` receives a batch (an ``(n, ...)`` array for array items, one item
        or a list for other items, see the README) and returns one result per sample. It
        may be a coroutine function (``async def``): it then runs on ``loop`` when given
        (an event loop running in another thread, for a function bound to a client or
        session on that loop), else on an event loop of the processor's own.

        A ``loop`` given with a function that turns out to return plain results is not
        used (the ``fastbatch`` logger says so at the first batch).

        Raises:
            TypeError: ``process_func`` is not callable, or ``loop`` is not an event loop.
            ValueError: ``loop`` is closed or not running.
            RuntimeError: the processor is already running or still stopping.
        """
        if not callable(process_func):
            raise TypeError(f"process_func must be callable, not {type(process_func).__name__}")
        with self._lock:
            old = self._run
            if old is not None and old.state in (RUNNING, STOPPING):
                raise RuntimeError(f"BatchProcessor {self.name!r} is already {old.state}")
            run = Run(self.name, self.config, process_func, self.scheduler, self.stats, self._counters,
                      self._paused, loop)
            if old is not None:  # only once the new run exists: a refused start changes nothing
                self._counters.close_run(old.accepted())
            self._intake.attach(run)
            self._run = run
            self.stats.arrivals.start(_backend.monotonic_ns() / 1e9, self._counters.submitted_before)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if not self._managed:
                # Holds the run, not the processor: dropping the processor stops its run.
                self._finalizer = weakref.finalize(self, _stop_dropped, run, self.name,
                                                   self.config.shutdown_timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop intake at once, process what is queued while time remains, then fail the rest.

        Later enqueues raise ``ProcessorStoppedError``. Items still queued (or a batch still
        running) when ``timeout`` runs out get ``ProcessorStoppedError``, and ``stop``
        returns within ``timeout`` + 50 ms. Joins the threads it started (a batch function
        or done-callback that is still running then is left to finish, with a warning).
        Idempotent and safe from any thread; called from inside the batch function or a
        done-callback it returns at once and the worker finishes the stop.

        Args:
            timeout: seconds to wait for the queue to drain; ``None`` waits until it has.

        Raises:
            TypeError, ValueError: ``timeout`` is not None or a number >= 0.
        """
        timeout = check_timeout(timeout)
        run = self._run
        if run is not None:
            run.stop(timeout)

    def pause(self) -> None:
        """Hold dispatch: no new batch starts until ``resume()``; items still queue up."""
        with self._lock:
            self._paused = True
            if self._run is not None:
                self._run.pause()

    def resume(self) -> None:
        """Let batches start again after ``pause()``."""
        with self._lock:
            self._paused = False
            if self._run is not None:
                self._run.resume()

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop with ``config.shutdown_timeout``: a stuck batch function cannot hang the exit."""
        self.stop(self.config.shutdown_timeout)

    @property
    def is_running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        run = self._run
        return run is not None and run.state == RUNNING

    # -- intake ---------------------------------------------------------------------------

    def enqueue(self, item: T, timeout: float | None = None,
                priority: BatchPriority | int = _DEFAULT, deadline: float | None = None,
                key: Hashable | None = None) -> None:
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
            key: any hashable (a model name, a tenant): batches never mix items of
                different keys, and a batch function with a ``key`` parameter receives
                its batch's key (None when the items were given none).

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds
                (``TooManyLanesError``: the item would open a lane past ``max_lanes``).
            ProcessorStoppedError: the processor is not running.
            TypeError, ValueError, BatchDtypeError: a bad item, timeout, priority or key
                (the message names the problem).
        """
        if timeout is None and priority is _DEFAULT and deadline is None and key is None:
            # The common call costs one C call (Intake.put_row); anything else, put().
            put_row = self._intake.put_row
            if put_row is not None:
                try:
                    if put_row(item, None, None):
                        return
                except QueueClosedError:
                    pass  # put() raises the error that says why
        self._intake.put(item, None, timeout, priority, deadline, key)

    def enqueue_predict(self, item: T, timeout: float | None = None,
                        priority: BatchPriority | int = _DEFAULT,
                        deadline: float | None = None, key: Hashable | None = None) -> BatchFuture[R]:
        """Queue ``item`` and return a future of its result (its rows of the batch result).

        Arguments as for :meth:`enqueue`. A full queue gives a future failed with
        ``QueueFullError`` (the classic behaviour), or raises it when ``raise_on_queue_full``.

        Raises:
            ProcessorStoppedError: the processor is not running.
            TypeError, ValueError, BatchDtypeError: as for ``enqueue``.
        """
        intake = self._intake
        future: BatchFuture[R] = BatchFuture(intake.run)
        if timeout is None and priority is _DEFAULT and deadline is None and key is None:
            # The common call costs one C call (Intake.put_row); anything else, put().
            put_row = intake.put_row
            if put_row is not None:
                try:
                    if put_row(item, future, None):
                        return future
                except QueueClosedError:
                    pass  # put() raises the error that says why
        try:
            intake.put(item, future, timeout, priority, deadline, key)
        except QueueFullError as exc:
            if self.config.raise_on_queue_full:
                raise
            # Stored without its traceback: the frames in it would keep the item alive
            # for as long as the caller keeps the future.
            future.set_exception(exc.with_traceback(None))
        return future

    # -- control and observation ----------------------------------------------------------

    def update_batch_size(self, new_size: int) -> int:
        """Set the batch size (samples) used from the next batch on; returns the size applied.

        As in the classic API, a size outside ``[min_batch_size, max_batch_size]`` is
        clamped into it (logged at DEBUG on the ``fastbatch`` logger).

        Raises:
            TypeError: ``new_size`` is not an int.
        """
        if isinstance(new_size, bool) or not isinstance(new_size, (int, np.integer)):
            raise TypeError(f"new_size must be an int, not {type(new_size).__name__}")
        applied = self.scheduler.set(int(new_size))
        if applied != new_size:
            logger.debug("fastbatch %s: update_batch_size(%d) clamped to %d (min_batch_size=%d, "
                         "max_batch_size=%d)", self.name, new_size, applied, self.config.min_batch_size,
                         self.config.max_batch_size)
        return applied

    def reconfigure(self, *, max_batch_size: int | None = None, min_batch_size: int | None = None,
                    batch_timeout: float | None = None,
                    max_concurrent_batches: int | None = None) -> BatchProcessorConfig:
        """Change batch limits, timeout and concurrency while running; they apply at once.

        A batch a worker is waiting for or filling goes without waiting further, with
        the items enqueued before the change, so that every item enqueued after this
        returns is batched under the new limits. Nothing happens when no value changes.
        More ``max_concurrent_batches`` start workers at once; with fewer, the extra
        workers finish the batch they run, then leave.

        Validated as the config is (nothing changes when a value is refused). A new
        ``max_batch_size`` alone moves ``min_batch_size`` and ``initial_batch_size`` into
        range when they fall outside it; the current size is clamped into the new range.
        The processor's ``config`` becomes a new object (the one given at construction is
        left alone). Returns it.

        Raises:
            TypeError, ValueError: a value the config would refuse (the message names it).
        """
        given: dict[str, Any] = {k: v for k, v in (("max_batch_size", max_batch_size),
                                                    ("min_batch_size", min_batch_size),
                                                    ("batch_timeout", batch_timeout),
                                                    ("max_concurrent_batches", max_concurrent_batches))
                                 if v is not None}
        BatchProcessorConfig(**given)  # each value alone: types and ranges, named in the error
        with self._reconfigure_lock:
            old = self.config
            new_max = old.max_batch_size if max_batch_size is None else max_batch_size
            new_min = min(old.min_batch_size, new_max) if min_batch_size is None else min_batch_size
            new = dataclasses.replace(
                old, max_batch_size=new_max, min_batch_size=new_min,
                initial_batch_size=max(new_min, min(old.initial_batch_size, new_max)),
                batch_timeout=old.batch_timeout if batch_timeout is None else batch_timeout,
                max_concurrent_batches=(old.max_concurrent_batches if max_concurrent_batches is None
                                        else max_concurrent_batches))
            self.config = new
            self.scheduler.reconfigure(new)
            self._intake.reconfigure(new)
            with self._lock:  # a start() meanwhile reads the new config, or is seen here
                run = self._run
                if run is not None and new.max_concurrent_batches != old.max_concurrent_batches:
                    run.set_concurrency(new.max_concurrent_batches)
            limits = ("max_batch_size", "min_batch_size", "initial_batch_size", "batch_timeout")
            if run is not None and any(getattr(new, f) != getattr(old, f) for f in limits):
                # A batch the worker is waiting for or filling was planned with the old
                # limits: it goes now, and the next is formed under the new ones.
                run.queue.interrupt()
        logger.debug("fastbatch %s: reconfigured %s", self.name,
                     ", ".join(f"{k}={v!r}" for k, v in given.items()))
        return new

    def get_stats(self) -> dict[str, Any]:
        """A snapshot of every statistic of the classic API, plus a few of ours (README)."""
        config = self.config
        counts = self._counters.snapshot()
        stats = self.stats.get_stats(counts)
        run = self._run
        state = self._state
        live = run is not None and state != STOPPED
        submitted = counts["submitted_before"] + (run.accepted() if run is not None else 0)
        arrival_rate = self.stats.arrivals.rate(_backend.monotonic_ns() / 1e9, submitted)
        # Expired items stay in the queue until the worker drops them: count them once.
        queued = len(run.queue) if live and run is not None else 0
        queued = max(0, queued - max(0, counts["expired"] - counts["expired_dropped"]))
        stats.update(
            current_batch_size=self.scheduler.size,
            system_load=self.scheduler.load,
            active_batches=len(run.running_since_ns()) if run is not None else 0,
            items_in_flight=max(0, counts["in_flight"]),
            queue_size=queued,
            is_paused=self._paused,
            is_stopping=state == STOPPING,
            is_running=state == RUNNING,
            total_submitted=submitted,
            total_refused=counts["refused"],
            total_shed=counts["shed"],
            total_expired=counts["expired"],
            arrival_rate=arrival_rate,
            padding_ratio=counts["pad_positions"] / counts["real_positions"] if counts["real_positions"] else 0.0,
            **self._policy_stats(),
            # The limits in force (reconfigure() changes them); max_batch_size above is
            # the largest batch seen in the window, as the classic statistics have it.
            config_max_batch_size=config.max_batch_size,
            config_min_batch_size=config.min_batch_size,
            config_batch_timeout_ms=config.batch_timeout * 1e3,
            config_target_latency_ms=config.target_latency_ms,
            config_max_concurrent_batches=config.max_concurrent_batches,
            live_workers=run.crew.live if live and run is not None else 0,
            core=_backend.NAME,
        )
        return stats

    def _policy_stats(self) -> dict[str, float]:
        """What the ADAPTIVE policy believes (zeros before it has measured, or for others)."""
        policy = self.scheduler.policy
        if policy is None or not policy.cost.fitted:
            return {"policy_fixed_cost_ms": 0.0, "policy_per_sample_cost_ms": 0.0, "policy_wait_ms": 0.0}
        return {"policy_fixed_cost_ms": policy.cost.fixed * 1e3,
                "policy_per_sample_cost_ms": policy.cost.per_sample * 1e3,
                "policy_wait_ms": policy.chosen_wait_s * 1e3 if policy.active else 0.0}

    def get_histograms(self) -> dict[str, Any]:
        """Cumulative histograms since creation, for exporters that aggregate across processes.

        Returns ``{name: HistogramSnapshot(bounds, counts, sum, count)}`` for
        ``item_latency_seconds``, ``item_queue_time_seconds``, ``batch_processing_seconds``
        and ``batch_size_samples``; ``counts[i]`` is how many observations were <=
        ``bounds[i]`` and ``observations`` counts them all. Bounds come from
        ``latency_buckets`` / ``batch_size_buckets``. All zero when ``enable_monitoring`` is off.
        """
        return self.stats.get_histograms()

    def health(self) -> HealthSnapshot:
        """Check health now (read-only: no garbage collection, no resizing)."""
        run = self._run
        if run is None or run.state != RUNNING:
            return HealthSnapshot("stopped", (f"the processor is {self._state}",), math.nan, 0, 0.0,
                                  self.scheduler.size)
        return run.monitor.check(act=False)

    @property
    def _monitor(self) -> HealthMonitor | None:
        return None if self._run is None else self._run.monitor

    # -- asyncio --------------------------------------------------------------------------

    async def enqueue_async(self, item: T, timeout: float | None = None,
                            priority: BatchPriority | int = _DEFAULT,
                            deadline: float | None = None, key: Hashable | None = None) -> R:
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
            key: the item's lane key, as for :meth:`enqueue`.

        Returns:
            The item's result (its rows of the batch result).

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds (whatever
                ``raise_on_queue_full`` says: there is no future to hand back).
            ProcessorStoppedError: the processor is not running, or stopped first.
            TypeError, ValueError, BatchDtypeError: as for ``enqueue``.
            BaseException: what the batch function raised for the item's batch.
        """
        from ._aio import enqueue_async  # asyncio is imported only by those who use it

        return await enqueue_async(self, item, priority=priority, timeout=timeout, deadline=deadline,
                                   key=key)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's threads are gone and any lock may be held."""
        self._lock = threading.Lock()
        self._counters.reset_after_fork()
        self.stats.reset_after_fork()
        self.scheduler.reset_after_fork()
        run = self._run
        hint = ""
        if run is not None and run.state in (RUNNING, STOPPING):
            hint = " (it was running in the parent process; its threads do not exist in this forked child)"
        if run is not None:
            run.forget_after_fork()
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._intake.reset_after_fork(hint)


def _after_fork_in_child() -> None:
    from . import _future

    _future._LOCK = threading.Lock()
    for processor in list(_live):
        processor._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
