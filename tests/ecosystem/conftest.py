"""Ecosystem tests (asyncio, decorator, metrics) run once per core, as the processor tests do.

The ``core`` fixture (tests/conftest.py) is patched into the backend before any processor
is made; every processor or batched function a test makes is stopped at teardown, and
no ``fastbatch-`` thread may outlive the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
from fastbatch import _backend

# Small and quick: tests hold batches with a Gate, never with timing.
FAST = {"enable_health_monitoring": False, "retry_delay": 0.0, "batch_timeout": 0.005, "min_batch_size": 1}


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("RequestQueue", "BatchAssembler", "StatsWindow", "monotonic_ns"):
        monkeypatch.setattr(_backend, name, getattr(core, name))
    monkeypatch.setattr(_backend, "NAME", "compiled" if core.__name__.endswith("._core") else "python")
    return core


class _Made:
    def __init__(self) -> None:
        self.stoppables: list[Any] = []

    def teardown(self) -> None:
        for obj in self.stoppables:
            obj.stop(timeout=5)
        for thread in threading.enumerate():
            if thread.name.startswith("fastbatch-"):
                thread.join(5)  # an abandoned worker finishing its batch
        leftover = [t.name for t in threading.enumerate() if t.name.startswith("fastbatch-")]
        assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def made() -> Iterator[_Made]:
    m = _Made()
    yield m
    m.teardown()


@pytest.fixture
def make_processor(made: _Made) -> Callable[..., fastbatch.BatchProcessor]:
    """Build (and start, given a function) processors with quick settings."""

    def make(func: Callable[[Any], Any] | None = None, *, name: str | None = None,
             **fields: Any) -> fastbatch.BatchProcessor:
        fields = {**FAST, **fields}
        fields.setdefault("initial_batch_size", min(fields.get("max_batch_size", 200), 100))
        processor = fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(**fields), name=name)
        made.stoppables.append(processor)
        if func is not None:
            processor.start(func)
        return processor

    return make


@pytest.fixture
def make_batched(made: _Made) -> Callable[..., Any]:
    """``fastbatch.batch(**fields)(func)`` with quick settings, stopped at teardown."""

    def make(func: Callable[[Any], Any], **fields: Any) -> Any:
        fn = fastbatch.batch(**{**FAST, **fields})(func)
        made.stoppables.append(fn)
        return fn

    return make


class Gate:
    """A batch function that records its batches and can be held shut by the test."""

    def __init__(self, func: Callable[[Any], Any] = lambda b: b * 2) -> None:
        self.func = func
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.batches: list[Any] = []
        self.lock = threading.Lock()

    def hold(self) -> None:
        self.release.clear()
        self.entered.clear()

    def __call__(self, batch: Any) -> Any:
        with self.lock:
            self.batches.append(batch.copy() if hasattr(batch, "copy") else list(batch))
        self.entered.set()
        assert self.release.wait(30), "test never released the gate"
        return self.func(batch)

    def seen(self) -> list[float]:
        """Every first column value the function was given (items are tagged by it)."""
        with self.lock:
            return [float(row[0]) for b in self.batches for row in b]


@pytest.fixture
def gate(made: _Made) -> Iterator[Gate]:
    # Depends on `made` so that it is torn down first: release, then stop.
    g = Gate()
    yield g
    g.release.set()  # a failed test must not leave the worker held
