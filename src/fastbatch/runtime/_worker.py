"""The worker loop: take a batch, call the batch function, hand the results back.

A run has one ``Worker`` per batch that may be in flight (``max_concurrent_batches``),
each on its own thread (``fastbatch-worker-<name>``, then ``-1``, ``-2`` ...), all in the
run's ``Crew``; a worker holds that run, never the processor. It owns its assembly
buffers; what it shares with other threads is thread-safe by itself (the queue, the
scheduler, the statistics, the counters, events), taken in turn (forming a batch,
under the crew's ``forming`` lock) or a ``Batch`` it alone changes (``current``), which it
publishes under ``handoff`` so that a ``stop()`` past its deadline sees every taken item
either in a batch or not taken at all. Everything about one batch lives on its
``Batch``, nothing on the worker.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from .._config import BatchProcessorConfig
from .._errors import (BatchFunctionExit, ItemTimeoutError, QueueClosedError,
                      ResultMismatchError)
from .._future import add_note, fail_futures, forget_notes, resolve_batch, start_batch
from ..core import _backend
from ..items._kinds import Buffers, Kind, kind_of
from ..items._lanes import Lane
from ..items._results import kept
from ..observe._stats import BatchStats
from ._batch import Batch
from ._crew import Crew
from ._scheduler import Scheduler
from ._threads import ItemPool

logger = logging.getLogger("fastbatch")

# Failure isolation gives up after this many successive splits failing alike on both sides.
_SAME_FAILURE_LEVELS = 3


class Worker:
    """Runs batches until the run's queue is closed and empty, or the run is abandoned."""

    def __init__(self, run: Any, config: BatchProcessorConfig, func: Callable[..., Any],
                 scheduler: Scheduler, stats: BatchStats, crew: Crew, index: int = 0) -> None:
        self.run = run
        self.crew = crew
        self.name = run.name
        self.config = config
        self.func = func
        self.queue = run.queue
        self.scheduler = scheduler
        self.stats = stats
        self.counters = run.counters
        self.abort = run.abort
        self.callbacks = run.callbacks
        self.buffers = Buffers()  # this worker's own: batches never share a buffer
        self.max_bytes = config.max_batch_bytes
        # The batch taken and not yet resolved; read by the health monitor, the
        # statistics, the intake and stop(), published under handoff.
        self.current: Batch | None = None
        self.handoff = threading.Lock()  # taking a batch vs. abandoning the run
        self._pool: ItemPool | None = None
        self._overran = False  # a per-item call outlived item_timeout
        self._batches_since_gc = 0
        self.retired = False  # left between two batches: the run goes on without it
        suffix = f"-{index}" if index else ""
        self.thread = threading.Thread(target=self._run, name=f"fastbatch-worker-{self.name}{suffix}",
                                       daemon=True)

    @property
    def batch_started_ns(self) -> int:
        """When the batch running now started; 0 when none is running."""
        batch = self.current
        return batch.running_since_ns() if batch is not None else 0

    @property
    def inflight(self) -> list[Any]:
        """The futures of the batch taken and not yet resolved (read under ``handoff``)."""
        batch = self.current
        return batch.futures if batch is not None else []

    # -- loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # noqa: BLE001 - must never die silently
            logger.exception("fastbatch: a worker of %s crashed; its batch fails, the other workers "
                             "(if any) go on, and the last one out fails what is queued", self.name)
        finally:
            self._exit()

    def _exit(self) -> None:
        message = f"BatchProcessor {self.name!r} stopped before this item was processed"
        with self.handoff:  # a crash between taking a batch and settling it
            batch, self.current = self.current, None
        if batch is not None:
            # Items without a future are counted here unless the batch counted them already.
            self.run.fail_leftovers(batch.futures if not batch.counted else
                                    [f for f in batch.futures if f is not None], message, taken=True,
                                    started=True)
            batch.release()
        del batch
        if self._pool is not None:
            # A call stuck past item_timeout keeps its thread until it returns; we
            # cannot kill it, so then we do not wait for it either.
            self._pool.shutdown(wait=not self._overran)
        if self.retired or not self.crew.exited():
            return
        # The last worker out: nothing more is accepted, nothing queued will run.
        self.queue.close()
        _, futures, _ = self.queue.drain()
        self.run.fail_leftovers(futures, message)
        del futures
        self.run.worker_exited()

    def _loop(self) -> None:
        crew = self.crew
        while not self.abort.is_set():
            if crew.retire():
                self.retired = True
                return
            if not crew.my_turn():
                continue
            try:
                got = self._form()
            finally:
                crew.done_forming()
            if got is None:  # the queue is closed and empty, or the run abandoned
                return
            items, futures, enqueue_ns, lane, start_ns = got
            del got  # the loop must hold no item while it waits for the next batch
            stopped = f"BatchProcessor {self.name!r} stopped before this item was processed"
            self.counters.taken(len(items))
            try:
                with self.handoff:
                    if self.abort.is_set():
                        self.run.fail_leftovers(futures, stopped, taken=True)
                        return
                    # Items from enqueue() have no future: none to mark running. Dropped
                    # items (cancelled, expired) all have one: the count stays.
                    without = futures.count(None)
                    keep = start_batch(futures, self.counters) if without != len(futures) else None
                    if keep is not None:
                        items = [items[i] for i in keep]
                        futures = [futures[i] for i in keep]
                        enqueue_ns = enqueue_ns[keep]
                    batch = Batch(lane, items, futures, without, enqueue_ns, start_ns, len(self.queue), self)
                    self.current = batch
            except BaseException:
                # Taken and not published (MemoryError ...): stop() cannot see these items.
                if self.current is None:
                    self.run.fail_leftovers(futures, stopped, taken=True)
                raise
            del items, futures, enqueue_ns, lane
            if batch.items:
                failures = self._run_batch(batch)
                for exc in failures:
                    _release_frames(exc)
                del failures
            self.current = None
            batch.release()
            del batch

    def _form(self) -> tuple[list[Any], list[Any], Any, Lane, int] | None:
        """Wait for the next batch and take it (the crew's turn is ours); None: the run ends."""
        queue = self.queue
        scheduler = self.scheduler
        bucket = self.config.bucket_by_length
        take = queue.take_batch
        # The loop checked the abort just before the turn; a stop that abandons the run
        # meanwhile empties the closed queue, which ends the take.
        while True:
            # Read before the plan: a reconfigure() after this read interrupts the take
            # below, and one before it has already set the limits the plan reads.
            generation = queue.generation
            plan = scheduler.plan(queue.queued_samples)
            if plan.not_before_s:  # min_batch_interval: too early, plan again then
                if self.abort.wait(plan.not_before_s):
                    return None
                continue
            try:
                got = take(plan.size, self.max_bytes, plan.linger_s, None, True, bucket, plan.until_ns, generation)
            except QueueClosedError:
                return None
            if got is not None:
                items, futures, enqueue_ns, lane = got
                return items, futures, enqueue_ns, lane, scheduler.started(enqueue_ns)
            if self.abort.is_set():  # interrupted by reconfigure() before a request was taken
                return None

    def _run_batch(self, batch: Batch) -> list[BaseException]:
        """Run one batch (the items of one lane); returns the exceptions its items failed with."""
        # Items from enqueue() carry no future: such a batch needs no result split.
        with_futures = batch.wants_results
        items, futures, start_ns = batch.items, batch.futures, batch.start_ns
        batch.running = True
        try:
            kind = kind_of(batch, self.config.batch_generic_items)
            if kind is not None:
                results, errors = self._run_isolated(kind, batch, with_futures)
            else:
                batch.calls = len(items)  # one call per item: each counts as a batch of one
                results, errors = self._itemwise_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - the user's function: fail the batch
            results, errors = None, dict.fromkeys(range(len(items)), _as_failure(exc))
        finally:
            batch.running = False
        end_ns = _backend.monotonic_ns()
        samples, calls = batch.samples, batch.calls
        # The batch is counted before any future learns its outcome, so that whoever
        # sees a result sees its batch in the statistics; each item is counted as its
        # future changes (futures stop() failed meanwhile are not counted twice). One
        # counter update per batch: with results to hand out and no failure, it is made
        # with theirs, under the futures' lock (resolve_batch).
        without = batch.without
        no_future_failed = sum(1 for i in errors if futures[i] is None) if errors else 0
        ran = len(errors) < len(items)
        ended = (calls, samples if ran else 0, batch.pad_positions if ran else 0,
                 batch.real_positions if ran else 0, without - no_future_failed, no_future_failed, -without)
        resolving = with_futures and results is not None
        if not resolving or errors:
            batch.counted = True  # its items without a future: a crash from here on must not count them again
            self.counters.batch_ended(*ended)
        queue_length, enqueue_ns = batch.queue_length, batch.enqueue_ns
        if calls == 1:
            self.stats.record(start_ns, end_ns, samples, queue_length, enqueue_ns)
        else:  # statistics never show a batch that was not one call
            for i in range(calls):
                self.stats.record(start_ns, end_ns, 1, queue_length, enqueue_ns[i:i + 1])
        arrivals, end_s = self.stats.arrivals, end_ns / 1e9
        if arrivals.due(end_s):
            # At most every ArrivalMeter.step_s: the snapshot's lock is not paid per batch.
            arrivals.mark(end_s, self.counters.snapshot()["submitted_before"] + self.queue.total_puts)
        self.scheduler.finished(end_ns, (end_ns - start_ns) / 1e9, samples, self.queue.queued_samples)
        if errors:
            if self.config.reduce_batch_on_failure:
                self.scheduler.shrink()
            self._fail_items(futures, errors)
        if resolving and results is not None:
            if errors:
                futures = [f for i, f in enumerate(futures) if i not in errors]
                results = [r for i, r in enumerate(results) if i not in errors]
                resolve_batch(futures, results, self.callbacks.submit, self.counters)
            else:
                batch.counted = True
                resolve_batch(futures, results, self.callbacks.submit, self.counters, ended)
        if batch.clean:
            self.scheduler.handed_out(samples, (end_ns - start_ns) / 1e9, len(items))
        if self.config.enable_memory_optimization:
            self._batches_since_gc += 1
            if self._batches_since_gc >= self.config.gc_batch_threshold:
                self._batches_since_gc = 0
                gc.collect(0)
        return list({id(e): e for e in errors.values()}.values()) if errors else []

    def _fail_items(self, futures: list[Any], errors: dict[int, BaseException]) -> None:
        """Fail the items in ``errors`` (those without a future were counted already)."""
        by_exc: dict[int, tuple[BaseException, list[Any]]] = {}
        for i, exc in errors.items():
            by_exc.setdefault(id(exc), (exc, []))[1].append(futures[i])
        for exc, _ in by_exc.values():
            _trim_traceback(exc)
        for exc, fs in by_exc.values():
            fail_futures(fs, exc, run_callbacks=self.callbacks.submit, counters=self.counters, taken=True)
            without = fs.count(None)
            if without:
                # Items from enqueue() have no future: the log is the only place to report.
                logger.error("fastbatch %s: %d item(s) failed: %r", self.name, without, exc)

    # -- one skeleton for every kind --------------------------------------------------
    # Results or None, and {item index: exception} for the items that failed.

    def _run_part(self, kind: Kind, job: Batch, lo: int, hi: int, split: bool) -> list[Any] | None:
        """Run items[lo:hi] of ``job``: assemble, call (the whole batch with retries), then
        split the result per item (``split``) or only check it.

        A method, not a closure: a closure's cells would keep the batch's items alive
        through the frames a failure's traceback reaches (see _release_frames).
        """
        items = job.items
        whole = hi - lo == len(items)
        part = items if whole else items[lo:hi]
        arg, n, splitter = kind.assemble(self.buffers, job, part, whole, self.config)
        result = self._call_with_retries(arg, n, job.key, job) if whole else self.func(arg, job.key)
        del arg  # our reference must not keep an assembler from reusing its buffer
        rows: list[Any] | None = None
        if split:
            shared = kept(result)  # first, with the result held by this frame alone
            rows = kind.split(splitter, part, result, n, shared)
        else:
            kind.check(splitter, part, result, n, self.config)
        # One call, first attempt, a result that splits: a measure of what a batch costs.
        job.clean = whole and job.attempts == 1
        return rows

    def _run_isolated(self, kind: Kind, job: Batch, split: bool
                      ) -> tuple[list[Any] | None, dict[int, BaseException]]:
        """The whole batch (with retries); if it still fails, bisect to find the culprits.

        Each half of a failing range gets one call; a half that fails is split again,
        down to single items, within ``isolation_budget`` extra calls. One poisonous item
        in a batch of n costs about 2*log2(n) extra calls, about 2n samples of extra work.
        Two things end the search early, because they are the function's fault, not an
        item's: a result that cannot be split (``ResultMismatchError``: that range fails
        as it is), and both halves failing with the same exception type as each other at
        ``_SAME_FAILURE_LEVELS`` successive splits (a dead backend fails every call:
        bisecting it would call it 2n times for nothing; it now costs 7 calls). Then every
        item not yet served fails with the batch's first error. One level is not enough:
        two poisonous items in different halves look the same at the first split.
        """
        n = len(job.items)
        try:
            whole = self._run_part(kind, job, 0, n, split)
            return whole, {}
        except ResultMismatchError as exc:
            return None, dict.fromkeys(range(n), exc)
        except Exception as exc:  # noqa: BLE001 - isolate below
            first: BaseException = exc
        cfg = self.config
        if not cfg.isolate_failures or n == 1 or cfg.isolation_budget < 2:
            return None, dict.fromkeys(range(n), first)
        results: list[Any] = [None] * n
        errors: dict[int, BaseException] = {}
        budget = cfg.isolation_budget
        # (lo, hi, error, how many splits in a row above it failed on both sides alike)
        failing = [(0, n, first, 0)]
        while failing:
            lo, hi, error, alike = failing.pop()
            if hi - lo == 1 or budget < 2 or self.abort.is_set():
                if hi - lo < n:
                    add_note(error, f"fastbatch: failure isolation narrowed this failure down to "
                                    f"{hi - lo} of the batch's {n} items")
                errors.update(dict.fromkeys(range(lo, hi), error))
                continue
            mid = (lo + hi) // 2
            halves: list[tuple[int, int, BaseException]] = []
            for a, b in ((lo, mid), (mid, hi)):
                budget -= 1
                try:
                    part = self._run_part(kind, job, a, b, split)
                except ResultMismatchError as bad:
                    errors.update(dict.fromkeys(range(a, b), bad))
                except Exception as sub:  # noqa: BLE001 - narrowed further
                    self.counters.add(batch_errors=1)
                    halves.append((a, b, sub))
                else:
                    if part is not None:
                        results[a:b] = part
            same = len(halves) == 2 and type(halves[0][2]) is type(halves[1][2])
            if same and alike + 1 >= _SAME_FAILURE_LEVELS:
                add_note(first, f"fastbatch: every part of this batch that was tried failed with "
                                f"{type(error).__name__}: the batch function fails whatever the items, "
                                "so no item was singled out")
                for l0, h0 in [(lo, hi)] + [(f[0], f[1]) for f in failing]:
                    errors.update(dict.fromkeys(range(l0, h0), first))
                break
            failing.extend((a, b, e, alike + 1 if same else 0) for a, b, e in halves)
        return results, errors

    def _itemwise_batch(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException]]:
        """The classic behaviour for non-array items: one call each on ``max_workers`` threads."""
        items = batch.items
        if self._pool is None:
            self._pool = ItemPool(self.name, self.config.max_workers, self.run.batch_threads)
        run_one = functools.partial(self._call_with_retries, samples=1, key=batch.key)
        calls = [self._pool.submit(run_one, item) for item in items]
        concurrent.futures.wait(calls, timeout=self.config.item_timeout)
        results: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        for i, call in enumerate(calls):
            if call.done():
                exc = call.exception()
                if exc is None:
                    results[i] = call.result()
                else:
                    errors[i] = _as_failure(exc)
            else:
                if not call.cancel():
                    self._overran = True
                errors[i] = ItemTimeoutError(
                    f"the batch function took longer than item_timeout={self.config.item_timeout}s")
        return results, errors

    def _call_with_retries(self, arg: Any, samples: int = 1, key: Any = None, job: Batch | None = None) -> Any:
        cfg = self.config
        attempt = 0
        while True:
            attempt += 1
            if job is not None:
                job.attempts = attempt
            try:
                return self.func(arg, key)
            except Exception as exc:
                self.counters.add(batch_errors=1)
                if attempt == 1:
                    forget_notes(exc)  # the same instance raised again: notes of this batch only
                if attempt > cfg.max_retries or self.abort.is_set():
                    add_note(exc, f"fastbatch: a batch of {samples} samples failed "
                                  f"after {attempt} attempt(s)")
                    raise
                logger.debug("fastbatch: attempt %d of a batch failed: %r", attempt, exc)
                if cfg.retry_delay and self.abort.wait(cfg.retry_delay):
                    add_note(exc, "fastbatch: retries abandoned because the processor stopped")
                    raise


def _as_failure(exc: BaseException) -> BaseException:
    """What the batch's futures fail with when the batch function raised ``exc``.

    A ``BaseException`` that is not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``
    ...) is meant for the thread that raised it: re-raised in every caller's thread it
    would exit or interrupt each of them. It is wrapped instead.
    """
    if isinstance(exc, Exception):
        return exc
    wrapped = BatchFunctionExit(f"the batch function raised {type(exc).__name__}({exc!s}); it is not "
                                "re-raised in the callers' threads (see __cause__)")
    wrapped.__cause__ = exc
    return wrapped


def _ours(code_globals: dict[str, Any]) -> bool:
    name = code_globals.get("__name__")
    return isinstance(name, str) and (name == "fastbatch" or name.startswith("fastbatch."))


def _trim_traceback(exc: BaseException) -> None:
    """Drop fastbatch's own frames from the front of a failure's traceback.

    Those frames hold the batch's items (and the futures), and the exception lives on in
    every failed future: keeping them would keep the items alive for as long as a
    caller keeps a future. The user's frames, where the error happened, stay. Frames
    are recognised by their module's name, wherever the package is installed.
    """
    tb = exc.__traceback__
    while tb is not None and _ours(tb.tb_frame.f_globals):
        tb = tb.tb_next
    exc.__traceback__ = tb
    for linked in (exc.__cause__, exc.__context__):
        if linked is not None and linked is not exc and linked.__traceback__ is not None:
            _trim_traceback(linked)


def _release_frames(exc: BaseException) -> None:
    """Clear the locals of fastbatch's finished frames that a failure still reaches.

    The user's frame in the traceback links back (``f_back``) through our frames, and a
    finished frame keeps its locals: the batch's items would live as long as a caller
    keeps the failed future. Frames still running (the loop itself) are left alone.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        tb = e.__traceback__
        frame = tb.tb_frame if tb is not None else None
        while tb is not None:  # the innermost frame, whose f_back chain covers the rest
            frame = tb.tb_frame
            tb = tb.tb_next
        while frame is not None:
            if _ours(frame.f_globals):
                try:
                    frame.clear()
                except RuntimeError:
                    pass  # still executing
            frame = frame.f_back
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
