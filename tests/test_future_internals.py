"""The CPython internals ``BatchFuture`` relies on, pinned so that a change fails loudly.

``BatchFuture`` (``fastbatch._future``) subclasses ``concurrent.futures.Future`` without
calling its ``__init__`` and re-implements the private parts that the stdlib's
``concurrent.futures.wait`` / ``as_completed`` and ``asyncio.wrap_future`` reach into on
the futures they are given:

- ``_condition`` (acquired and released in sorted order by ``_AcquireFutures``; the same
  object each time), ``_waiters`` (a list ``wait`` appends its waiter to and removes it
  from, under ``_condition``), ``_state`` (compared with the state constants of
  ``concurrent.futures._base``);
- the waiter hooks ``add_result`` / ``add_exception`` / ``add_cancelled``, which the
  stdlib's own ``Future`` calls (under its condition, after the state changed) on
  ``set_result`` / ``set_exception`` / ``set_running_or_notify_cancel`` of a cancelled
  future, and which ``BatchFuture`` calls on the same transitions (including the batch
  helpers ``start_batch`` / ``resolve_batch`` / ``fail_futures``);
- ``_exception`` / ``_result`` / ``_invoke_callbacks``: read only by the stdlib Future's
  own methods, which ``BatchFuture`` overrides (its ``_result`` holds a failure marker for
  a failed future, so no stdlib function may read it on a foreign future);
- ``asyncio.wrap_future`` treats a ``BatchFuture`` as a concurrent future (it is not
  ``asyncio.isfuture``) and uses only its public API.

The first half reads the stdlib's source (``inspect.getsource`` + ``ast``) and fails with
a message naming the assumption that broke; the second half checks the behaviour on
``BatchFuture`` objects resolved from other threads. Python 3.10-3.13.
"""

from __future__ import annotations

import ast
import asyncio
import asyncio.base_futures
import asyncio.futures
import concurrent.futures
import concurrent.futures._base as cf_base
import inspect
import logging
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from fastbatch import BatchFuture
from fastbatch._future import expire_pending, fail_futures, resolve_batch, start_batch

cf = concurrent.futures
STATE_NAMES = ("PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED")
DONE_FOR_WAIT = {"CANCELLED_AND_NOTIFIED", "FINISHED"}
HOOKS = ("add_result", "add_exception", "add_cancelled")
#: What BatchFuture provides with the stdlib's meaning, so stdlib code may read it on one.
PROVIDED = frozenset({
    "_condition", "_waiters", "_state", "_exception", "_invoke_callbacks",
    "cancel", "cancelled", "running", "done", "result", "exception", "add_done_callback",
    "set_running_or_notify_cancel", "set_result", "set_exception",
})
#: Never to be read by stdlib code outside the stdlib Future's own (overridden) methods.
NOT_PROVIDED = {
    "_result": "BatchFuture keeps a failure marker there for a failed future (the stdlib: None)",
    "_done_callbacks": "BatchFuture keeps its callbacks elsewhere (created on first use)",
}
STDLIB = f"CPython {sys.version.split()[0]}"


# -- reading the stdlib's source ------------------------------------------------------------

def _tree(obj: Any) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(obj)))


def attributes_read(obj: Any, names: Iterable[str]) -> set[str]:
    """The attributes ``obj``'s source reads on the variables ``names`` (nested code too)."""
    names = set(names)
    return {node.attr for node in ast.walk(_tree(obj))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in names}


def calls_with_first_argument(obj: Any, name: str) -> set[str]:
    """The plain functions ``obj`` calls with the variable ``name`` as first argument."""
    return {node.func.id for node in ast.walk(_tree(obj))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args
            and isinstance(node.args[0], ast.Name) and node.args[0].id == name}


def where(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def check_reads(obj: Any, variables: Iterable[str], required: set[str]) -> None:
    """``obj`` reads ``required`` on the futures it is given, and nothing we do not provide."""
    found = attributes_read(obj, variables)
    missing = required - found
    assert not missing, (
        f"{STDLIB}: {where(obj)} no longer reads {sorted(missing)} on the futures it is given "
        f"(it reads {sorted(found)}). BatchFuture overrides those for it: re-read the stdlib, "
        "the protocol BatchFuture implements has changed.")
    for attr, why in NOT_PROVIDED.items():
        assert attr not in found, (
            f"{STDLIB}: {where(obj)} now reads future.{attr} directly; {why}.")
    extra = found - PROVIDED
    assert not extra, (
        f"{STDLIB}: {where(obj)} now reads {sorted(extra)} on the futures it is given; "
        f"BatchFuture provides only {sorted(PROVIDED)} with the stdlib's meaning.")


def test_state_constants_exist_in_concurrent_futures_base():
    for name in STATE_NAMES:
        assert hasattr(cf_base, name), (
            f"{STDLIB}: concurrent.futures._base.{name} is gone; fastbatch._future imports it "
            "and writes it to BatchFuture._state for wait()/as_completed() to read")
        value = getattr(cf_base, name)
        assert isinstance(value, str), (
            f"{STDLIB}: concurrent.futures._base.{name} is {value!r}, no longer a str "
            "(BatchFuture.__repr__ lowers it)")
    values = [getattr(cf_base, name) for name in STATE_NAMES]
    assert len(set(values)) == len(values), f"{STDLIB}: the future states are not distinct: {values}"
    assert list(cf_base._FUTURE_STATES) == values, (
        f"{STDLIB}: the stdlib's future states are now {cf_base._FUTURE_STATES!r}, "
        f"BatchFuture knows {values!r}")
    assert BatchFuture()._state == cf_base.PENDING


def test_stdlib_future_init_sets_only_what_batchfuture_replaces():
    """``BatchFuture`` never runs ``Future.__init__``: whatever it sets is absent on ours."""
    attrs = set(vars(cf.Future()))
    known = {"_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"}
    assert attrs == known, (
        f"{STDLIB}: concurrent.futures.Future.__init__ now sets {sorted(attrs - known)} and no "
        f"longer {sorted(known - attrs)}; BatchFuture skips that __init__, so stdlib code "
        "reading a new attribute on a BatchFuture would fail")


def test_every_inherited_method_uses_only_what_batchfuture_provides():
    """A stdlib ``Future`` method that BatchFuture does not override runs on our state.

    Public ones may only read (on ``self``) what BatchFuture provides; private helpers
    must be called only by methods BatchFuture overrides.
    """
    base = cf.Future
    own = set()
    for klass in BatchFuture.__mro__:
        if klass is base:
            break
        own.update(vars(klass))
    inherited = {name: value for name, value in vars(base).items()
                 if callable(value) or isinstance(value, (classmethod, staticmethod, property))}
    inherited = {n: v for n, v in inherited.items() if n not in own and n != "__init__"}
    for name, value in inherited.items():
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if not inspect.isfunction(func):  # __class_getitem__ = GenericAlias: no Python source
            continue
        if name.startswith("_") and not name.startswith("__"):  # _Future__get_result etc.
            short = name.replace("_Future", "", 1) if name.startswith("_Future__") else name
            callers = {m for m, v in vars(base).items() if inspect.isfunction(v)
                       and short in attributes_read(v, ["self"])}
            assert callers <= own, (
                f"{STDLIB}: concurrent.futures.Future.{name} is called by {sorted(callers - own)}, "
                "which BatchFuture inherits: it would read the stdlib's state on ours")
            continue
        read = attributes_read(func, ["self"])
        bad = {a for a in read if a in NOT_PROVIDED or (a.startswith("_") and a not in PROVIDED
                                                       and not a.startswith("__"))}
        assert not bad, (
            f"{STDLIB}: BatchFuture inherits concurrent.futures.Future.{name}, which reads "
            f"self.{sorted(bad)}: BatchFuture does not provide that (override the method)")


def test_invoke_callbacks_is_called_only_by_methods_batchfuture_overrides():
    callers = {name for name, v in vars(cf.Future).items() if inspect.isfunction(v)
               and "_invoke_callbacks" in attributes_read(v, ["self"])}
    assert callers == {"cancel", "set_result", "set_exception"}, (
        f"{STDLIB}: concurrent.futures.Future._invoke_callbacks is now called from "
        f"{sorted(callers)} (was cancel, set_result, set_exception)")
    for name in sorted(callers | {"_invoke_callbacks", "add_done_callback"}):
        assert getattr(BatchFuture, name) is not getattr(cf.Future, name), (
            f"BatchFuture inherits Future.{name}, which runs the stdlib's _done_callbacks")


def test_nothing_else_in_concurrent_futures_calls_private_future_methods():
    """``_invoke_callbacks`` and ``_done_callbacks`` stay internal to ``Future``."""
    import concurrent.futures.process
    import concurrent.futures.thread
    for module in (cf_base, concurrent.futures.thread, concurrent.futures.process,
                   asyncio.futures, asyncio.tasks, asyncio.base_events):
        tree = ast.parse(inspect.getsource(module))
        for klass in [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Future"]:
            tree.body.remove(klass)
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not used & {"_invoke_callbacks", "_done_callbacks"}, (
            f"{STDLIB}: {module.__name__} now uses {sorted(used & {'_invoke_callbacks', '_done_callbacks'})} "
            "outside Future; BatchFuture has its own callbacks")


def test_acquire_futures_takes_each_condition_by_attribute():
    check_reads(cf_base._AcquireFutures.__enter__, ["future"], {"_condition"})
    check_reads(cf_base._AcquireFutures.__exit__, ["future"], {"_condition"})
    assert "sorted" in {n.func.id for n in ast.walk(_tree(cf_base._AcquireFutures.__init__))
                        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}, (
        f"{STDLIB}: _AcquireFutures no longer sorts the futures before taking their conditions")


def test_waiter_installation_reads_state_and_waiters():
    check_reads(cf_base._create_and_install_waiters, ["f"], {"_state", "_waiters"})
    check_reads(cf_base._yield_finished_futures, ["f"], {"_condition", "_waiters"})


def test_wait_and_as_completed_read_condition_state_and_waiters():
    check_reads(cf_base.wait, ["f"], {"_condition", "_state", "_waiters", "cancelled", "exception"})
    check_reads(cf_base.as_completed, ["f"], {"_condition", "_state", "_waiters"})
    assert cf.wait is cf_base.wait and cf.as_completed is cf_base.as_completed


def test_only_condition_waiters_and_state_are_reached_into_anywhere_in_base():
    """No other function of ``concurrent.futures._base`` reads private parts of a future."""
    tree = ast.parse(inspect.getsource(cf_base))
    found: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Future":
            continue
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id not in ("self", "cls") and sub.attr.startswith("_")
                    and not sub.attr.startswith("__")):
                found.setdefault(sub.attr, set()).add(getattr(node, "name", "?"))
    assert set(found) == {"_condition", "_waiters", "_state"}, (
        f"{STDLIB}: concurrent.futures._base now reaches into {sorted(found)} "
        f"({found}); BatchFuture provides _condition, _waiters and _state")


def _state_sets(obj: Any) -> list[set[str]]:
    """The state names each ``f._state in [...]`` / ``not in [...]`` of ``obj`` lists."""
    out = []
    for node in ast.walk(_tree(obj)):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute)
                and node.left.attr == "_state"):
            for comp in node.comparators:
                if isinstance(comp, (ast.List, ast.Set, ast.Tuple)):
                    out.append({e.id for e in comp.elts if isinstance(e, ast.Name)})
                elif isinstance(comp, ast.Name):
                    out.append({comp.id})
    return out


@pytest.mark.parametrize("func", [cf_base.wait, cf_base.as_completed,
                                  cf_base._create_and_install_waiters],
                         ids=lambda f: f.__name__)
def test_wait_counts_only_notified_cancellations_and_finished_as_done(func):
    """A merely CANCELLED future is not done for ``wait``: it must be *notified* first.

    BatchFuture notifies (CANCELLED -> CANCELLED_AND_NOTIFIED, ``add_cancelled``) when its
    batch is started or failed: ``start_batch`` / ``fail_futures``.
    """
    sets = _state_sets(func)
    assert sets, f"{STDLIB}: {where(func)} no longer compares f._state with the state constants"
    for names in sets:
        assert names == DONE_FOR_WAIT, (
            f"{STDLIB}: {where(func)} now treats {sorted(names)} as done "
            f"(was {sorted(DONE_FOR_WAIT)})")


def test_stdlib_waiters_have_the_three_hooks():
    for name in ("_Waiter", "_AsCompletedWaiter", "_FirstCompletedWaiter", "_AllCompletedWaiter"):
        klass = getattr(cf_base, name, None)
        assert klass is not None, f"{STDLIB}: concurrent.futures._base.{name} is gone"
        for hook in HOOKS:
            method = getattr(klass, hook, None)
            assert method is not None, (
                f"{STDLIB}: {name}.{hook} is gone; BatchFuture calls it on its waiters")
            params = list(inspect.signature(method).parameters)
            assert params == ["self", "future"], (
                f"{STDLIB}: {name}.{hook}{inspect.signature(method)}: BatchFuture calls "
                "hook(future)")


def test_stdlib_future_calls_the_hooks_on_the_transitions_batchfuture_does():
    expected = {"set_result": {"add_result"}, "set_exception": {"add_exception"},
                "set_running_or_notify_cancel": {"add_cancelled"}}
    seen = {}
    for name, value in vars(cf.Future).items():
        if inspect.isfunction(value):
            hooks = attributes_read(value, ["waiter"]) & set(HOOKS)
            if hooks:
                seen[name] = hooks
    assert seen == expected, (
        f"{STDLIB}: concurrent.futures.Future calls the waiter hooks as {seen}, "
        f"BatchFuture as {expected} (cancel() calls none: only the notify does)")
    for name in ("set_result", "set_exception", "set_running_or_notify_cancel"):
        assert "_waiters" in attributes_read(getattr(cf.Future, name), ["self"])


def test_asyncio_copies_state_through_the_public_api():
    check_reads(asyncio.futures._copy_future_state, ["source"],
                {"done", "cancelled", "exception", "result"})
    check_reads(asyncio.futures._chain_future, ["source"], {"add_done_callback", "cancel"})
    first_args = calls_with_first_argument(asyncio.futures.wrap_future, "future")
    assert {"isfuture", "_chain_future"} <= first_args, (
        f"{STDLIB}: asyncio.wrap_future no longer does isfuture(future) then "
        f"_chain_future(future, ...) (it calls {sorted(first_args)})")
    check_reads(asyncio.futures.wrap_future, ["future"], set())
    chain_calls = calls_with_first_argument(asyncio.futures._chain_future, "source")
    assert "isfuture" in chain_calls, (
        f"{STDLIB}: asyncio's _chain_future no longer asks isfuture(source)")


def test_batchfuture_is_a_concurrent_future_not_an_asyncio_one():
    assert "_asyncio_future_blocking" in attributes_read(asyncio.base_futures.isfuture, ["obj"]), (
        f"{STDLIB}: asyncio.isfuture no longer looks for _asyncio_future_blocking")
    f = BatchFuture()
    assert isinstance(f, cf.Future)
    assert not asyncio.isfuture(f), (
        "BatchFuture passes asyncio.isfuture: wrap_future would hand it back unwrapped and "
        "_chain_future would read its (absent) event loop")


def test_condition_and_waiters_are_the_same_objects_on_every_access():
    """``_AcquireFutures`` acquires and releases through separate reads; wait() appends to
    and removes from ``_waiters`` through separate reads."""
    f = BatchFuture()
    cond = f._condition
    assert cond is f._condition and f._waiters is f._waiters
    assert isinstance(f._waiters, list) and f._waiters == []
    for method in ("acquire", "release", "notify_all", "wait", "__enter__", "__exit__"):
        assert hasattr(cond, method)
    with cond:  # reentrant, as the stdlib's (an RLock): wait() calls f.exception() under it
        assert cond.acquire(blocking=False)
        cond.release()


class Recorder:
    """A stand-in for the stdlib's waiters: which hooks ran, in what state, lock held."""

    def __init__(self, future: Any) -> None:
        self.future = future
        self.events: list[tuple[str, str, bool]] = []
        with future._condition:
            future._waiters.append(self)

    def _record(self, hook: str, future: Any) -> None:
        assert future is self.future
        got: list[bool] = []
        probe = threading.Thread(target=lambda: got.append(future._condition.acquire(blocking=False)))
        probe.start()
        probe.join()
        if got[0]:
            future._condition.release()
        self.events.append((hook, future._state, not got[0]))

    def add_result(self, future: Any) -> None:
        self._record("add_result", future)

    def add_exception(self, future: Any) -> None:
        self._record("add_exception", future)

    def add_cancelled(self, future: Any) -> None:
        self._record("add_cancelled", future)


def _run(f: Any) -> None:
    f.set_running_or_notify_cancel()


# (what the stdlib Future does, what BatchFuture does through the batch helpers)
SCENARIOS: dict[str, tuple[list[Callable[[Any], Any]], list[Callable[[Any], Any]]]] = {
    "result": ([_run, lambda f: f.set_result(1)],
               [lambda f: start_batch([f]), lambda f: resolve_batch([f], [1])]),
    "result-by-method": ([_run, lambda f: f.set_result(1)], [_run, lambda f: f.set_result(1)]),
    "failed-pending": ([lambda f: f.set_exception(KeyError("x"))],
                       [lambda f: fail_futures([f], KeyError("x"))]),
    "failed-running": ([_run, lambda f: f.set_exception(KeyError("x"))],
                       [lambda f: start_batch([f]), lambda f: fail_futures([f], KeyError("x"))]),
    "expired": ([lambda f: f.set_exception(KeyError("x"))],
                [lambda f: expire_pending([f], KeyError("x"))]),
    "cancel-then-start": ([lambda f: f.cancel(), _run],
                          [lambda f: f.cancel(), lambda f: start_batch([f])]),
    "cancel-then-fail": ([lambda f: f.cancel(), _run],
                         [lambda f: f.cancel(), lambda f: fail_futures([f], KeyError("x"))]),
    "cancel-only": ([lambda f: f.cancel()], [lambda f: f.cancel()]),
    "cancel-then-expire": ([lambda f: f.cancel()],
                           [lambda f: f.cancel(), lambda f: expire_pending([f], KeyError("x"))]),
    "running-only": ([_run], [lambda f: start_batch([f])]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_waiter_hooks_match_the_stdlib_future(scenario):
    """Same hooks, same state seen by the hook, condition held, as the stdlib's Future."""
    outcomes = []
    for make, steps in zip((cf.Future, BatchFuture), SCENARIOS[scenario]):
        f = make()
        recorder = Recorder(f)
        for step in steps:
            step(f)
        exc = f._exception
        outcomes.append((recorder.events, f._state, type(exc) if exc is not None else None,
                         f.done(), f.cancelled(), f.running()))
    stdlib, ours = outcomes
    assert ours == stdlib, f"{scenario}: stdlib Future {stdlib}, BatchFuture {ours}"
    for _, state, held in ours[0]:
        assert held and state in DONE_FOR_WAIT


# -- behaviour: wait / as_completed / wrap_future / callbacks / cancel across threads --------

def started(n: int) -> list[BatchFuture]:
    futures: list[BatchFuture] = [BatchFuture() for _ in range(n)]
    assert start_batch(futures) is None
    return futures


class Resolver:
    """Runs steps in another thread once a stdlib waiter sits on every watched future."""

    def __init__(self, watched: list[Any], *steps: Callable[[], Any], between: Callable[[], Any] | None = None) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(watched, steps, between), daemon=True)
        self.thread.start()

    def _run(self, watched: list[Any], steps: tuple, between: Callable[[], Any] | None) -> None:
        try:
            deadline = time.monotonic() + 5
            while not all(f._waiters for f in watched):
                assert time.monotonic() < deadline, "no waiter was installed"
                time.sleep(0.0005)
            for i, step in enumerate(steps):
                if i and between is not None:
                    between()
                step()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def join(self) -> None:
        self.thread.join(5)
        assert not self.thread.is_alive(), "the resolver is stuck"
        if self.error is not None:
            raise self.error


def test_wait_first_completed_wakes_on_a_batch_resolved_elsewhere():
    futures = started(4)
    resolver = Resolver(futures, lambda: resolve_batch(futures[2:3], ["two"]))
    done, not_done = cf.wait(futures, timeout=5, return_when=cf.FIRST_COMPLETED)
    resolver.join()
    assert done == {futures[2]} and not_done == set(futures) - {futures[2]}
    assert all(f._waiters == [] for f in futures), "wait() left its waiter installed"
    # one already done: returns at once, without a waiter
    done, not_done = cf.wait(futures, timeout=0, return_when=cf.FIRST_COMPLETED)
    assert done == {futures[2]}


def test_wait_all_completed_counts_results_failures_and_notified_cancellations():
    futures = [BatchFuture() for _ in range(6)]
    futures[0].cancel()  # CANCELLED, not yet notified: still pending for wait()
    futures[1].cancel()
    returned = threading.Event()
    early: list[str] = []

    def still_waiting() -> None:
        if returned.wait(0.02):
            early.append("wait(ALL_COMPLETED) returned before every future was done")

    resolver = Resolver(
        futures,
        lambda: start_batch(futures),  # add_cancelled for 0 and 1, the rest run
        lambda: resolve_batch(futures[2:4], ["a", "b"]),
        lambda: fail_futures(futures[4:5], ValueError("four")),
        lambda: fail_futures(futures[5:], KeyError("five")),
        between=still_waiting)
    done, not_done = cf.wait(futures, timeout=5)
    returned.set()
    resolver.join()
    assert not early, early
    assert not not_done and done == set(futures)
    assert [f._state for f in futures] == ["CANCELLED_AND_NOTIFIED"] * 2 + ["FINISHED"] * 4
    assert [futures[2].result(), futures[3].result()] == ["a", "b"]
    assert isinstance(futures[4].exception(), ValueError)


def test_a_cancelled_future_is_done_for_wait_only_once_notified():
    for make, notify in ((cf.Future, _run), (BatchFuture, lambda f: start_batch([f]))):
        f = make()
        assert f.cancel()
        assert cf.wait([f], timeout=0).not_done == {f}, make.__name__
        notify(f)
        assert cf.wait([f], timeout=0).done == {f}, make.__name__


def test_wait_first_exception_returns_on_the_failure_not_the_results():
    futures = started(4)
    returned = threading.Event()
    early: list[str] = []

    def still_waiting() -> None:
        if returned.wait(0.02):
            early.append("wait(FIRST_EXCEPTION) returned on a result")

    resolver = Resolver(futures, lambda: resolve_batch(futures[:2], [0, 1]),
                        lambda: fail_futures(futures[2:3], RuntimeError("x")), between=still_waiting)
    done, not_done = cf.wait(futures, timeout=5, return_when=cf.FIRST_EXCEPTION)
    returned.set()
    resolver.join()
    assert not early, early
    assert done == set(futures[:3]) and not_done == {futures[3]}
    # already failed at the call: returns at once (calls f.exception() under the conditions)
    assert cf.wait(futures, timeout=0, return_when=cf.FIRST_EXCEPTION).done == set(futures[:3])
    resolve_batch(futures, [0, 1, 2, 3])
    assert futures[3].result(timeout=0) == 3 and isinstance(futures[2].exception(), RuntimeError)


def test_as_completed_yields_in_finishing_order_across_batches():
    futures = [BatchFuture() for _ in range(6)]
    futures[5].cancel()
    resolver = Resolver(
        futures,
        lambda: start_batch(futures),  # 5: add_cancelled
        lambda: resolve_batch([futures[3], futures[1]], ["three", "one"]),
        lambda: fail_futures([futures[0]], ValueError("zero")),
        lambda: resolve_batch([futures[4], futures[2]], ["four", "two"]))
    order = list(cf.as_completed(futures, timeout=5))
    resolver.join()
    assert order == [futures[i] for i in (5, 3, 1, 0, 4, 2)]
    assert all(f._waiters == [] for f in futures), "as_completed() left its waiter installed"
    assert list(cf.as_completed(futures, timeout=0)) != []  # all done: no waiting


def test_as_completed_and_wait_time_out_and_remove_their_waiters():
    done, pending = started(1), started(1)
    resolve_batch(done, ["ok"])
    with pytest.raises(cf.TimeoutError):
        for f in cf.as_completed(done + pending, timeout=0.02):
            assert f is done[0]
    assert cf.wait(pending, timeout=0.01).not_done == set(pending)
    assert pending[0]._waiters == [] and done[0]._waiters == []


def test_asyncio_wrap_future_result_failure_and_cancellation_from_other_threads():
    async def awaiting(item: Any) -> Any:
        return await asyncio.wrap_future(item)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        f, g, h = started(3)
        wrapped = asyncio.wrap_future(f)
        assert wrapped is not f and asyncio.isfuture(wrapped) and wrapped.get_loop() is loop
        threading.Thread(target=resolve_batch, args=([f], [7])).start()
        assert await wrapped == 7
        boom = ValueError("failed batch")
        threading.Thread(target=fail_futures, args=([g], boom)).start()
        with pytest.raises(ValueError) as info:
            await asyncio.wrap_future(g)
        assert info.value is boom
        # cancelling the awaiting task once the batch runs: the item still finishes
        task = asyncio.create_task(awaiting(h))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not h.cancelled()
        resolve_batch([h], ["late"])
        assert h.result(timeout=0) == "late"
        # a pending item is cancelled with the task; its batch later skips it
        p = BatchFuture()
        task = asyncio.create_task(awaiting(p))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert p.cancelled()
        assert start_batch([p]) == [] and p._state == "CANCELLED_AND_NOTIFIED"
        # an item cancelled from another thread cancels the awaiting coroutine
        q = BatchFuture()
        threading.Thread(target=q.cancel).start()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.wrap_future(q), 5)

    asyncio.run(main())


def test_done_callbacks_run_once_in_order_on_the_resolving_thread():
    ran: list[tuple[str, int, Any]] = []
    futures = [BatchFuture() for _ in range(3)]
    for f in futures:
        f.add_done_callback(lambda fut: ran.append(("first", threading.get_ident(), fut)))
        f.add_done_callback(lambda fut: ran.append(("second", threading.get_ident(), fut)))
    futures[2].cancel()
    start_batch(futures)
    idents = []

    def resolve() -> None:
        idents.append(threading.get_ident())
        resolve_batch(futures[:1], ["r"])
        fail_futures(futures, KeyError("k"))  # 1 fails; 0 finished, 2 cancelled: no re-run

    t = threading.Thread(target=resolve)
    t.start()
    t.join(5)
    assert [(name, fut) for name, _, fut in ran] == [
        ("first", futures[2]), ("second", futures[2]),
        ("first", futures[0]), ("second", futures[0]),
        ("first", futures[1]), ("second", futures[1])]
    assert {ident for _, ident, _ in ran[2:]} == set(idents)
    late: list[Any] = []
    futures[0].add_done_callback(lambda fut: late.append(threading.get_ident()))
    assert late == [threading.get_ident()]  # done already: runs at once, here


def test_a_raising_done_callback_is_logged_like_the_stdlib(caplog):
    def bad(_: Any) -> None:
        raise ZeroDivisionError("callback")

    logged = []
    for make in (cf.Future, BatchFuture):
        f = make()
        after: list[int] = []
        f.add_done_callback(bad)
        f.add_done_callback(lambda _: after.append(1))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
            f.set_result(1)
        assert after == [1], f"{make.__name__}: the next callback did not run"
        logged.append([(r.name, r.getMessage().split(" for ")[0], r.exc_info[0]) for r in caplog.records])
    assert logged[1] == logged[0] == [("concurrent.futures", "exception calling callback",
                                       ZeroDivisionError)], logged


def test_cancel_follows_the_stdlib_in_every_state():
    def table(make: Callable[[], Any], run: Callable[[Any], Any], finish: Callable[[Any], Any]) -> list:
        out = []
        f = make()
        out += [f.cancel(), f._state, f.cancel(), f.cancelled(), f.done()]
        r = make()
        run(r)
        out += [r.cancel(), r._state]
        finish(r)
        out += [r.cancel(), r._state, r.result(timeout=0)]
        return out

    stdlib = table(cf.Future, _run, lambda f: f.set_result(2))
    ours = table(BatchFuture, lambda f: start_batch([f]), lambda f: resolve_batch([f], [2]))
    assert ours == stdlib == [True, "CANCELLED", True, True, True, False, "RUNNING", False,
                              "FINISHED", 2]


def test_cancel_from_another_thread_wakes_a_blocked_result():
    f = BatchFuture()
    timer = threading.Timer(0.02, f.cancel)
    timer.start()
    with pytest.raises(cf.CancelledError):
        f.result(timeout=5)
    timer.join()
    g = started(1)[0]
    timer = threading.Timer(0.02, fail_futures, args=([g], OSError("gone")))
    timer.start()
    with pytest.raises(OSError, match="gone"):
        g.result(timeout=5)
    timer.join()
    with pytest.raises(cf.TimeoutError):  # concurrent.futures', the builtin from 3.11 on
        BatchFuture().result(timeout=0)
