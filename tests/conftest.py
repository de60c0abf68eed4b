"""Shared fixtures.

Every core test runs against both implementations of the core through the ``core``
fixture (as propcache's tests do): ``fastbatch.core._core`` (compiled) and
``fastbatch.core._core_py`` (pure Python). A compiled core that cannot be imported fails the
run, unless ``FASTBATCH_NO_EXTENSIONS`` is set, in which case its tests are skipped.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

with warnings.catch_warnings():
    # Importing fastbatch runs the selector, which warns when the compiled core is
    # missing. Under `filterwarnings = error` that would break every test, the pure-Python
    # ones included; instead the `core` fixture reports the missing build, test by test.
    warnings.simplefilter("ignore", RuntimeWarning)
    importlib.import_module("fastbatch")

CORE_MODULES = {"compiled": "fastbatch.core._core", "python": "fastbatch.core._core_py"}


def _no_extensions() -> bool:
    return os.environ.get("FASTBATCH_NO_EXTENSIONS", "") not in ("", "0")


def load_core(kind: str) -> ModuleType:
    """Import one core; skip or fail (see the module docstring) when it is missing."""
    try:
        return importlib.import_module(CORE_MODULES[kind])
    except ImportError as exc:
        problem = str(exc)
    # Reported outside the except block, so that the report is not an exception chain.
    if kind == "compiled" and _no_extensions():
        pytest.skip(f"compiled core not built ({problem}); FASTBATCH_NO_EXTENSIONS is set")
    pytest.fail(
        f"{CORE_MODULES[kind]} cannot be imported ({problem}). Build it with "
        "`python setup.py build_ext --inplace`, or set FASTBATCH_NO_EXTENSIONS=1 to "
        "test the pure-Python core only.",
        pytrace=False,
    )


@pytest.fixture(params=list(CORE_MODULES))
def core(request: pytest.FixtureRequest) -> ModuleType:
    """The core module under test: ``fastbatch.core._core`` or ``fastbatch.core._core_py``."""
    return load_core(request.param)


@pytest.fixture
def compiled_core() -> ModuleType:
    """The compiled core, for tests that compare it with the pure-Python oracle."""
    return load_core("compiled")


@pytest.fixture
def py_core() -> ModuleType:
    """The pure-Python core (the oracle)."""
    return load_core("python")


class Worker:
    """A call running in its own daemon thread; its outcome is kept, never raised there."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.entered = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._call = (fn, args, kwargs)
        self.thread = threading.Thread(
            target=self._run, name=f"test-{getattr(fn, '__name__', 'call')}", daemon=True
        )

    def _run(self) -> None:
        fn, args, kwargs = self._call
        self.entered.set()
        try:
            self.result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            self.error = exc

    def wait_blocked(self) -> None:
        """Wait until the thread is (almost certainly) inside its blocking call.

        There is no portable way to observe that a thread sits in a C-level wait, so this
        is the one place the tests sleep: the thread has announced that it is about to
        make the call, and 50 ms lets it get there. Tests never rely on the sleep for
        ordering between threads, only to make the blocking path the likely one.
        """
        assert self.entered.wait(5.0), "the thread did not start"
        time.sleep(0.05)

    def join(self, timeout: float = 5.0) -> bool:
        """Join; True when the thread has finished."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def outcome(self, timeout: float = 5.0) -> Any:
        """The call's return value once it finished (raises what the call raised)."""
        assert self.join(timeout), "the call did not return in time"
        if self.error is not None:
            raise self.error
        return self.result


class Threads:
    """Starts worker threads for a test and cleans up after it."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.to_close: list[Any] = []

    def start(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Worker:
        worker = Worker(fn, args, kwargs)
        self.workers.append(worker)
        worker.thread.start()
        return worker

    def closing(self, queue: Any) -> Any:
        """Close ``queue`` at teardown, so that a failed test leaves no thread blocked."""
        self.to_close.append(queue)
        return queue

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.001)


@pytest.fixture
def threads() -> Iterator[Threads]:
    """Run calls in threads; at teardown close registered queues and join every thread."""
    runner = Threads()
    yield runner
    for queue in runner.to_close:
        queue.close()
    stuck = [w.thread.name for w in runner.workers if not w.join(5.0)]
    if stuck:
        pytest.fail(f"threads still running after the test: {stuck}")
