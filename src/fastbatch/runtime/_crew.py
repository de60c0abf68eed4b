"""``Crew``: the worker threads of one run, up to ``max_concurrent_batches`` of them.

Each worker forms a batch, runs it and settles it. Only one forms at a time (it holds
``forming`` while it waits for items and takes them), so the waiting items go to one
batch instead of being shared out between idle workers, and the next batch is formed
while the others run. Batches may finish in any order; results never mix, because each
worker settles only the futures of the batch it took.

The number of workers can change while the run lasts (``resize``): a new one starts at
once; one too many leaves between two batches (``retire``). Every worker started stays
in ``workers`` until the run ends, so that a stop can join it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..core import _backend

# How often a worker waiting for its turn to form a batch looks at the stop and at its
# retirement (the worker forming may wait for items for as long as batch_timeout).
_TURN_POLL_S = 0.02


class Crew:
    """The run's workers: how many there are, whose turn it is to form a batch, who is busy."""

    def __init__(self, make_worker: Callable[[int], Any], abort: threading.Event,
                 registry: set[threading.Thread]) -> None:
        self._make = make_worker
        self._abort = abort
        self._registry = registry  # the run's batch threads
        self._lock = threading.Lock()  # guards workers, _wanted, _live and _closed
        self.forming = threading.Lock()  # held by the worker forming the next batch
        # Replaced, never mutated, under _lock: readers (statistics, the health monitor,
        # the intake, stop) read it without the lock.
        self.workers: tuple[Any, ...] = ()
        self._wanted = 0
        self._live = 0  # started, neither retired nor exited
        self._started = 0  # workers ever started: the next one's number
        self._closed = False  # no worker may start any more: the run is ending

    # -- size -----------------------------------------------------------------------------

    def resize(self, wanted: int) -> None:
        """Run ``wanted`` workers: start the missing ones now; the extra ones retire
        between two batches.

        Raises whatever starting a thread raises (the system's thread limit), with the
        workers that could not start forgotten: the count stays true.
        """
        with self._lock:
            if self._closed:
                return
            self._wanted = wanted
            # A retired worker whose thread has ended is dropped: the tuple stays small.
            self.workers = tuple(w for w in self.workers if not (w.retired and not w.thread.is_alive()))
            while self._live < wanted:
                worker = self._make(self._started)
                self._started += 1
                self._registry.add(worker.thread)
                try:
                    worker.thread.start()
                except BaseException:
                    self._registry.discard(worker.thread)
                    raise
                self._live += 1
                self.workers += (worker,)

    def close(self) -> None:
        """No more workers from now on (the run is stopping)."""
        with self._lock:
            self._closed = True

    def retire(self) -> bool:
        """Whether the calling worker, between batches, should leave (one too many)."""
        if self._live <= self._wanted:  # racy read: only decides whether to take the lock
            return False
        with self._lock:
            if self._live > self._wanted:
                self._live -= 1
                return True
        return False

    def exited(self) -> bool:
        """A worker left for good (the run ends, or it crashed); True for the last one."""
        with self._lock:
            self._live -= 1
            if self._live > 0:
                return False
            self._closed = True  # the run ends with the last worker: none may follow
            return True

    # -- turns ----------------------------------------------------------------------------

    def my_turn(self) -> bool:
        """Wait for the turn to form a batch; False when the stop or a retirement came
        first. A True return must be followed by :meth:`done_forming`."""
        while not self.forming.acquire(timeout=_TURN_POLL_S):
            if self._abort.is_set() or self._live > self._wanted:
                return False
        return True

    def done_forming(self) -> None:
        self.forming.release()

    # -- what the others read ----------------------------------------------------------------

    def threads(self) -> list[threading.Thread]:
        return [w.thread for w in self.workers]

    def join(self, timeout: float | None) -> bool:
        """Join every worker within ``timeout`` overall; True if all have ended."""
        end = None if timeout is None else _backend.monotonic_ns() + int(timeout * 1e9)
        me = threading.current_thread()
        threads = [t for t in self.threads() if t is not me]
        for thread in threads:
            thread.join(None if end is None else max(0.0, (end - _backend.monotonic_ns()) / 1e9))
        return not any(t.is_alive() for t in threads)

    @contextlib.contextmanager
    def handoffs(self) -> Iterator[None]:
        """Hold every worker's handoff lock: no batch is half taken meanwhile."""
        with contextlib.ExitStack() as stack:
            for worker in self.workers:
                stack.enter_context(worker.handoff)
            yield

    def inflight(self) -> list[Any]:
        """The futures of every batch in flight (call it inside :meth:`handoffs`)."""
        return [f for w in self.workers for f in w.inflight]

    def running_since_ns(self) -> list[int]:
        """When each batch running now started (the batch function called for it)."""
        started = [w.batch_started_ns for w in self.workers]
        return [t for t in started if t]

    def all_busy(self) -> bool:
        """Whether no worker is free to start a batch now (an estimate: racy reads)."""
        workers = max(1, min(self._wanted, self._live))  # a crashed worker is not replaced
        if workers == 1:  # the common case, read per put with a latency target: no list
            return any(w.batch_started_ns for w in self.workers)
        return len(self.running_since_ns()) >= workers

    @property
    def live(self) -> int:
        """Workers that run batches now: started, neither retired nor gone."""
        return self._live

    @property
    def size(self) -> int:
        """How many batches may run at once."""
        return max(1, self._wanted)

    def forget_after_fork(self) -> None:
        """In a forked child no worker exists and any lock may be held."""
        self._lock = threading.Lock()
        self.forming = threading.Lock()
        self.workers = ()
        self._live = 0
        self._closed = True
