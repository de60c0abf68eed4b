"""``@fastbatch.batch``: turn a function of a batch into a function of one item.

The decorated object owns a ``BatchProcessor`` created (and its config validated) at
decoration time, started on the first call, stopped by ``stop()`` (the next call starts
it again) and stopped for good when the object is garbage-collected or the interpreter
exits (``weakref.finalize``, which holds no reference to the decorated object).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, overload

from ._config import BatchPriority, BatchProcessorConfig
from ._errors import ProcessorStoppedError
from ._future import BatchFuture
from ._processor import BatchProcessor
from .runtime._batch_call import is_coroutine_function

T = TypeVar("T")
R = TypeVar("R")


def _config(max_batch_size: int | None, batch_timeout: float | None,
            fields: dict[str, Any]) -> BatchProcessorConfig:
    """The decorator's config: batches of generic items are lists, sizes fit ``max``."""
    fields.setdefault("batch_generic_items", True)
    if batch_timeout is not None:
        fields["batch_timeout"] = batch_timeout
    if max_batch_size is not None:
        fields["max_batch_size"] = max_batch_size  # the config fits the other sizes to it
    return BatchProcessorConfig(**fields)


class _Runner(Generic[T, R]):
    """The lifecycle shared with the finalizer (which must not see the decorated object)."""

    def __init__(self, processor: BatchProcessor[T, R], func: Callable[[Any], Any]) -> None:
        self.processor = processor
        self.func = func
        self.lock = threading.Lock()  # one start at a time
        self.closed = False

    def ensure_started(self) -> BatchProcessor[T, R]:
        processor = self.processor
        if processor.is_running:
            return processor
        with self.lock:
            if self.closed:
                raise ProcessorStoppedError(
                    f"batched function {processor.name!r} was shut down (interpreter exit)")
            if not processor.is_running:
                try:
                    processor.start(self.func)
                except RuntimeError:  # still stopping: a stop() runs on another thread
                    raise ProcessorStoppedError(
                        f"batched function {processor.name!r} is stopping") from None
        return processor

    def close(self, timeout: float | None) -> None:
        with self.lock:
            self.closed = True
        self.processor.stop(timeout)


class BatchedFunction(Generic[T, R]):
    """A function of one item that runs the wrapped function of a batch.

    Made by :func:`batch`; see there for the lifecycle.

    Attributes:
        func: the wrapped function of a batch.
        processor: the ``BatchProcessor`` behind it (for ``get_stats()``, ``health()``,
            metrics); created at decoration time, started on the first call.
    """

    def __init__(self, func: Callable[[Any], Any], config: BatchProcessorConfig,
                 name: str | None = None) -> None:
        # The function's identity, but not __wrapped__: inspect.signature must show the
        # per-item signature, not the batch function's.
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(func, attr):
                setattr(self, attr, getattr(func, attr))
        self.func = func
        name = name or getattr(func, "__qualname__", None) or type(func).__name__
        processor: BatchProcessor[T, R] = BatchProcessor(config, name=name)
        processor._managed = True  # our finalizer below stops it
        self._runner: _Runner[T, R] = _Runner(processor, func)
        # At exit (or collection) queued items get shutdown_timeout to be processed before
        # they fail: an exit must never hang on a stuck batch function.
        self._finalizer = weakref.finalize(self, self._runner.close, config.shutdown_timeout)

    @property
    def processor(self) -> BatchProcessor[T, R]:
        """The processor that batches the calls."""
        return self._runner.processor

    def __repr__(self) -> str:
        return f"<batched function {self._runner.processor.name!r} {self._runner.processor!r}>"

    def __set_name__(self, owner: type, name: str) -> None:
        # A function defined in the class body is a method: it would get the batch without
        # `self`. Fail at class creation rather than on every batch.
        if getattr(self.func, "__qualname__", None) != f"{owner.__qualname__}.{name}":
            return
        raise TypeError(
            f"@fastbatch.batch cannot decorate the method {owner.__name__}.{name}: the "
            "function receives the batch as its only argument. Decorate a function, or "
            "wrap a bound method per instance: self.predict = fastbatch.batch(...)(self._predict)")

    def __call__(self, item: T, *, timeout: float | None = None,
                 priority: BatchPriority | int = BatchPriority.NORMAL, key: Hashable | None = None) -> R:
        """Process ``item`` in a batch and return its result, blocking this thread.

        Do not call it from a coroutine: it would block the event loop. Use
        :meth:`call_async`.

        Args:
            item: one item (a 1-D array row, an ``(n, ...)`` mini-batch, or any object
                for a function of a list).
            timeout: seconds for the whole call (waiting for room, then for the result);
                ``None`` waits as long as it takes.
            priority: a ``BatchPriority``.
            key: batches never mix items of different keys; a function with a ``key``
                parameter receives its batch's key.

        Returns:
            The item's result.

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds.
            TimeoutError: no result within ``timeout``; the item is cancelled (skipped
                unless its batch had already started).
            ProcessorStoppedError: ``stop()`` ran concurrently, or the interpreter exits.
            BaseException: what the function raised for the item's batch.
        """
        processor = self._runner.ensure_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        future = processor.enqueue_predict(item, timeout, priority, key=key)
        try:
            if deadline is not None:
                try:
                    # exception() raises TimeoutError for the wait only, never the item's own.
                    future.exception(max(0.0, deadline - time.monotonic()))
                except (TimeoutError, concurrent.futures.TimeoutError):  # distinct on 3.10
                    raise TimeoutError(f"no result from {processor.name!r} within "
                                       f"timeout={timeout}s") from None
            return future.result()
        except BaseException:
            future.cancel()  # a caller that gives up (timeout, Ctrl-C) takes its item back
            raise

    async def call_async(self, item: T, *, timeout: float | None = None,
                         priority: BatchPriority | int = BatchPriority.NORMAL,
                         key: Hashable | None = None) -> R:
        """Process ``item`` in a batch and await its result, never blocking the loop.

        Arguments, return value and exceptions as for calling the object, except that a
        full queue is waited out with ``asyncio.sleep`` back-off. Cancelling the awaiting
        task cancels the item (skipped unless its batch had already started).
        """
        # Imported here so that `import fastbatch` does not import asyncio.
        import asyncio

        from ._aio import result_async, submit_async

        processor = self._runner.ensure_started()
        if timeout is None:
            return await result_async(await submit_async(processor, item, priority=priority, key=key))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future = await submit_async(processor, item, priority=priority, timeout=timeout, key=key)
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait((waiter,), timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            waiter.cancel()
            future.cancel()
            raise
        if not done:
            waiter.cancel()  # also cancels the item, and nobody is left to read an error
            future.cancel()
            raise TimeoutError(f"no result from {processor.name!r} within timeout={timeout}s")
        result: R = waiter.result()  # from the asyncio future, so its error counts as retrieved
        return result

    def submit(self, item: T, *, timeout: float | None = None,
               priority: BatchPriority | int = BatchPriority.NORMAL,
               key: Hashable | None = None) -> BatchFuture[R]:
        """Queue ``item`` and return its future at once (``enqueue_predict``).

        Args:
            item: one item.
            timeout: seconds to wait for room in a full queue; ``None`` waits.
            priority: a ``BatchPriority``.
            key: the item's lane key (see calling the object).

        Returns:
            The item's future; a full queue gives a future failed with ``QueueFullError``
            (or raises it, with ``raise_on_queue_full=True``).
        """
        return self._runner.ensure_started().enqueue_predict(item, timeout, priority, key=key)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the processor (``BatchProcessor.stop``); the next call starts it again.

        Args:
            timeout: seconds to let queued items finish; ``None`` waits until they have.
        """
        self._runner.processor.stop(timeout)


class AsyncBatchedFunction(BatchedFunction[T, R]):
    """A :class:`BatchedFunction` of a coroutine function: calling it returns a coroutine.

    ``await fn(item)`` is ``await fn.call_async(item)``; the wrapped ``async def`` runs on
    an event loop of the processor's own (``BatchProcessor.start``).
    """

    async def __call__(self, item: T, *, timeout: float | None = None,  # type: ignore[override]
                       priority: BatchPriority | int = BatchPriority.NORMAL, key: Hashable | None = None) -> R:
        """Process ``item`` in a batch and await its result (as :meth:`call_async`)."""
        return await self.call_async(item, timeout=timeout, priority=priority, key=key)


@overload
def batch(func: Callable[[Any], Any], /) -> BatchedFunction[Any, Any]: ...


@overload
def batch(*, max_batch_size: int | None = None, batch_timeout: float | None = None,
          name: str | None = None,
          **config_fields: Any) -> Callable[[Callable[[Any], Any]], BatchedFunction[Any, Any]]: ...


def batch(func: Callable[[Any], Any] | None = None, /, *, max_batch_size: int | None = None,
          batch_timeout: float | None = None, name: str | None = None,
          **config_fields: Any) -> Any:
    """Decorate a function of a batch so that it is called with one item at a time.

    The function takes a batch — an ``(n, ...)`` array for array items, a list for other
    items — and returns one result per sample (an array of ``n`` rows, or a sequence of
    ``n``). The decorated object is called with one item: ``fn(item)`` blocks the calling
    thread, ``await fn.call_async(item)`` suspends the calling coroutine, ``fn.submit``
    returns a future. Calls from many threads and tasks are batched together. A
    coroutine function (``async def``) gives an :class:`AsyncBatchedFunction`:
    ``await fn(item)``.

    Lifecycle: the processor starts on the first call; ``fn.stop()`` stops it and the
    next call starts it again; it is stopped for good (queued items get ``shutdown_timeout``) when ``fn``
    is garbage-collected or the interpreter exits. Decorate functions (or wrap bound
    methods per instance), not methods in a class body.

    Usable bare (``@batch``) or with arguments (``@batch(max_batch_size=32)``).

    Args:
        func: the function of a batch (when used bare).
        max_batch_size: samples per batch at most. ``initial_batch_size`` and
            ``min_batch_size``, unless given, follow from it (``BatchProcessorConfig``).
        batch_timeout: seconds a batch waits for more items after its first arrived.
        name: the processor's name (threads, logs, metrics); the function's
            ``__qualname__`` by default.
        **config_fields: any other ``BatchProcessorConfig`` field;
            ``batch_generic_items`` defaults to True here.

    Returns:
        A :class:`BatchedFunction` (or, with arguments, a decorator that makes one).

    Raises:
        TypeError, ValueError: an invalid config field (at decoration time), or a
            non-callable ``func``.
    """
    config = _config(max_batch_size, batch_timeout, dict(config_fields))

    def decorate(f: Callable[[Any], Any]) -> BatchedFunction[Any, Any]:
        if not callable(f):
            raise TypeError(f"@fastbatch.batch decorates a callable, not {type(f).__name__}")
        kind = AsyncBatchedFunction if is_coroutine_function(f) else BatchedFunction
        return kind(f, dataclasses.replace(config), name)

    return decorate if func is None else decorate(func)
