"""Per-item deadlines: fail queued items promptly when their deadline passes.

The queue is FIFO or a priority heap, not ordered by deadline, so expiry cannot wait for
the worker to reach an item: a ``DeadlineReaper`` thread (``fastbatch-deadlines-<name>``),
started with the first item that has a deadline, keeps a heap of ``(deadline, future)``
and sleeps until the earliest one. An expired future fails with ``ItemExpiredError`` at
once; the item stays in the queue until the worker takes it and drops it (a finished
future never reaches the batch function).

Cost: one heap push under a lock per item with a deadline (items without one never touch
this module), and a heap entry that lives until its deadline passes, even if the item was
processed long before.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from typing import Any

from . import _backend
from ._errors import ItemExpiredError
from ._future import expire_pending


class DeadlineReaper:
    """Fails the futures whose deadline passes while they are still queued."""

    def __init__(self, name: str, run_callbacks: Callable[[list[Any]], None] | None = None) -> None:
        self.name = name
        self._run_callbacks = run_callbacks
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, float, Any]] = []  # (deadline_ns, seq, seconds, future)
        self._seq = 0
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.expired = 0  # futures failed here; written by the reaper thread only

    def add(self, future: Any, seconds: float) -> None:
        """Watch ``future``: fail it if still queued ``seconds`` from now."""
        deadline_ns = _backend.monotonic_ns() + int(seconds * 1e9)
        with self._cond:
            if self._stopped:
                return  # stop() fails everything still queued anyway
            entry = (deadline_ns, self._seq, seconds, future)
            self._seq += 1
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"fastbatch-deadlines-{self.name}",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()  # a new earliest deadline: wake up sooner

    def _count(self) -> None:
        self.expired += 1  # under the futures' state lock, on this thread only

    def stop(self) -> None:
        """Stop watching and join the thread. Idempotent."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = _backend.monotonic_ns()
                due = []
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap))
                if due:
                    self._cond.release()  # fail them outside our lock: callbacks are user code
                    try:
                        for _, _, seconds, future in due:
                            expire_pending((future,), ItemExpiredError(
                                f"the item's deadline of {seconds}s passed while it was queued"),
                                self._run_callbacks, self._count)
                    finally:
                        self._cond.acquire()
                    continue
                timeout = (self._heap[0][0] - now) / 1e9 if self._heap else None
                self._cond.wait(timeout)
