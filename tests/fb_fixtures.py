"""Helpers shared by the processor, reliability and ecosystem conftests.

Each suite keeps its own fixtures (their defaults differ on purpose: the reliability
suite releases batches at once, the others linger 5 ms) but builds them from these.

Tiers: ``python -m pytest`` is the fast tier; ``FASTBATCH_EXTENDED=1`` is the extended
tier, where stress loops run many more rounds (``stress_rounds``) and the sanitizer run is on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import fastbatch
from fastbatch.core import _backend

EXTENDED = os.environ.get("FASTBATCH_EXTENDED", "") not in ("", "0")


def stress_rounds(fast: int, extended: int) -> pytest.MarkDecorator:
    """Parametrize a stress loop's ``rounds``: ``fast`` in the fast tier, ``extended`` else.

    The count shows in the test id (``[compiled-rounds=10]``), so a report says which
    tier ran; the fast tier keeps a few rounds so the path is still exercised.
    """
    n = extended if EXTENDED else fast
    marks = [pytest.mark.slow] if EXTENDED else []
    return pytest.mark.parametrize("rounds", [pytest.param(n, id=f"rounds={n}", marks=marks)])


def use_core(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Patch ``core`` (``fastbatch.core._core`` or ``_core_py``) into the backend for one test."""
    for name in ("RequestQueue", "BatchAssembler", "StatsWindow", "Histogram", "monotonic_ns"):
        monkeypatch.setattr(_backend, name, getattr(core, name))
    monkeypatch.setattr(_backend, "NAME", core_name(core))
    return core


def core_name(core: Any) -> str:
    return "compiled" if core.__name__.endswith("._core") else "python"


def processor_maker(stoppables: list[Any], defaults: dict[str, Any]) -> Callable[..., fastbatch.BatchProcessor]:
    """A ``make(func=None, *, name=None, **fields)`` that remembers what it built."""

    def make(func: Callable[[Any], Any] | None = None, *, name: str | None = None,
             **fields: Any) -> fastbatch.BatchProcessor:
        fields = {**defaults, **fields}
        fields.setdefault("initial_batch_size", min(fields.get("max_batch_size", 200), 100))
        processor = fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(**fields), name=name)
        stoppables.append(processor)
        if func is not None:
            processor.start(func)
        return processor

    return make


def stop_all(stoppables: list[Any], join_timeout: float = 5.0) -> list[str]:
    """Stop everything built; returns the ``fastbatch-`` threads still alive after that."""
    for obj in stoppables:
        obj.stop(timeout=5)
    for thread in threading.enumerate():
        if thread.name.startswith("fastbatch-"):
            thread.join(join_timeout)  # an abandoned worker finishing its batch
    return [t.name for t in threading.enumerate() if t.name.startswith("fastbatch-")]


class Gate:
    """A batch function that records its batches and can be held shut by the test.

    ``entered`` is set each time a batch arrives; ``release`` lets held batches through.
    """

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
        assert self.release.wait(30), "the test never released the gate"
        return self.func(batch)

    def seen(self) -> list[float]:
        """Every first column value the function was given (items are tagged by it)."""
        with self.lock:
            return [float(row[0]) for b in self.batches for row in b]


def poll(condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.0005) -> bool:
    """Wait until ``condition()`` holds (another thread makes it true); False on timeout.

    Used only where no event exists to wait on (e.g. "the worker has recorded its stats").
    """
    pause = threading.Event()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= end:
            return False
        pause.wait(interval)
    return True
