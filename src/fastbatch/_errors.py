"""Exception types raised by fastbatch.

Each one subclasses the stdlib exception a caller would already catch (``queue.Full``,
``TimeoutError``, ``ValueError`` ...) so that code written for the classic processor API keeps
working, plus :class:`FastBatchError` so that callers can catch everything of ours at once.
"""

from __future__ import annotations

import queue


class FastBatchError(Exception):
    """Base class of every exception fastbatch raises on its own account."""


class QueueFullError(FastBatchError, queue.Full):
    """The request queue stayed full for the whole enqueue timeout."""


class QueueClosedError(FastBatchError, RuntimeError):
    """The request queue is closed: nothing more can be put into it."""


class ProcessorStoppedError(QueueClosedError):
    """The processor is not running (never started, stopping or stopped).

    Raised by enqueue calls after ``stop()`` and set on futures whose items were still
    queued when ``stop(timeout)`` ran out of time.
    """


class LaneChangedError(FastBatchError, LookupError):
    """A put named a lane whose tag has changed since (internal: the caller looks it up again)."""


class OverloadedError(QueueFullError):
    """A new item could not be served within ``target_latency_ms``: refused at once (shed)."""


class TooManyLanesError(QueueFullError):
    """Items of ``max_lanes`` different shapes or keys are waiting; a new one must wait."""


class BatchShapeError(FastBatchError, ValueError):
    """An item's sample shape differs from the batch's sample shape."""


class BatchDtypeError(FastBatchError, TypeError):
    """An item's dtype differs from the batch's dtype, or cannot be batched at all."""


class ResultMismatchError(FastBatchError, ValueError):
    """The batch function returned a result that cannot be split back to the items."""


class ItemTimeoutError(FastBatchError, TimeoutError):
    """An item ran out of time (``item_timeout`` for non-array items)."""


class ItemExpiredError(ItemTimeoutError):
    """An item's deadline passed while it was still queued; it never reached the function."""


class BatchFunctionExit(FastBatchError):
    """The batch function raised a ``BaseException`` that is not an ``Exception``.

    ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit`` and the like raised inside the
    batch function are meant for the thread that raised them, not for every caller whose
    item was in the batch: each of the batch's futures fails with this error instead,
    the original as its ``__cause__``. The worker goes on with the next batch.
    """


class SelfWaitError(FastBatchError, RuntimeError):
    """The batch function waited on a future of its own processor.

    That item can only be processed once the running batch returns: the wait would block
    until its timeout (or for ever), so it fails at once.
    """
