"""The plain-stdlib batcher: what a user would write instead of fastbatch.

``queue.PriorityQueue`` + one worker thread + ``concurrent.futures.Future`` + ``np.stack``,
with the same essential API shape as ``fastbatch.BatchProcessor``: ``start(func)``,
``enqueue(item, priority)``, ``enqueue_predict(item, priority) -> Future``, ``stop()``.

It is the baseline of the benchmarks, so it is written the way a careful user would write
it, neither slowed down nor cut short:

- every item is one sample (``np.stack`` adds the batch axis); the batch function gets an
  ``(n, *item.shape)`` array and returns ``n`` results, row ``i`` going to item ``i``;
- a batch is released when it holds ``max_batch_size`` items or when ``batch_timeout``
  seconds have passed since its *first* item was enqueued (as fastbatch does);
- lower priority values go first, FIFO within a level (a sequence number breaks ties);
- a batch function that raises fails that batch's futures; cancelled futures are skipped;
- ``stop()`` refuses new items at once, processes what is queued and joins the worker.

What it leaves out (fastbatch has it): mini-batch items, a bounded queue with timeouts,
retries, statistics, adaptive sizing, health monitoring, pause/resume.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["StdlibBatcher"]

logger = logging.getLogger("stdlib_batcher")

# The stop marker sorts after every real priority, so everything queued before stop()
# is processed first.
_STOP_PRIORITY = float("inf")
_STOP = object()


class _ClosableQueue(queue.PriorityQueue):  # type: ignore[type-arg]
    """A ``PriorityQueue`` that refuses puts once closed.

    The check runs in ``_put``, under the queue's own mutex, so "closed" and the stop
    marker are ordered with every put: no item can slip in behind the marker and be
    left waiting forever. It costs one attribute test per put.
    """

    closed = False

    def _put(self, entry: Any) -> None:
        if self.closed:
            raise RuntimeError("the batcher is stopped: it accepts no more items")
        heapq.heappush(self.queue, entry)

    def close_with_marker(self, marker: Any) -> None:
        with self.not_empty:  # the queue's mutex
            self.closed = True
            heapq.heappush(self.queue, marker)
            self.unfinished_tasks += 1
            self.not_empty.notify()


class StdlibBatcher:
    """Dynamic batching with the standard library only.

    Args:
        max_batch_size: items per batch at most.
        batch_timeout: seconds from a batch's first item's enqueue to its release.
        max_queue_size: accepted for symmetry with fastbatch; 0 (unbounded) is the only
            value the benchmarks use, and a full queue simply blocks ``enqueue``.
    """

    def __init__(self, max_batch_size: int = 200, batch_timeout: float = 0.005,
                 max_queue_size: int = 0) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not batch_timeout >= 0:
            raise ValueError(f"batch_timeout must be >= 0, got {batch_timeout}")
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self.max_queue_size = max_queue_size
        self._queue: _ClosableQueue | None = None
        self._thread: threading.Thread | None = None
        self._seq = itertools.count()  # next() is atomic under the GIL

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, func: Callable[[np.ndarray], Any]) -> None:
        """Start the worker thread with the batch function ``func``."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._queue = _ClosableQueue(self.max_queue_size)
        self._thread = threading.Thread(target=self._run, args=(func, self._queue),
                                        name="stdlib-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new items, process what is queued, join the worker. Idempotent."""
        q, thread = self._queue, self._thread
        if q is None or thread is None:
            return
        if not q.closed:
            q.close_with_marker((_STOP_PRIORITY, next(self._seq), 0.0, _STOP, None))
        thread.join(timeout)
        if not thread.is_alive():
            self._queue = self._thread = None

    def __enter__(self) -> StdlibBatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- intake ------------------------------------------------------------------------

    def enqueue(self, item: np.ndarray, priority: int = 2) -> None:
        """Queue ``item`` (one sample) without a future."""
        q = self._queue
        if q is None:
            raise RuntimeError("not started")
        q.put((priority, next(self._seq), time.monotonic(), item, None))

    def enqueue_predict(self, item: np.ndarray, priority: int = 2) -> concurrent.futures.Future:  # type: ignore[type-arg]
        """Queue ``item`` (one sample); the future gets its row of the batch result."""
        q = self._queue
        if q is None:
            raise RuntimeError("not started")
        future: concurrent.futures.Future = concurrent.futures.Future()  # type: ignore[type-arg]
        q.put((priority, next(self._seq), time.monotonic(), item, future))
        return future

    # -- worker ------------------------------------------------------------------------

    def _run(self, func: Callable[[np.ndarray], Any], q: _ClosableQueue) -> None:
        get, get_nowait, monotonic = q.get, q.get_nowait, time.monotonic
        max_size, timeout = self.max_batch_size, self.batch_timeout
        stopping = False
        while not stopping:
            entry = get()
            if entry[3] is _STOP:  # the stop marker: everything before it is done
                break
            entries = [entry]
            deadline = entry[2] + timeout
            while len(entries) < max_size:
                try:
                    entry = get_nowait()  # take what is already there without waiting
                except queue.Empty:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        break
                    try:
                        entry = get(timeout=remaining)
                    except queue.Empty:
                        break
                if entry[3] is _STOP:
                    stopping = True
                    break
                entries.append(entry)
            self._run_batch(func, entries)

    @staticmethod
    def _run_batch(func: Callable[[np.ndarray], Any], entries: list[Any]) -> None:
        # Cancelled futures leave before the batch is formed (as Executor workers do).
        entries = [e for e in entries if e[4] is None or e[4].set_running_or_notify_cancel()]
        if not entries:
            return
        futures = [e[4] for e in entries]
        try:
            result = func(np.stack([e[3] for e in entries]))
            if len(result) != len(entries):
                raise ValueError(f"the batch function returned {len(result)} results "
                                 f"for a batch of {len(entries)}")
        except Exception as exc:  # noqa: BLE001 - the user's function: fail the batch
            if all(f is None for f in futures):
                logger.error("a batch of %d items failed: %r", len(entries), exc)
            for f in futures:
                if f is not None:
                    f.set_exception(exc)
            return
        for f, row in zip(futures, result):
            if f is not None:
                f.set_result(row)
