"""Fixtures of the reliability suite; every test runs once per core.

As in ``tests/processor``, the autouse ``backend`` fixture patches the ``core`` under test
(compiled or pure Python) into ``fastbatch.core._backend``; tests that run a child interpreter
pass the same choice on through ``FASTBATCH_NO_EXTENSIONS`` (the ``core_name`` fixture).

Tiers: the fast tier is what ``python -m pytest`` runs; ``FASTBATCH_EXTENDED=1`` makes the
seeded loops run many more seeds and cycles (see ``fb_reliability.EXTENDED``). The figures
the issue asks for (runs, futures, lost, misrouted, threads left) are printed at the end
of the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
import fb_fixtures
from fb_fixtures import Gate, processor_maker, stop_all, use_core
from fb_reliability import EXTENDED, FIGURES


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    return use_core(core, monkeypatch)


@pytest.fixture
def core_name(backend: Any) -> str:
    """``"compiled"`` or ``"python"``: the core a child interpreter must use."""
    return fb_fixtures.core_name(backend)


# Health monitor off unless asked; no retry delay; a batch is released at once.
DEFAULTS = {"enable_health_monitoring": False, "retry_delay": 0.0, "batch_timeout": 0.0,
            "min_batch_size": 1}


@pytest.fixture
def make_processor() -> Iterator[Callable[..., fastbatch.BatchProcessor]]:
    """Build processors; stop them all at teardown.

    Teardown also checks that no ``fastbatch-`` thread is left once the processors are
    stopped (an abandoned worker gets a few seconds to finish its batch) and adds what
    is left to the session's "threads left" figure.
    """
    made: list[Any] = []
    yield processor_maker(made, DEFAULTS)
    leftover = stop_all(made, join_timeout=10)
    FIGURES["threads_left"] += len(leftover)
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate(lambda b: b * 2 + 1)  # the suite's oracle
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
