"""Helpers of the reliability suite: the ledger oracle, settling, threads, subprocesses.

The ledger is the suite's oracle. Every call the tests make to ``enqueue_predict`` or
``enqueue`` goes through it, and at any moment it can say, for every id it handed out,
which one final state the item reached:

- ``result``: the future's value equals ``oracle(item)`` (anything else is *misrouted*);
- ``failed``: the future's exception is one of the documented ones for that test;
- ``cancelled``: only if the test asked for the cancellation and ``cancel()`` said yes;
- ``expired``: the item's deadline passed while it was queued (``ItemExpiredError``);
- ``refused``: the call raised, or returned a future failed with ``QueueFullError``;
- ``pending``: not final yet — after a stop this is *lost*.

``check`` also compares the ledger with ``get_stats()``: the counts since creation must
satisfy ``total_submitted = total_processed + total_failed + total_cancelled
(+ total_expired) + queue_size + in flight``, and match the ledger's own counts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

import fastbatch

from fb_fixtures import EXTENDED, poll  # re-exported: the suite's modules import them from here

#: Figures accumulated over the session and printed by the conftest's terminal summary.
FIGURES: Counter = Counter()


def expired_error_type() -> type[BaseException] | None:
    """``fastbatch.ItemExpiredError`` once per-item deadlines exist, else None."""
    return getattr(fastbatch, "ItemExpiredError", None)


@dataclasses.dataclass
class Entry:
    """One call made through the ledger."""

    id: int
    item: Any
    expected: Any
    predict: bool  # enqueue_predict (a future) or enqueue (none)
    future: concurrent.futures.Future | None = None
    refused: BaseException | None = None  # raised at the call
    cancel_requested: bool = False
    cancel_succeeded: bool = False
    callbacks: int = 0

    @property
    def accepted(self) -> bool:
        """The item entered the queue (so ``total_submitted`` counts it)."""
        if self.refused is not None:
            return False
        f = self.future
        return not (f is not None and f.done() and not f.cancelled()
                    and isinstance(f.exception(), fastbatch.QueueFullError))


def same(a: Any, b: Any) -> bool:
    """Equality for results: arrays element-wise (NaN equal to NaN), else ``==``."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return a == b


@dataclasses.dataclass
class Report:
    """What ``Ledger.check`` found."""

    states: Counter
    problems: list[str]
    stats: dict[str, Any] | None = None

    @property
    def lost(self) -> int:
        return self.states["lost"]

    @property
    def misrouted(self) -> int:
        return self.states["misrouted"]

    def __str__(self) -> str:
        shown = "\n  ".join(self.problems[:25])
        more = f"\n  ... and {len(self.problems) - 25} more" if len(self.problems) > 25 else ""
        return f"states={dict(self.states)}\n  {shown}{more}"


class Ledger:
    """Records every enqueue and checks that each one reached exactly one final state.

    Args:
        oracle: ``oracle(item)`` is the result the item's future must have.
        allowed_errors: exception types a failed future may carry in this test.
    """

    def __init__(self, oracle: Callable[[Any], Any], allowed_errors: tuple[type[BaseException], ...] = (
            fastbatch.ProcessorStoppedError,)) -> None:
        self.oracle = oracle
        self.allowed_errors = allowed_errors
        self.entries: list[Entry] = []
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.seen: set[int] = set()  # ids the batch function was given
        self._seen_lock = threading.Lock()

    def new_id(self) -> int:
        with self._lock:
            return next(self._ids)

    # -- recording ---------------------------------------------------------------------

    def submit(self, processor: fastbatch.BatchProcessor, item: Any, *, ident: int | None = None,
               predict: bool = True, **kwargs: Any) -> Entry:
        """Enqueue ``item`` through ``processor``; refusals are recorded, not raised."""
        entry = Entry(self.new_id() if ident is None else ident, item, None, predict)
        try:
            entry.expected = self.oracle(item)
        except Exception:  # noqa: BLE001 - a bad item has no expected value
            entry.expected = None
        with self._lock:
            self.entries.append(entry)
        try:
            if predict:
                entry.future = processor.enqueue_predict(item, **kwargs)
            else:
                processor.enqueue(item, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - refusals are a recorded outcome
            entry.refused = exc
            if not isinstance(exc, Exception):
                raise
            return entry
        if entry.future is not None:
            entry.future.add_done_callback(lambda f, e=entry: self._called_back(e))
        return entry

    def _called_back(self, entry: Entry) -> None:
        with self._lock:
            entry.callbacks += 1

    def cancel(self, entry: Entry) -> bool:
        """Ask for the cancellation of ``entry``'s future; returns what ``cancel()`` said."""
        if entry.future is None:
            return False
        entry.cancel_requested = True
        ok = entry.future.cancel()
        entry.cancel_succeeded = entry.cancel_succeeded or ok
        return ok

    def note_seen(self, ids: Iterable[int]) -> None:
        """Called by batch functions with the ids they were given."""
        with self._seen_lock:
            self.seen.update(ids)

    # -- checking ----------------------------------------------------------------------

    @property
    def futures(self) -> list[concurrent.futures.Future]:
        return [e.future for e in self.entries if e.future is not None]

    def wait(self, timeout: float) -> int:
        """Wait for every future; returns how many are still pending after ``timeout``."""
        _, not_done = concurrent.futures.wait(self.futures, timeout=timeout)
        return len(not_done)

    def classify(self, entry: Entry, final: bool) -> tuple[str, str | None]:
        """``(state, problem or None)`` of one entry."""
        if entry.refused is not None:
            return "refused", None
        f = entry.future
        if f is None:
            return "untracked", None  # enqueue(): only the stats know its outcome
        if not f.done():
            return ("lost", f"id {entry.id}: future still pending") if final else ("pending", None)
        if f.cancelled():
            if not entry.cancel_succeeded:
                return "cancelled", f"id {entry.id}: cancelled although nobody cancelled it"
            if entry.id in self.seen:
                return "cancelled", f"id {entry.id}: cancelled, yet given to the batch function"
            return "cancelled", None
        exc = f.exception()
        if exc is None:
            if entry.cancel_succeeded:
                return "result", f"id {entry.id}: cancel() returned True but the future has a result"
            if not same(f.result(), entry.expected):
                return "misrouted", (f"id {entry.id}: result {f.result()!r} != expected {entry.expected!r}")
            return "result", None
        if isinstance(exc, fastbatch.QueueFullError):
            return "refused", None
        expired = expired_error_type()
        if expired is not None and isinstance(exc, expired):
            return "expired", None
        if not isinstance(exc, self.allowed_errors):
            return "failed", f"id {entry.id}: unexpected exception {exc!r}"
        return "failed", None

    def check(self, processor: fastbatch.BatchProcessor | None = None, *, final: bool = True,
              inflight: int = 0, exact: bool | None = None) -> Report:
        """Classify every entry and compare with the processor's statistics.

        Args:
            processor: whose ``get_stats()`` must agree with the ledger (None: skip).
            final: everything should be finished (a pending future is *lost*).
            inflight: items the test knows the batch function holds right now.
            exact: also require processed/failed/cancelled/expired to equal the ledger's
                counts (default: when every entry has a future and ``final``).
        """
        states: Counter = Counter()
        problems: list[str] = []
        with self._lock:
            entries = list(self.entries)
        if final:
            # A future's done-callbacks run after its waiters are woken (as in the stdlib),
            # possibly on another thread: give them a moment before counting them.
            poll(lambda: all(e.callbacks or not e.future.done() for e in entries
                             if e.future is not None), timeout=5)
        if final:
            # Done-callbacks run on fastbatch's callback thread, a moment after the futures
            # finish (as with the stdlib, result() may return before they have run).
            finished = [e for e in entries if e.future is not None and e.future.done()]
            poll(lambda: all(e.callbacks >= 1 for e in finished), timeout=5)
        for entry in entries:
            state, problem = self.classify(entry, final)
            states[state] += 1
            if problem:
                problems.append(problem)
            if entry.future is not None and entry.future.done() and final and entry.callbacks != 1:
                states["callbacks_not_once"] += 1
                problems.append(f"id {entry.id}: done-callback ran {entry.callbacks} times")
        stats = None
        if processor is not None:
            stats = processor.get_stats()
            problems.extend(self.compare_stats(stats, entries, states, final=final,
                                               inflight=inflight, exact=exact))
        return Report(states, problems, stats)

    def compare_stats(self, s: dict[str, Any], entries: list[Entry], states: Counter, *, final: bool,
                      inflight: int, exact: bool | None) -> list[str]:
        problems = []
        accepted = sum(e.accepted for e in entries)
        full = sum(1 for e in entries if isinstance(e.refused, fastbatch.QueueFullError)
                   or (e.future is not None and not e.accepted))
        expired = s.get("total_expired", 0)
        # Items the worker has taken but not finished: the test may know (a held batch);
        # the processor reports them too (taken from the queue, batch not yet counted).
        inflight = max(inflight, s.get("items_in_flight", 0))
        accounted = (s["total_processed"] + s["total_failed"] + s["total_cancelled"] + expired
                     + s["queue_size"] + inflight)
        if s["total_submitted"] != accepted:
            problems.append(f"stats: total_submitted={s['total_submitted']} but the ledger "
                            f"accepted {accepted}")
        if s["total_refused"] != full:
            problems.append(f"stats: total_refused={s['total_refused']} but the ledger saw "
                            f"{full} queue-full refusals")
        if accounted != s["total_submitted"]:
            problems.append(
                f"stats: total_submitted={s['total_submitted']} != processed {s['total_processed']}"
                f" + failed {s['total_failed']} + cancelled {s['total_cancelled']} + expired "
                f"{expired} + queued {s['queue_size']} + in flight {inflight} = {accounted}")
        if exact is None:
            exact = final and states["untracked"] == 0
        if exact:
            for key, state in (("total_processed", "result"), ("total_failed", "failed"),
                               ("total_cancelled", "cancelled"), ("total_expired", "expired")):
                want = states[state] + (states["misrouted"] if state == "result" else 0)
                got = s.get(key, 0)
                if got != want:
                    problems.append(f"stats: {key}={got} but the ledger has {want} items {state}")
        elif final:
            tracked = {k: states[k] for k in ("result", "failed", "cancelled")}
            if s["total_processed"] < tracked["result"]:
                problems.append(f"stats: total_processed={s['total_processed']} < {tracked['result']} "
                                "futures with a result")
            if s["total_failed"] < tracked["failed"]:
                problems.append(f"stats: total_failed={s['total_failed']} < {tracked['failed']} "
                                "failed futures")
        return problems


def processor_threads(processor: fastbatch.BatchProcessor) -> list[threading.Thread]:
    """The live threads a processor started (worker, health monitor, item workers)."""
    pattern = re.compile(rf"fastbatch-[a-z]+-{re.escape(processor.name)}([-_]\d+)?")
    return [t for t in threading.enumerate() if pattern.fullmatch(t.name)]


def fastbatch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fastbatch-")]


def join_threads(threads: Iterable[threading.Thread], timeout: float = 10.0) -> list[str]:
    """Join ``threads`` within ``timeout`` overall; returns the names still alive."""
    end = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    return [t.name for t in threads if t.is_alive()]


# -- subprocesses ----------------------------------------------------------------------------

_SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastbatch.__file__)))


def run_python(code: str, core_name: str, timeout: float = 30.0,
               args: Iterable[str] = ()) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on the given core (``compiled``/``python``).

    The child imports the same fastbatch as the tests. A child still running after
    ``timeout`` is killed and reported as a hang (``returncode`` = None, output kept).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, env.get("PYTHONPATH", "")) if p)
    env.pop("FASTBATCH_NO_EXTENSIONS", None)
    if core_name == "python":
        env["FASTBATCH_NO_EXTENSIONS"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        # faulthandler prints every thread's stack on SIGABRT: the report shows where it hung.
        proc.send_signal(6)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, None, out, err)
