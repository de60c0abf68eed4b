"""Every processor test runs once per core: the ``core`` fixture is patched into the backend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
from fastbatch import _backend


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("RequestQueue", "BatchAssembler", "StatsWindow", "monotonic_ns"):
        monkeypatch.setattr(_backend, name, getattr(core, name))
    monkeypatch.setattr(_backend, "NAME", "compiled" if core.__name__.endswith("._core") else "python")
    return core


@pytest.fixture
def make_processor() -> Iterator[Callable[..., fastbatch.BatchProcessor]]:
    """Build processors (health monitor off unless asked) and stop them all at teardown."""
    made: list[fastbatch.BatchProcessor] = []

    def make(func: Callable[[Any], Any] | None = None, **fields: Any) -> fastbatch.BatchProcessor:
        fields.setdefault("enable_health_monitoring", False)
        fields.setdefault("retry_delay", 0.0)
        fields.setdefault("batch_timeout", 0.005)
        fields.setdefault("min_batch_size", 1)
        fields.setdefault("initial_batch_size", min(fields.get("max_batch_size", 200), 100))
        processor = fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(**fields))
        made.append(processor)
        if func is not None:
            processor.start(func)
        return processor

    yield make
    for processor in made:
        processor.stop(timeout=5)
    for thread in threading.enumerate():
        if thread.name.startswith("fastbatch-"):
            thread.join(5)  # an abandoned worker finishing its batch
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("fastbatch-")]
    assert not leftover, f"threads left running: {leftover}"


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


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # a failed test must not leave the worker held
