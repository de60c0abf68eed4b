"""``BatchFuture``, the future ``enqueue_predict`` hands out, and whole-batch transitions.

``BatchFuture`` is a ``concurrent.futures.Future``: ``wait``, ``as_completed`` and
``asyncio.wrap_future`` work on it unchanged. It is built for the batch hot path:

- Creating one allocates little more than the object: the stdlib future builds a
  ``Condition`` (an ``RLock``, lists) per future, which costs more than the rest of an
  enqueue and keeps the cyclic GC busy. Ours creates its condition only when somebody
  actually waits (``result()`` on an unfinished future, ``wait``, ``as_completed``).
- State transitions happen under one module-wide lock, held once per *batch* by
  ``start_batch`` / ``resolve_batch`` instead of once per future.

Why the lazy condition is race-free: a waiter publishes its condition *before* it reads the
state; a resolver writes the state *before* it looks for a condition. Whichever comes second
sees the other's write: either the waiter finds the future finished, or the resolver
finds the condition and notifies it (after the waiter has entered ``wait``, because the
resolver must take the condition's lock).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING,
                                      RUNNING)
from typing import Any, Generic, TypeVar, cast

from ._errors import SelfWaitError

logger = logging.getLogger("fastbatch")
_cf_logger = logging.getLogger("concurrent.futures")

R = TypeVar("R")

_LOCK = threading.Lock()  # every state transition of every BatchFuture; never held while waiting
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class _Failure:
    """What ``_result`` holds for a failed future: one slot serves both outcomes."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc


class _Extras:
    """The parts of a future that only waiters and callbacks need, made on first use."""

    __slots__ = ("cond", "waiters", "callbacks", "parts")

    def __init__(self) -> None:
        self.cond: threading.Condition | None = None
        self.waiters: list[Any] = []
        self.callbacks: list[Callable[[Any], object]] = []
        # An item queued in parts: the parts' futures (which nobody else sees).
        self.parts: list[BatchFuture[Any]] | None = None


class BatchFuture(concurrent.futures.Future, Generic[R]):  # type: ignore[type-arg]
    """The pending result of one item: the rows of the batch result that belong to it."""

    # Two slots written at creation, two per resolution: the worker resolves every future
    # of a batch, and slot writes neither allocate nor hash.
    __slots__ = ("_state", "_result", "_x", "_owner")

    def __init__(self, owner: Any = None) -> None:  # no super().__init__(): it builds the Condition we defer
        self._state = PENDING
        self._x: _Extras | None = None  # _result is written when the future finishes
        # The run that will resolve it (or None): lets a wait from that run's own batch
        # function fail at once instead of deadlocking until its timeout.
        self._owner = owner

    # -- what the stdlib's wait() / as_completed() reach into ----------------------------

    def _extras(self) -> _Extras:
        x = self._x
        if x is None:
            with _LOCK:
                x = self._x
                if x is None:
                    x = self._x = _Extras()
        return x

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        x = self._extras()
        cond = x.cond
        if cond is None:
            with _LOCK:
                cond = x.cond
                if cond is None:
                    cond = x.cond = threading.Condition()
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        return self._extras().waiters

    @property
    def _exception(self) -> BaseException | None:  # type: ignore[override]
        r = self._result if self._state == FINISHED else None
        return r.exc if r.__class__ is _Failure else None

    def _cond_or_none(self) -> threading.Condition | None:
        x = self._x
        return None if x is None else x.cond

    def _change(self, apply: Callable[[BatchFuture[Any]], str | None]) -> str | None:
        """Run the state change ``apply`` under the locks it needs; wake the waiters.

        ``apply`` runs under ``_LOCK`` and returns the waiters' hook to call ("add_result"
        ...), "" for a change with no hook, or None for no change. The stdlib's ``wait``
        and ``as_completed`` read the state while holding the future's condition and rely
        on it not changing under them, so once a condition exists the change is made
        while holding it too (lock order: condition, then ``_LOCK``). A condition is only
        ever created under ``_LOCK``, so "none exists" stays true while we hold ``_LOCK``.
        """
        while True:
            cond = self._cond_or_none()
            if cond is None:
                with _LOCK:
                    if self._cond_or_none() is None:
                        return apply(self)
                continue  # a condition appeared meanwhile: take the slow path
            with cond:
                with _LOCK:
                    event = apply(self)
                if event is not None and event != "run":  # starting to run wakes nobody
                    x = self._x
                    assert x is not None
                    if event.startswith("add_"):
                        for waiter in x.waiters:
                            getattr(waiter, event)(self)
                    cond.notify_all()
                return event

    def _invoke_callbacks(self) -> None:
        x = self._x
        if x is not None:
            for callback in x.callbacks:
                try:
                    callback(self)
                except Exception:
                    _cf_logger.exception("exception calling callback for %r", self)

    # -- the Future API ------------------------------------------------------------------

    def __repr__(self) -> str:
        state = self._state
        if state == FINISHED:
            r = self._result
            if r.__class__ is _Failure:
                return f"<{type(self).__name__} at {id(self):#x} state=finished raised {type(r.exc).__name__}>"
            return f"<{type(self).__name__} at {id(self):#x} state=finished returned {type(r).__name__}>"
        return f"<{type(self).__name__} at {id(self):#x} state={state.lower()}>"

    def cancel(self) -> bool:
        """Cancel the item if its batch has not started; True if it is (now) cancelled.

        An item queued in parts is cancelled only while none of its parts has started,
        all parts with it in one step (so no batch can start one of them meanwhile).
        """
        outcome: list[bool] = []
        x = self._x
        parts = x.parts if x is not None else None
        if parts is None:
            changed = self._change(lambda f: _apply_cancel(f, outcome))
        else:
            changed = self._change(lambda f: _apply_cancel_parts(f, parts, outcome))
        if changed is not None:
            if parts is not None:
                for part in parts:
                    part._invoke_callbacks()
            self._invoke_callbacks()
        return outcome[0]

    def split_into(self, parts: list[BatchFuture[Any]]) -> None:
        """Make this the future of an item queued as ``parts`` (before anyone cancels it)."""
        self._extras().parts = parts

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE

    def set_running_or_notify_cancel(self) -> bool:
        event = self._change(_apply_start)
        if event is None:
            raise RuntimeError(f"Future in unexpected state: {self!r}")
        return event == "run"

    def _finish(self, result: Any, event: str) -> None:
        if self._change(lambda f: _apply_finish(f, result, event)) is None:
            raise concurrent.futures.InvalidStateError(f"{self._state}: {self!r}")
        self._invoke_callbacks()

    def set_result(self, result: Any) -> None:
        self._finish(result, "add_result")

    def set_exception(self, exception: BaseException | None) -> None:
        self._finish(_Failure(exception), "add_exception")

    def _wait_done(self, timeout: float | None) -> None:
        if self._state not in _DONE:
            owner = self._owner
            if owner is not None and owner.runs_batches_on(threading.current_thread()):
                raise SelfWaitError(
                    f"the batch function of BatchProcessor {owner.name!r} waits on a future of "
                    "its own processor: that item can only be processed after the running batch "
                    "returns, so the wait could never succeed")
            cond = self._condition
            with cond:
                cond.wait_for(self.done, timeout)
        state = self._state
        if state in _CANCELLED:
            raise concurrent.futures.CancelledError()
        if state != FINISHED:
            # The stdlib's class: on 3.10 it is not yet the builtin TimeoutError.
            raise concurrent.futures.TimeoutError()

    def result(self, timeout: float | None = None) -> R:
        """Wait for and return the item's result (see ``concurrent.futures.Future``)."""
        if self._state != FINISHED:
            self._wait_done(timeout)
        r = self._result
        if r.__class__ is not _Failure:
            return cast(R, r)
        exc = cast(BaseException, r.exc)
        try:
            raise exc
        finally:
            del exc, r  # no reference cycle through the traceback

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != FINISHED:
            self._wait_done(timeout)
        return self._exception

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        with _LOCK:
            if self._state not in _DONE:
                x = self._x
                if x is None:
                    x = self._x = _Extras()
                x.callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _cf_logger.exception("exception calling callback for %r", self)


def _apply_cancel(f: BatchFuture[Any], outcome: list[bool]) -> str | None:
    state = f._state
    if state == PENDING:
        f._state = CANCELLED
        outcome.append(True)
        return ""
    outcome.append(state in _CANCELLED)
    return None


def _apply_cancel_parts(f: BatchFuture[Any], parts: list[BatchFuture[Any]], outcome: list[bool]) -> str | None:
    # Under _LOCK: no part can start while we look. The parts are never waited on, so
    # they have no condition to take first.
    if f._state != PENDING or any(p._state != PENDING or p._cond_or_none() is not None for p in parts):
        outcome.append(f._state in _CANCELLED)
        return None
    for p in parts:
        p._state = CANCELLED
    f._state = CANCELLED
    outcome.append(True)
    return ""


def _apply_start(f: BatchFuture[Any]) -> str | None:
    state = f._state
    if state == PENDING:
        f._state = RUNNING
        return "run"  # not a waiter hook: waiters are woken, nothing is reported
    if state == CANCELLED:
        f._state = CANCELLED_AND_NOTIFIED
        return "add_cancelled"
    return None


def _apply_finish(f: BatchFuture[Any], result: Any, event: str) -> str | None:
    if f._state in _DONE:
        return None
    f._result = result
    f._state = FINISHED
    return event


# -- whole-batch transitions (the worker's hot path) ----------------------------------------

def start_batch(futures: Sequence[Any], counters: Any = None) -> list[int] | None:
    """Mark a batch's futures running; returns the indices to keep, or None for all.

    Cancelled futures are moved to "cancelled and notified" (what ``wait`` and
    ``as_completed`` look for) and left out, as are futures finished while queued (an
    expired deadline); ``counters`` counts both (the items were taken from the queue).
    One ``_LOCK`` for the batch; futures that somebody waits on (they have a condition)
    change state under it, one by one.
    """
    dropped: list[int] = []
    watched: list[int] = []
    with _LOCK:
        for i, f in enumerate(futures):
            if f is not None:
                x = f._x
                if x is not None and x.cond is not None:
                    watched.append(i)
                elif f._state == PENDING:
                    f._state = RUNNING
                else:
                    if f._state == CANCELLED:
                        f._state = CANCELLED_AND_NOTIFIED
                    dropped.append(i)
    for i in watched:
        if futures[i]._change(_apply_start) != "run":
            dropped.append(i)
    if not dropped:
        return None
    if counters is not None:
        cancelled = sum(1 for i in dropped if futures[i]._state == CANCELLED_AND_NOTIFIED)
        counters.add(cancelled=cancelled, expired_dropped=len(dropped) - cancelled,
                     in_flight=-len(dropped))
    gone = set(dropped)
    return [i for i in range(len(futures)) if i not in gone]


def expire_pending(futures: Iterable[Any], exc: BaseException,
                   run_callbacks: Callable[[list[Any]], None] | None = None,
                   counters: Any = None) -> int:
    """Fail the futures that are still queued (not running, not done) with ``exc``.

    Each is counted as expired in ``counters`` under the state lock, before its state
    changes, so the count is never behind what an observer of the future can see.
    """
    return fail_futures(futures, exc, only_pending=True, run_callbacks=run_callbacks,
                        counters=counters, outcome="expired")


def _apply_resolve(f: BatchFuture[Any], result: Any, counters: Any) -> str | None:
    if f._state != RUNNING:
        return None  # finished already (failed by stop past its deadline)
    if counters is not None:
        counters.settle("processed", True)
    f._result = result
    f._state = FINISHED
    return "add_result"


def resolve_batch(futures: Sequence[Any], results: Sequence[Any],
                  run_callbacks: Callable[[list[Any]], None] | None = None,
                  counters: Any = None, ended: tuple[int, ...] | None = None) -> int:
    """Give each running future its result; returns how many were set.

    A future that is finished already (failed by ``stop`` past its deadline) keeps its
    state. ``counters`` counts the results as processed (and no longer in flight) under
    ``_LOCK``, before any state is written, in one update with ``ended`` (the rest of the
    batch's ``Counters.batch_ended`` arguments) when given. Waiters and done-callbacks
    run after ``_LOCK`` is released; a callback that raises ``BaseException`` is logged
    and the rest still run.
    """
    callbacks: list[Any] = []
    watched: list[tuple[Any, Any]] = []
    with _LOCK:
        # Two passes, no list of the batch's futures: count first (the outcomes are
        # counted before any state changes), then write. Nothing changes in between:
        # states and waiters change only under _LOCK.
        n = 0
        for f in futures:
            if f is not None and f._state == RUNNING:
                x = f._x
                if x is None or x.cond is None:
                    n += 1
        if counters is not None:
            if ended is not None:
                batches, samples, pad, real, processed, failed, in_flight = ended
                counters.batch_ended(batches, samples, pad, real, processed + n, failed, in_flight - n)
            elif n:
                counters.add(processed=n, in_flight=-n)
        for f, r in zip(futures, results):
            if f is not None and f._state == RUNNING:
                x = f._x
                if x is None:
                    f._result = r
                    f._state = FINISHED
                elif x.cond is None:
                    f._result = r
                    f._state = FINISHED
                    callbacks.append(f)
                else:
                    watched.append((f, r))
    for f, r in watched:
        if f._change(lambda g, r=r: _apply_resolve(g, r, counters)) is not None:
            n += 1
            callbacks.append(f)
    _dispatch(callbacks, run_callbacks)
    return n


def _dispatch(finished: list[Any], run_callbacks: Callable[[list[Any]], None] | None) -> None:
    """Run the done-callbacks of ``finished`` here, or hand them to ``run_callbacks``."""
    if not finished:
        return
    if run_callbacks is not None:
        run_callbacks(finished)
        return
    for f in finished:
        try:
            f._invoke_callbacks()
        except BaseException:  # noqa: BLE001 - a user's callback; log and go on
            logger.exception("fastbatch: a done-callback of %r raised", f)


def _apply_fail(f: BatchFuture[Any], failure: _Failure, only_pending: bool, counters: Any,
                outcome: str, taken: bool, leaving: bool) -> str | None:
    state = f._state
    if state == FINISHED:
        if leaving and counters is not None:  # expired while queued, leaving the queue now
            counters.add(expired_dropped=1, in_flight=-1 if taken else 0)
        return None
    if state == PENDING or (state == RUNNING and not only_pending):
        if counters is not None:
            counters.settle(outcome, taken)
        f._result = failure
        f._state = FINISHED
        return "add_exception"
    if state == CANCELLED and not only_pending:
        if counters is not None:
            counters.settle("cancelled", taken)
        f._state = CANCELLED_AND_NOTIFIED
        return "add_cancelled"
    return None


def fail_futures(futures: Iterable[Any], exc: BaseException, only_pending: bool = False,
                 run_callbacks: Callable[[list[Any]], None] | None = None,
                 counters: Any = None, outcome: str = "failed", taken: bool = False,
                 leaving: bool = False) -> int:
    """Fail every unfinished future with ``exc``; returns how many were failed.

    A cancelled future is moved to "cancelled and notified" instead. With
    ``only_pending``, running and cancelled futures are left alone. ``counters`` counts
    each change (as ``outcome``, or as cancelled) before it is made; ``taken``: the
    items had been taken for a batch (they leave the in-flight count); ``leaving``: the
    futures are leaving the queue unrun, so a finished one (expired while queued) is
    counted as such.
    """
    failure = _Failure(exc)
    finished = []
    for f in futures:
        if f is not None and f._change(
                lambda g: _apply_fail(g, failure, only_pending, counters, outcome, taken, leaving)
        ) == "add_exception":
            finished.append(f)
    _dispatch(finished, run_callbacks)
    return len(finished)


_NOTE_PREFIX = "fastbatch: "


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note`` on 3.11+, the same ``__notes__`` attribute on 3.10.

    ``note`` starts with "fastbatch: ". An exception instance the function raises again
    and again (a module-level one, say) must not pile up our notes: see ``forget_notes``.
    """
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and note in notes:
        return
    if hasattr(exc, "add_note"):
        exc.add_note(note)
    else:  # pragma: no cover - Python 3.10
        if not isinstance(notes, list):
            notes = []
            try:
                setattr(exc, "__notes__", notes)  # noqa: B010 - not in 3.10's typeshed
            except AttributeError:
                return
        notes.append(note)


def forget_notes(exc: BaseException) -> None:
    """Remove the notes fastbatch added to ``exc`` for an earlier batch."""
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, list) and any(isinstance(n, str) and n.startswith(_NOTE_PREFIX) for n in notes):
        notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(_NOTE_PREFIX))]
