"""Fixtures of the reliability suite; every test runs once per core.

As in ``tests/processor``, the autouse ``backend`` fixture patches the ``core`` under test
(compiled or pure Python) into ``fastbatch._backend``; tests that run a child interpreter
pass the same choice on through ``FASTBATCH_NO_EXTENSIONS`` (the ``core_name`` fixture).

Tiers: the fast tier is what ``python -m pytest`` runs; ``FASTBATCH_EXTENDED=1`` makes the
seeded loops run many more seeds and cycles (see ``fb_reliability.EXTENDED``). The figures
the issue asks for (runs, futures, lost, misrouted, threads left) are printed at the end
of the session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
from fastbatch import _backend

from fb_reliability import EXTENDED, FIGURES, fastbatch_threads, join_threads


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("RequestQueue", "BatchAssembler", "StatsWindow", "monotonic_ns"):
        monkeypatch.setattr(_backend, name, getattr(core, name))
    monkeypatch.setattr(_backend, "NAME", "compiled" if core.__name__.endswith("._core") else "python")
    return core


@pytest.fixture
def core_name(backend: Any) -> str:
    """``"compiled"`` or ``"python"``: the core a child interpreter must use."""
    return "compiled" if backend.__name__.endswith("._core") else "python"


@pytest.fixture
def make_processor() -> Iterator[Callable[..., fastbatch.BatchProcessor]]:
    """Build processors (health monitor off unless asked); stop them all at teardown.

    Teardown also checks that no ``fastbatch-`` thread is left once the processors are
    stopped (an abandoned worker gets a few seconds to finish its batch) and adds what
    is left to the session's "threads left" figure.
    """
    made: list[fastbatch.BatchProcessor] = []

    def make(func: Callable[[Any], Any] | None = None, **fields: Any) -> fastbatch.BatchProcessor:
        fields.setdefault("enable_health_monitoring", False)
        fields.setdefault("retry_delay", 0.0)
        fields.setdefault("batch_timeout", 0.0)
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
    leftover = join_threads(fastbatch_threads(), timeout=10)
    FIGURES["threads_left"] += len(leftover)
    assert not leftover, f"threads left running: {leftover}"


class Gate:
    """A batch function the test can hold shut; records the batches it was given.

    ``entered`` is set each time a batch arrives; ``release`` lets held batches through.
    """

    def __init__(self, func: Callable[[Any], Any] = lambda b: b * 2 + 1) -> None:
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


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # a failed test must not leave the worker held


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    keys = ("runs", "futures", "lost", "late", "misrouted", "wrong_errors", "stats_mismatches",
            "callbacks_not_once", "cancelled_seen", "threads_left", "cycles", "state_machine_examples",
            "state_machine_steps")
    shown = ", ".join(f"{k}={FIGURES[k]}" for k in keys if k in FIGURES)
    tier = "extended" if EXTENDED else "fast"
    terminalreporter.write_sep("-", f"fastbatch reliability figures ({tier} tier)")
    terminalreporter.write_line(shown)
