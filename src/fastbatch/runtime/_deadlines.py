"""Per-item deadlines: fail queued items promptly when their deadline passes.

The queue is FIFO or a priority heap, not ordered by deadline, so expiry cannot wait for
the worker to reach an item: a ``DeadlineReaper`` thread (``fastbatch-deadlines-<name>``),
started with the first item that has a deadline, keeps a heap of ``(deadline, future)``
and sleeps until the earliest one. An expired future fails with ``ItemExpiredError`` at
once; the item stays in the queue until the worker takes it and drops it (a finished
future never reaches the batch function).

Cost: one heap push under a lock per item with a deadline (items without one never touch
this module). The heap holds weak references: a future the caller dropped after it was
processed (and its result) is freed at once, not at its deadline; the heap is compacted
once it holds more dead entries than live ones.
"""

from __future__ import annotations

import heapq
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._errors import ItemExpiredError
from .._future import expire_pending
from ..core import _backend

# Compaction is considered every this many additions (amortised O(1) per item).
_PRUNE_EVERY = 1024


class DeadlineReaper:
    """Fails the futures whose deadline passes while they are still queued."""

    def __init__(self, name: str, run_callbacks: Callable[[list[Any]], None] | None = None,
                 counters: Any = None, registry: set[threading.Thread] | None = None) -> None:
        self.name = name
        self._run_callbacks = run_callbacks
        self._counters = counters
        self._registry = registry
        self._cond = threading.Condition()
        # (deadline_ns, seq, seconds, weak reference to the future)
        self._heap: list[tuple[int, int, float, weakref.ReferenceType[Any]]] = []
        self._seq = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    def add(self, future: Any, seconds: float) -> None:
        """Watch ``future``: fail it if still queued ``seconds`` from now."""
        deadline_ns = _backend.monotonic_ns() + int(seconds * 1e9)
        with self._cond:
            if self._stopped:
                return  # stop() fails everything still queued anyway
            entry = (deadline_ns, self._seq, seconds, weakref.ref(future))
            self._seq += 1
            heap = self._heap
            if self._seq % _PRUNE_EVERY == 0:
                self._prune()
            heapq.heappush(heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"fastbatch-deadlines-{self.name}",
                                                daemon=True)
                if self._registry is not None:
                    self._registry.add(self._thread)
                self._thread.start()
            elif heap[0] is entry:
                self._cond.notify()  # a new earliest deadline: wake up sooner

    def _prune(self) -> None:
        """Drop the entries of futures that are gone or finished, if they are the most."""
        live = [e for e in self._heap if (f := e[3]()) is not None and not f.done()]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap[:] = live

    def __len__(self) -> int:
        """Entries watched (live or not yet pruned)."""
        with self._cond:
            return len(self._heap)

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching and join the thread (within ``timeout``). Idempotent."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = _backend.monotonic_ns()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    _, _, seconds, ref = heapq.heappop(self._heap)
                    future = ref()
                    if future is not None and not future.done():
                        due.append((seconds, future))
                if due:
                    self._cond.release()  # fail them outside our lock: callbacks are user code
                    try:
                        for seconds, future in due:
                            expire_pending((future,), ItemExpiredError(
                                f"the item's deadline of {seconds}s passed while it was queued"),
                                self._run_callbacks, self._counters)
                        del due, future
                    finally:
                        self._cond.acquire()
                    continue
                timeout = (self._heap[0][0] - now) / 1e9 if self._heap else None
                self._cond.wait(timeout)
