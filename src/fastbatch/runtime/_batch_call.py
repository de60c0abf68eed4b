"""How the batch function is called: directly, or, for a coroutine function, on an event loop.

The worker (and the per-item threads) call ``BatchCall(batch, key)`` and get the result
either way; a function with a ``key`` parameter is given the batch's key by keyword. A coroutine function (``async def``, or any callable whose call returns a coroutine)
runs on an event loop: the caller's, given as ``start(fn, loop=loop)`` (for functions
bound to a client or session living on that loop), or else one the run owns, on its own
thread, started at the first call and stopped with the run. The calling thread blocks
until the coroutine finishes, as it would on a synchronous function, and gives up on it
(cancelling the task) when the run is abandoned by ``stop(timeout)``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import logging
import threading
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import ProcessorStoppedError

logger = logging.getLogger("fastbatch")

if TYPE_CHECKING:
    import asyncio

# asyncio is imported where a coroutine is first met: `import fastbatch` stays light.

# How often a thread waiting for a coroutine looks at the run's abort flag and the loop:
# well within the grace a stop past its deadline gives the worker to notice.
_POLL_S = 0.005
# How long closing the owned loop lets its remaining tasks finish their cancellation.
_CLOSE_TASKS_S = 1.0


class _Escaped(Exception):  # noqa: N818 - a carrier, never seen outside this module
    """A BaseException that is no Exception (SystemExit ...), carried out of the loop."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(repr(exc))
        self.exc = exc


async def _guarded(coro: Any, registry: set[threading.Thread], tasks: list[Any]) -> Any:
    import asyncio

    # The thread that runs the coroutine is one of the run's batch threads: a wait there
    # on the run's own futures is a self-wait, a stop() from there cannot wait for itself.
    registry.add(threading.current_thread())
    tasks.append(asyncio.current_task())
    try:
        return await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        # Out of the task these would stop the loop for good; the worker wraps them.
        # (GeneratorExit is not caught: it is how a pending task is closed when its
        # loop is dropped, and a task raising it ends as a failure without harm.)
        raise _Escaped(exc) from None


def is_coroutine_function(func: Any) -> bool:
    """``async def`` functions, partials of them and objects with an ``async __call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(type(func), "__call__", None))


def takes_key(func: Any) -> bool:
    """Whether ``func`` has a parameter named ``key`` that can be passed by keyword."""
    try:
        parameter = inspect.signature(func).parameters.get("key")
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return False
    return parameter is not None and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                        inspect.Parameter.KEYWORD_ONLY)


class BatchCall:
    """The run's way of calling the batch function (thread-safe)."""

    def __init__(self, func: Callable[[Any], Any], loop: asyncio.AbstractEventLoop | None, name: str,
                 abort: threading.Event, registry: set[threading.Thread]) -> None:
        if loop is not None:
            import asyncio
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        if loop is not None and loop.is_closed():
            raise ValueError("loop is closed: give start() a running event loop")
        if loop is not None and not loop.is_running():
            raise ValueError("loop is not running: start it (loop.run_forever() on its thread) before "
                             "start(fn, loop=loop), or leave loop out to have the processor run one")
        self.func = func
        self.takes_key = takes_key(func)
        self.name = name
        self._given_loop = loop
        self._abort = abort
        self._registry = registry
        self._lock = threading.Lock()  # guards the owned loop's creation and shutdown
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._own_thread: threading.Thread | None = None
        self._closed = False
        # A loop given with a function that is not recognisably a coroutine function: the
        # first call tells whether it returns coroutines; if not, the loop goes unused.
        self._unsure_of_loop = loop is not None and not is_coroutine_function(func)

    def __call__(self, arg: Any, key: Any = None) -> Any:
        """``func(arg)``, or ``func(arg, key=key)`` for a function with a ``key`` parameter."""
        func: Callable[..., Any] = self.func
        result = func(arg, key=key) if self.takes_key else func(arg)
        if type(result) is types.CoroutineType:
            self._unsure_of_loop = False
            return self._await(result)
        if self._unsure_of_loop:
            self._unsure_of_loop = False
            logger.warning("fastbatch %s: start() was given loop=, but the batch function %r returned %s, not "
                           "a coroutine: it runs on the worker thread and the loop is not used (drop loop=, "
                           "or make the function async)", self.name, self.func, type(result).__name__)
        return result

    # -- coroutines ------------------------------------------------------------------------

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._given_loop is not None:
            return self._given_loop
        with self._lock:
            if self._closed:
                raise ProcessorStoppedError(f"BatchProcessor {self.name!r} stopped: its event loop is closed")
            if self._own_loop is None:
                import asyncio

                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(target=self._serve, args=(loop, ready), daemon=True,
                                          name=f"fastbatch-loop-{self.name}")
                # It runs the batch function: a wait there on our own futures is a self-wait.
                self._registry.add(thread)
                thread.start()
                if not ready.wait(5.0):  # pragma: no cover - a thread that cannot start
                    raise RuntimeError(f"fastbatch {self.name}: the event loop thread did not start")
                self._own_loop, self._own_thread = loop, thread
            return self._own_loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            # As asyncio.run ends: what is still running is cancelled and given a moment
            # to run its cleanup, then async generators and the executor are shut down.
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.wait(tasks, timeout=_CLOSE_TASKS_S))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _await(self, coro: types.CoroutineType[Any, Any, Any]) -> Any:
        import asyncio

        tasks: list[Any] = []  # the task, once the loop has started it
        try:
            loop = self._loop()
            future = asyncio.run_coroutine_threadsafe(_guarded(coro, self._registry, tasks), loop)
        except BaseException:
            coro.close()  # never awaited: no "coroutine was never awaited" warning
            raise
        while True:
            # wait(), not result(timeout): a coroutine may itself raise TimeoutError.
            concurrent.futures.wait((future,), timeout=_POLL_S)
            if future.done():
                try:
                    return future.result()
                except _Escaped as escaped:
                    raise escaped.exc from None
            if self._abort.is_set():
                future.cancel()
                raise ProcessorStoppedError(f"BatchProcessor {self.name!r} stopped while the batch "
                                            "function's coroutine was running")
            if loop.is_closed() or not loop.is_running():
                future.cancel()
                for task in tasks:
                    # The batch fails here, with the reason; the task left pending on the
                    # stopped loop is its owner's to cancel or drop, without a second
                    # report ("Task was destroyed but it is pending!") when it is dropped.
                    task._log_destroy_pending = False
                whose = "its event loop" if loop is not self._given_loop else "the event loop given to start(loop=...)"
                raise RuntimeError(f"{whose} of BatchProcessor {self.name!r} stopped running before the "
                                   "batch function's coroutine finished")

    def close(self, timeout: float | None) -> bool:
        """Stop the owned loop (if any) and join its thread; False if it did not end in time."""
        with self._lock:
            self._closed = True
            loop, thread = self._own_loop, self._own_thread
        if loop is None or thread is None:
            return True
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # already closed
            pass
        thread.join(timeout)
        return not thread.is_alive()
