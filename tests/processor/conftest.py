"""Every processor test runs once per core: the ``core`` fixture is patched into the backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import fastbatch
from fb_fixtures import Gate, processor_maker, stop_all, use_core

# Health monitor off unless asked; no retry delay; batches linger 5 ms.
DEFAULTS = {"enable_health_monitoring": False, "retry_delay": 0.0, "batch_timeout": 0.005,
            "min_batch_size": 1}


@pytest.fixture(autouse=True)
def backend(core: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    return use_core(core, monkeypatch)


@pytest.fixture
def make_processor() -> Iterator[Callable[..., fastbatch.BatchProcessor]]:
    """Build processors and stop them all at teardown; no ``fastbatch-`` thread may remain."""
    made: list[Any] = []
    yield processor_maker(made, DEFAULTS)
    leftover = stop_all(made)
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # a failed test must not leave the worker held
