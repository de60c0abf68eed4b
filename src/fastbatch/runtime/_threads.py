"""Helper threads the worker hands work to: done-callbacks and one-call-per-item calls.

Both are daemon threads named ``fastbatch-callbacks-<name>`` / ``fastbatch-item-<name>-k``:
a stalled user call must never keep the interpreter from exiting (the stdlib's
``ThreadPoolExecutor`` joins its threads at exit, so one stuck call would hang it).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("fastbatch")

_STOP = object()


class CallbackRunner:
    """Runs futures' done-callbacks on its own thread, in order, never on the worker.

    A callback that blocks (on another future, on a full queue) then delays other
    callbacks, but never the batches that would unblock it.
    """

    def __init__(self, name: str, registry: set[threading.Thread]) -> None:
        self.name = name
        self._registry = registry  # the run's threads: a callback calling stop() is ours
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._busy = False  # the thread is running callbacks; written by it alone

    def submit(self, futures: Sequence[Any]) -> None:
        """Run the callbacks of ``futures`` (already finished) on the callback thread."""
        if not futures:
            return
        with self._lock:
            if self._stopped:
                thread = None
            else:
                thread = self._thread
                if thread is None:
                    thread = self._thread = threading.Thread(
                        target=self._run, name=f"fastbatch-callbacks-{self.name}", daemon=True)
                    self._registry.add(thread)
                    thread.start()
                self._queue.put(list(futures))
        if thread is None:  # after stop(): nobody else will run them
            _invoke(futures)

    def stop(self, timeout: float | None = None) -> bool:
        """Run what is pending, then end the thread and join it (unless called from it).

        Returns False if the thread is still running a callback after ``timeout`` seconds
        (a callback that blocks): it is a daemon thread, left to finish on its own.
        """
        with self._lock:
            self._stopped = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            # Not yet scheduled to see the stop is not "blocked": only a thread inside a
            # callback is reported.
            return not (thread.is_alive() and self._busy)
        return True

    def _run(self) -> None:
        while True:
            futures = self._queue.get()
            if futures is _STOP:
                return
            self._busy = True
            try:
                _invoke(futures)
            finally:
                self._busy = False
            del futures


def _invoke(futures: Sequence[Any]) -> None:
    for f in futures:
        try:
            f._invoke_callbacks()
        except BaseException:  # noqa: BLE001 - a user's callback; log and go on
            logger.exception("fastbatch: a done-callback of %r raised", f)


class ItemPool:
    """``max_workers`` daemon threads for the classic one-call-per-item processing."""

    def __init__(self, name: str, size: int, registry: set[threading.Thread]) -> None:
        self.name = name
        self.size = size
        self._registry = registry  # the run's batch-function threads
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[[Any], Any], arg: Any) -> concurrent.futures.Future[Any]:
        """Call ``fn(arg)`` on a pool thread; the returned future gets its outcome."""
        if len(self._threads) < self.size:
            thread = threading.Thread(target=self._run, daemon=True,
                                      name=f"fastbatch-item-{self.name}-{len(self._threads)}")
            self._threads.append(thread)
            self._registry.add(thread)
            thread.start()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put((fn, arg, future))
        return future

    def shutdown(self, wait: bool) -> None:
        """Let the threads finish what they run and exit; join them when ``wait``."""
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is _STOP:
                return
            fn, arg, future = task
            del task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(arg)
            except BaseException as exc:  # noqa: BLE001 - handed to the worker
                future.set_exception(exc)
            else:
                future.set_result(result)
            del fn, arg, future
