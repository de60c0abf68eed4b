"""The future handed out by ``enqueue_predict``, and the helpers that resolve futures.

``BatchFuture`` is a ``concurrent.futures.Future``: ``wait``, ``as_completed`` and
``asyncio.wrap_future`` work on it unchanged.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger("fastbatch")

R = TypeVar("R")


class BatchFuture(concurrent.futures.Future, Generic[R]):  # type: ignore[type-arg]
    """The pending result of one item: the rows of the batch result that belong to it."""

    def result(self, timeout: float | None = None) -> R:
        """Wait for and return the item's result (see ``concurrent.futures.Future``)."""
        return super().result(timeout)  # type: ignore[no-any-return]


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note`` on 3.11+, the same ``__notes__`` attribute on 3.10."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            try:
                exc.__notes__ = notes  # type: ignore[attr-defined]
            except AttributeError:
                return
        notes.append(note)


def resolve_results(futures: Sequence[Any], results: Sequence[Any]) -> int:
    """Set each future's result; returns how many futures were set.

    A future may already be finished (failed by ``stop`` past its deadline): it is left
    as it is. A done-callback that raises ``BaseException`` must not kill the worker or
    leave the remaining futures pending, so the loop survives it.
    """
    n = len(futures)
    i = 0
    done = 0
    while i < n:
        try:
            while i < n:
                f = futures[i]
                i += 1
                if f is not None:
                    f.set_result(results[i - 1])
                    done += 1
        except concurrent.futures.InvalidStateError:
            continue
        except BaseException:  # noqa: BLE001 - a user's callback; log and go on
            logger.exception("fastbatch: a done-callback of %r raised", futures[i - 1])
    return done


def fail_futures(futures: Iterable[Any], exc: BaseException) -> int:
    """Fail every unfinished future with ``exc``; returns how many were failed.

    A cancelled future is moved to "cancelled and notified" instead, which is what
    ``concurrent.futures.wait`` and ``as_completed`` look for.
    """
    failed = 0
    for f in futures:
        if f is None:
            continue
        try:
            if not f.set_running_or_notify_cancel():
                continue
        except RuntimeError:
            pass  # already running (taken by the worker) or finished
        try:
            f.set_exception(exc)
            failed += 1
        except concurrent.futures.InvalidStateError:
            continue
        except BaseException:  # noqa: BLE001 - a user's callback; log and go on
            logger.exception("fastbatch: a done-callback of %r raised", f)
            failed += 1
    return failed
