"""Ecosystem tests (asyncio, decorator, metrics) run once per core, as the processor tests do.

The ``core`` fixture (tests/conftest.py) is patched into the backend before any processor
is made; every processor or batched function a test makes is stopped at teardown, and
no ``fastbatch-`` thread may outlive the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
from fb_fixtures import Gate, processor_maker, stop_all, use_core

# Small and quick: tests hold batches with a Gate, never with timing.
FAST = {"enable_health_monitoring": False, "retry_delay": 0.0, "batch_timeout": 0.005, "min_batch_size": 1}


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    return use_core(core, monkeypatch)


class _Made:
    def __init__(self) -> None:
        self.stoppables: list[Any] = []

    def teardown(self) -> None:
        leftover = stop_all(self.stoppables)
        assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def made() -> Iterator[_Made]:
    m = _Made()
    yield m
    m.teardown()


@pytest.fixture
def make_processor(made: _Made) -> Callable[..., fastbatch.BatchProcessor]:
    """Build (and start, given a function) processors with quick settings."""
    return processor_maker(made.stoppables, FAST)


@pytest.fixture
def make_batched(made: _Made) -> Callable[..., Any]:
    """``fastbatch.batch(**fields)(func)`` with quick settings, stopped at teardown."""

    def make(func: Callable[[Any], Any], **fields: Any) -> Any:
        fn = fastbatch.batch(**{**FAST, **fields})(func)
        made.stoppables.append(fn)
        return fn

    return make


@pytest.fixture
def gate(made: _Made) -> Iterator[Gate]:
    # Depends on `made` so that it is torn down first: release, then stop.
    g = Gate()
    yield g
    g.release.set()  # a failed test must not leave the worker held
