"""``Run``: one ``start()`` → ``stop()`` lifetime of a processor, and its stop protocol.

A run owns everything that lives and dies with it: the request queue, the workers (its
``Crew``; each publishes the batch it runs: ``running_since_ns`` is what the health
monitor, the statistics and the intake read of them), the health monitor, the deadline
reaper, the callback runner and the set of threads they start. It never refers to the
``BatchProcessor``: a worker that outlives its run (its batch function overran
``stop(timeout)``) can only ever touch its own run's queue and items, never the next
run's (its late batch still reaches the processor's statistics and scheduler, which it
was given), and a processor nobody refers to any more can be collected and stopped (see
``BatchProcessor``'s finalizer).

The stop protocol, whoever calls it and however often:

1. intake closes at once (the queue refuses puts);
2. the caller waits up to ``timeout`` for the workers to drain the queue and exit;
3. past it, the run is *abandoned*: what is queued and the batches in flight fail with
   ``ProcessorStoppedError``; the workers get ``STOP_GRACE_S`` to notice;
4. the helpers stop; their threads are joined within what is left of the same grace.

So ``stop(t)`` returns within ``t + STOP_GRACE_S`` (plus scheduling), and every future of
the run is final when it returns, unless a user callback or batch function still runs.
A ``stop()`` from one of the run's own threads (the batch function, a done-callback)
cannot wait for itself: it returns at once and the last worker finishes the stop as it exits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .._config import BatchProcessorConfig
from .._errors import ProcessorStoppedError
from .._future import BatchFuture, fail_futures
from ..core import _backend
from ..observe._counters import Counters
from ..observe._stats import BatchStats
from ._batch_call import BatchCall
from ._crew import Crew
from ._deadlines import DeadlineReaper
from ._health import HealthMonitor
from ._scheduler import Scheduler
from ._threads import CallbackRunner
from ._worker import Worker

logger = logging.getLogger("fastbatch")

RUNNING, STOPPING, STOPPED = "running", "stopping", "stopped"

#: How long past its ``timeout`` a ``stop()`` still waits for the run's threads.
STOP_GRACE_S = 0.05
# A stop finished by the worker itself (nobody waits for it) gives the helpers this long.
_SELF_STOP_JOIN_S = 1.0


class Run:
    """One lifetime of a processor: started on creation, ended by :meth:`stop`."""

    def __init__(self, name: str, config: BatchProcessorConfig, func: Callable[[Any], Any],
                 scheduler: Scheduler, stats: BatchStats, counters: Counters, paused: bool,
                 loop: Any = None) -> None:
        self.name = name
        self.counters = counters
        self.state = RUNNING
        self._lock = threading.Lock()  # guards state, _stoppers and _finished
        self._stoppers: set[threading.Thread] = set()  # threads inside stop()
        self._finished = False
        self._forked = False
        self._done = threading.Event()  # set once the helpers are stopped
        self.abort = threading.Event()  # past the stop deadline: give up on the queue
        self.abandoned = 0  # items failed because the stop deadline passed (under _lock)
        # Threads that run the batch function (worker, per-item threads) and the others
        # the run started; identity by object, never by name.
        self.batch_threads: set[threading.Thread] = set()
        self.helper_threads: set[threading.Thread] = set()
        # First: it checks ``loop`` before any thread starts.
        self.call = BatchCall(func, loop, name, self.abort, self.batch_threads)
        self.queue: Any = _backend.RequestQueue(config.max_queue_size, config.enable_priority_queue,
                                                     config.max_lanes)
        if paused:
            self.queue.pause()
        self.callbacks = CallbackRunner(name, self.helper_threads)
        self.reaper = DeadlineReaper(name, self.callbacks.submit, counters, self.helper_threads)
        # The workers, each taking and running batches on its own thread; the run ends
        # when the last one is out (worker_exited).
        self.crew = Crew(lambda index: Worker(self, config, self.call, scheduler, stats, self.crew, index),
                         self.abort, self.batch_threads)
        self.monitor = HealthMonitor(name, config, scheduler, self.queue.__len__, self.crew.running_since_ns)
        scheduler.new_run()
        try:
            self.crew.resize(config.max_concurrent_batches)
        except BaseException:
            self.stop(0)  # the workers that did start leave; start() raises
            raise
        if config.enable_health_monitoring:
            self.helper_threads.add(self.monitor.start())

    def __repr__(self) -> str:
        return f"<Run of {self.name!r} {self.state}>"

    def new_future(self) -> BatchFuture[Any]:
        return BatchFuture(self)

    @property
    def workers(self) -> tuple[Worker, ...]:
        return self.crew.workers

    def running_since_ns(self) -> list[int]:
        """When each batch running now started (the batch function called for it)."""
        return self.crew.running_since_ns()

    def busy(self) -> bool:
        """Whether every worker runs a batch now: a new batch would wait for one to end."""
        return self.crew.all_busy()

    def set_concurrency(self, batches: int) -> None:
        """Run up to ``batches`` batches at once from now on (while the run is running)."""
        with self._lock:
            if self.state == RUNNING:
                self.crew.resize(batches)

    def runs_batches_on(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` runs this run's batch function (a wait there would deadlock)."""
        return thread in self.batch_threads and self.state != STOPPED

    def owns(self, thread: threading.Thread) -> bool:
        return thread in self.batch_threads or thread in self.helper_threads

    def pause(self) -> None:
        self.queue.pause()

    def resume(self) -> None:
        self.queue.resume()

    # -- stop ---------------------------------------------------------------------------

    def stop(self, timeout: float | None) -> None:
        """Stop intake, drain for up to ``timeout`` seconds, then fail what is left."""
        me = threading.current_thread()
        with self._lock:
            if self.state == RUNNING:
                self.state = STOPPING
                self.queue.close()  # intake stops at once, whoever asked
                self.crew.close()
            # Our own thread (the batch function, a done-callback, a callback run by our
            # own stop()): waiting would wait for ourselves. The worker, which drains on,
            # ends the stop as it exits.
            own = me in self._stoppers or self.owns(me)
            finishing = self._finished
            if not (own or finishing):
                self._stoppers.add(me)
        if own:
            return
        if finishing:  # another caller (or the exiting worker) is stopping the helpers
            self._done.wait(None if timeout is None else timeout + STOP_GRACE_S)
            return
        try:
            start_ns = _backend.monotonic_ns()
            crew = self.crew
            # Every caller bounds its own wait: stop(0) fails what is left at once even
            # while another stop(None) is draining.
            if not crew.join(timeout):
                self._abandon(timeout)
                # Half the grace for the workers to notice; the rest for the helpers.
                if not crew.join(max(0.0, (self._left(start_ns, timeout) or 0.0) - STOP_GRACE_S / 2)):
                    logger.warning("fastbatch %s: the batch function is still running after stop(); its "
                                   "items have failed and its thread is left to finish on its own", self.name)
            self._finish(lambda: self._left(start_ns, timeout))
        finally:
            with self._lock:
                self._stoppers.discard(me)

    @staticmethod
    def _left(start_ns: int, timeout: float | None, grace: float = STOP_GRACE_S) -> float | None:
        """What remains of ``timeout + grace`` since ``start_ns`` (None: no bound)."""
        if timeout is None:
            return None
        return max(0.0, timeout + grace - (_backend.monotonic_ns() - start_ns) / 1e9)

    def _abandon(self, timeout: float | None) -> None:
        """Past the stop deadline: fail what is queued and the batches in flight."""
        message = f"BatchProcessor {self.name!r} stopped (timeout={timeout}s) before this item was processed"
        crew = self.crew
        with crew.handoffs():  # every worker's: no batch can be half taken while we look
            self.abort.set()
            inflight = crew.inflight()
        _, futures, _ = self.queue.drain()
        failed = self.fail_leftovers(futures, message, taken=False)
        failed += fail_futures(inflight, ProcessorStoppedError(message), run_callbacks=self.callbacks.submit,
                               counters=self.counters, taken=True)
        with self._lock:  # every stopper past its deadline adds what it failed
            self.abandoned += failed

    def fail_leftovers(self, futures: list[Any], message: str, taken: bool = False, started: bool = False) -> int:
        """Fail items of this run that will never run (thread-safe), counting each outcome once.

        ``taken``: the items had been taken for a batch (counted in flight); ``started``:
        their batch had started (every future was running then, so one finished since was
        resolved and counted, not expired while queued). Returns how
        many items failed (a future cancelled or expired meanwhile is not one of them).
        The one way leftovers fail: drained at a stop or by the last worker out, taken by
        a worker that stops or fails before their batch runs.
        """
        without = futures.count(None)
        if without:
            self.counters.add(failed=without, in_flight=-without if taken else 0)
        if without == len(futures):
            return without
        # Each future is counted as it changes, under its lock: failed, cancelled (by its
        # caller, maybe a moment ago) or expired while queued.
        return without + fail_futures(futures, ProcessorStoppedError(message),
                                      run_callbacks=self.callbacks.submit, counters=self.counters,
                                      taken=taken, leaving=not started)

    def worker_exited(self) -> None:
        """Called on the last worker's thread as it ends: the run is over, whoever asked."""
        with self._lock:
            if self.state == RUNNING:  # the workers crashed: nobody called stop()
                self.state = STOPPING
                self.queue.close()
        self._finish(lambda: _SELF_STOP_JOIN_S)

    def _finish(self, left: Callable[[], float | None]) -> None:
        """Stop the helpers (once); a second caller waits for the first, within ``left``."""
        with self._lock:
            first = not self._finished
            self._finished = True
        if not first:
            self._done.wait(left())
            return
        try:
            self.monitor.stop(left())
            self.reaper.stop(left())
            if not self.call.close(left()):
                logger.warning("fastbatch %s: the batch function's event loop is still running after "
                               "stop(); its thread is left to finish on its own", self.name)
            # Last: everything that can finish a future has stopped.
            if not self.callbacks.stop(left()):
                logger.warning("fastbatch %s: a done-callback is still running after stop(); the "
                               "callback thread is left to finish on its own", self.name)
        finally:
            with self._lock:
                self.state = STOPPED
            self._done.set()

    def accepted(self) -> int:
        """Items this run's queue accepted."""
        if self._forked:
            return 0  # the parent's queue: its lock may be held for ever in this child
        return int(self.queue.total_puts)

    def forget_after_fork(self) -> None:
        """In a forked child: this run's threads do not exist, and any lock may be held."""
        self._lock = threading.Lock()
        self.state = STOPPED
        self._forked = True
        self._finished = True
        self._done = threading.Event()
        self._done.set()
        self.batch_threads = set()
        self.helper_threads = set()
        self.crew.forget_after_fork()
