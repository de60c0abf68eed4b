"""The worker loop: take a batch, call the batch function, hand the results back.

One ``Worker`` runs on one thread (``fastbatch-worker-<name>``). It owns the assembler,
the completion counters of ``BatchStats`` and the in-flight bookkeeping; everything it
shares with other threads is either thread-safe by itself (the queue, the sizer, events)
or a single attribute it alone writes (``batch_started_ns``, ``inflight``).
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _backend
from ._adaptive import BatchSizer
from ._config import BatchProcessorConfig
from ._errors import ItemTimeoutError, ProcessorStoppedError, QueueClosedError, ResultMismatchError
from ._future import add_note, fail_futures, resolve_batch, start_batch
from ._stats import BatchStats
from ._threads import CallbackRunner, ItemPool

logger = logging.getLogger("fastbatch")


class Worker:
    """Runs batches until the queue is closed and empty, or ``abort`` is set."""

    def __init__(
        self,
        name: str,
        config: BatchProcessorConfig,
        func: Callable[[Any], Any],
        queue: Any,
        sizer: BatchSizer,
        stats: BatchStats,
        abort: threading.Event,
        callbacks: CallbackRunner,
    ) -> None:
        self.name = name
        self.config = config
        self.func = func
        self.queue = queue
        self.sizer = sizer
        self.stats = stats
        self.abort = abort
        self.callbacks = callbacks
        self.assembler = _backend.BatchAssembler()
        self.max_bytes = config.max_batch_bytes
        # Read by the health monitor and stop(); written only here.
        self.batch_started_ns = 0
        self.holding = 0  # items taken from the queue and not yet counted as finished
        self.inflight: tuple[Any, ...] = ()
        self._pool: ItemPool | None = None
        self._overran = False  # a per-item call outlived item_timeout
        self._batches_since_gc = 0
        self._samples = 0  # samples of the batch being run
        self.on_exit: Callable[[], None] | None = None  # runs on this thread as it ends
        self.thread = threading.Thread(target=self._run, name=f"fastbatch-worker-{name}", daemon=True)

    # -- loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # noqa: BLE001 - must never die silently
            logger.exception("fastbatch: worker %s crashed; failing what is queued", self.name)
            self.queue.close()
        finally:
            self.queue.close()
            _, futures, _ = self.queue.drain()
            self.fail_leftovers(futures, f"BatchProcessor {self.name!r} stopped before this item was processed")
            if self._pool is not None:
                # A call stuck past item_timeout keeps its thread until it returns; we
                # cannot kill it, so then we do not wait for it either.
                self._pool.shutdown(wait=not self._overran)
            if self.on_exit is not None:
                self.on_exit()

    def _loop(self) -> None:
        cfg = self.config
        queue = self.queue
        interval_ns = int(cfg.min_batch_interval * 1e9)
        last_start_ns = 0
        while not self.abort.is_set():
            if interval_ns and last_start_ns:
                wait_s = (last_start_ns + interval_ns - _backend.monotonic_ns()) / 1e9
                if wait_s > 0 and self.abort.wait(wait_s):
                    break
            try:
                got = queue.take_batch(self.sizer.size, self.max_bytes, cfg.batch_timeout, None)
            except QueueClosedError:
                break
            if got is None:  # pragma: no cover - timeout=None never returns None
                continue
            items, futures, enqueue_ns = got
            self.holding = len(items)
            del got  # the loop must hold no item while it waits for the next batch
            start_ns = last_start_ns = _backend.monotonic_ns()
            if self.abort.is_set():
                self.fail_leftovers(futures, f"BatchProcessor {self.name!r} stopped before this item was processed")
                self.holding = 0
                break
            failures = self._run_batch(items, futures, enqueue_ns, start_ns, len(queue))
            del items, futures, enqueue_ns
            for exc in failures:
                _release_frames(exc)

    def fail_leftovers(self, futures: list[Any], message: str) -> None:
        """Fail items that will never run (thread-safe), keeping the counts honest."""
        cancelled = sum(1 for f in futures if f is not None and f.cancelled())
        done = sum(1 for f in futures if f is not None and f.done()) - cancelled  # expired while queued
        failed = fail_futures(futures, ProcessorStoppedError(message), run_callbacks=self.callbacks.submit)
        self.stats.record_error(failed + futures.count(None))
        self.stats.record_cancelled(cancelled)
        self.stats.record_dropped(done)

    def _run_batch(self, items: list[Any], futures: list[Any], enqueue_ns: npt.NDArray[Any],
                   start_ns: int, queue_length: int) -> list[BaseException]:
        """Run one batch; returns the exceptions its items failed with."""
        # Items from enqueue() carry no future: such a batch needs no result split.
        with_futures = futures.count(None) != len(futures)
        if with_futures:
            # Cancelled and expired items leave before the batch is formed.
            keep, cancelled, done = start_batch(futures)
            if keep is not None:
                self.stats.total_cancelled += cancelled
                self.stats.record_dropped(done)
                self.holding = len(keep)
                if not keep:
                    return []
                items = [items[i] for i in keep]
                futures = [futures[i] for i in keep]
                enqueue_ns = enqueue_ns[keep]
            self.inflight = tuple(futures)
        self.batch_started_ns = start_ns
        samples = len(items)
        failed = 0
        try:
            if isinstance(items[0], np.ndarray):
                results, errors, samples = self._array_batch(items, with_futures)
            elif self.config.batch_generic_items:
                results, errors = self._list_batch(items)
            else:
                results, errors = self._itemwise_batch(items)
        except BaseException as exc:  # noqa: BLE001 - the user's function: fail the batch
            results, errors = None, dict.fromkeys(range(len(items)), exc)
        finally:
            self.batch_started_ns = 0
        # Counted and recorded before the futures learn their outcome, so that whoever
        # sees a result sees it in the statistics. A future that stop() failed meanwhile
        # (past its deadline) was counted by stop(): the correction takes it back out.
        predicted_failed = len(errors)
        predicted_processed = len(items) - predicted_failed
        self.stats.count_batch(samples, predicted_processed, predicted_failed)
        self.holding = 0
        end_ns = _backend.monotonic_ns()
        self.stats.record_batch(start_ns=start_ns, end_ns=end_ns, samples=samples, queue_length=queue_length,
                                enqueue_ns=enqueue_ns)
        self.sizer.observe(end_ns / 1e9, (end_ns - start_ns) / 1e9, samples, self.queue.queued_samples)
        failed = processed = 0
        if errors:
            if self.config.reduce_batch_on_failure:
                self.sizer.shrink()
            failed = self._fail_items(futures, errors)
        if not with_futures:
            processed = len(items) - len(errors)
        elif results is not None:
            if errors:
                futures = [f for i, f in enumerate(futures) if i not in errors]
                results = [r for i, r in enumerate(results) if i not in errors]
            processed = resolve_batch(futures, results, self.callbacks.submit) + futures.count(None)
        if processed != predicted_processed or failed != predicted_failed:
            self.stats.correct(processed - predicted_processed, failed - predicted_failed)
        self.inflight = ()
        if self.config.enable_memory_optimization:
            self._batches_since_gc += 1
            if self._batches_since_gc >= self.config.gc_batch_threshold:
                self._batches_since_gc = 0
                gc.collect(0)
        return list({id(e): e for e in errors.values()}.values()) if errors else []

    def _fail_items(self, futures: list[Any], errors: dict[int, BaseException]) -> int:
        """Fail the items in ``errors``; returns how many this call failed."""
        by_exc: dict[int, tuple[BaseException, list[Any]]] = {}
        for i, exc in errors.items():
            by_exc.setdefault(id(exc), (exc, []))[1].append(futures[i])
        for exc, _ in by_exc.values():
            _trim_traceback(exc)
        failed = 0
        for exc, fs in by_exc.values():
            without = fs.count(None)
            failed += fail_futures(fs, exc, run_callbacks=self.callbacks.submit) + without
            if without:
                # Items from enqueue() have no future: the log is the only place to report.
                logger.error("fastbatch %s: %d item(s) failed: %r", self.name, without, exc)
        return failed

    # -- the three kinds of batch ---------------------------------------------------------
    # Each returns (results or None, {item index: exception} for the items that failed).

    def _array_batch(self, items: list[npt.NDArray[Any]], split: bool
                     ) -> tuple[list[Any] | None, dict[int, BaseException], int]:
        self._samples = len(items)  # replaced by the real count once the batch is assembled
        results, errors = self._run_isolated(self._run_arrays, items, split)
        return results, errors, self._samples

    def _list_batch(self, items: list[Any]) -> tuple[list[Any], dict[int, BaseException]]:
        results, errors = self._run_isolated(self._run_list, items, True)
        return results if results is not None else [None] * len(items), errors

    # The parts are methods, not closures: a closure's cells would keep the batch's items
    # alive through the frames a failure's traceback reaches (see _release_frames).

    def _run_arrays(self, items: list[Any], lo: int, hi: int, split: bool) -> list[Any] | None:
        whole = hi - lo == len(items)
        batch = self.assembler.assemble(items if whole else items[lo:hi])
        n = len(batch)
        if whole:
            self._samples = n
        result = self._call_with_retries(batch, n) if whole else self.func(batch)
        del batch  # our reference must not keep the assembler from reusing its buffer
        if split:
            return self.assembler.split(result)
        _check_length(result, n)
        return None

    def _run_list(self, items: list[Any], lo: int, hi: int, split: bool) -> list[Any]:
        part = items if hi - lo == len(items) else items[lo:hi]
        result = self._call_with_retries(part, len(part)) if part is items else self.func(part)
        _check_length(result, len(part))
        return list(result)

    def _run_isolated(self, run: Callable[[list[Any], int, int, bool], list[Any] | None],
                      items: list[Any], split: bool) -> tuple[list[Any] | None, dict[int, BaseException]]:
        """``run(0, n)`` (with retries); if it still fails, bisect to find the culprits.

        Each half of a failing range gets one call; a half that fails is split again,
        down to single items, within ``isolation_budget`` extra calls. One poisonous item
        in a batch of n costs about 2*log2(n) extra calls, about 2n samples of extra work.
        """
        n = len(items)
        try:
            whole = run(items, 0, n, split)
            return whole, {}
        except ResultMismatchError as exc:
            return None, dict.fromkeys(range(n), exc)  # the function's bug, not an item's
        except Exception as exc:  # noqa: BLE001 - isolate below
            first: BaseException = exc
        cfg = self.config
        if not cfg.isolate_failures or n == 1 or cfg.isolation_budget < 2:
            return None, dict.fromkeys(range(n), first)
        results: list[Any] = [None] * n
        errors: dict[int, BaseException] = {}
        budget = cfg.isolation_budget
        failing = [(0, n, first)]
        while failing:
            lo, hi, error = failing.pop()
            if hi - lo == 1 or budget < 2 or self.abort.is_set():
                if hi - lo < n:
                    add_note(error, f"fastbatch: failure isolation narrowed this failure down to "
                                    f"{hi - lo} of the batch's {n} items")
                errors.update(dict.fromkeys(range(lo, hi), error))
                continue
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                budget -= 1
                try:
                    part = run(items, a, b, split)
                except Exception as sub:  # noqa: BLE001 - narrowed further
                    self.stats.batch_errors += 1
                    failing.append((a, b, sub))
                else:
                    if part is not None:
                        results[a:b] = part
        return results, errors

    def _itemwise_batch(self, items: list[Any]) -> tuple[list[Any], dict[int, BaseException]]:
        """Seed behaviour for non-array items: one call each on ``max_workers`` threads."""
        if self._pool is None:
            self._pool = ItemPool(self.name, self.config.max_workers)
        calls = [self._pool.submit(self._call_with_retries, item) for item in items]
        concurrent.futures.wait(calls, timeout=self.config.item_timeout)
        results: list[Any] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        for i, call in enumerate(calls):
            if call.done():
                exc = call.exception()
                if exc is None:
                    results[i] = call.result()
                else:
                    errors[i] = exc
            else:
                if not call.cancel():
                    self._overran = True
                errors[i] = ItemTimeoutError(
                    f"the batch function took longer than item_timeout={self.config.item_timeout}s")
        return results, errors

    def _call_with_retries(self, arg: Any, samples: int = 1) -> Any:
        cfg = self.config
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.func(arg)
            except Exception as exc:
                self.stats.batch_errors += 1
                if attempt > cfg.max_retries or self.abort.is_set():
                    add_note(exc, f"fastbatch: a batch of {samples} samples failed "
                                  f"after {attempt} attempt(s)")
                    raise
                logger.debug("fastbatch: attempt %d of a batch failed: %r", attempt, exc)
                if cfg.retry_delay and self.abort.wait(cfg.retry_delay):
                    add_note(exc, "fastbatch: retries abandoned because the processor stopped")
                    raise


def _check_length(result: Any, samples: int) -> None:
    """The result must have one entry per sample (``BatchAssembler.split``'s rule)."""
    try:
        n = len(result)
    except TypeError:
        raise ResultMismatchError(f"the batch function returned {type(result).__name__}, "
                                  f"expected a sequence of {samples} results") from None
    if n != samples:
        raise ResultMismatchError(f"the batch function returned {n} results for a batch of {samples} samples")


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _trim_traceback(exc: BaseException) -> None:
    """Drop fastbatch's own frames from the front of a failure's traceback.

    Those frames hold the batch's items (and the futures), and the exception lives on in
    every failed future: keeping them would keep the items alive for as long as a
    caller keeps a future. The user's frames, where the error happened, stay.
    """
    tb = exc.__traceback__
    while tb is not None and os.path.dirname(os.path.abspath(tb.tb_frame.f_code.co_filename)) == _PACKAGE_DIR:
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
            if os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
                try:
                    frame.clear()
                except RuntimeError:
                    pass  # still executing
            frame = frame.f_back
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)
