"""The selector ``fastbatch.core._backend`` and the API parity of the two cores.

The selector acts at import time, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastbatch

SRC = str(Path(fastbatch.__file__).resolve().parent.parent)

PROBE = """
import json, sys, warnings
if {block}:
    sys.modules["fastbatch.core._core"] = None  # makes the import fail, as a missing build does
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from fastbatch.core import _backend
print(json.dumps({{
    "name": _backend.NAME,
    "modules": sorted({{getattr(_backend, n).__module__ for n in
                        ("RequestQueue", "BatchAssembler", "StatsWindow")}}),
    "clock_works": isinstance(_backend.monotonic_ns(), int),
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}}))
"""


def select(env_value: str | None, *, block_compiled: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FASTBATCH_NO_EXTENSIONS"}
    if env_value is not None:
        env["FASTBATCH_NO_EXTENSIONS"] = env_value
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(block=block_compiled)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fastbatch_warnings(result: dict) -> list:
    return [w for w in result["warnings"] if "compiled core" in w[1]]


@pytest.mark.parametrize("value", ["1", "yes"])
def test_env_var_forces_the_pure_python_core(value):
    result = select(value, block_compiled=False)
    assert result["name"] == "python"
    assert result["modules"] == ["fastbatch.core._core_py"]
    assert result["clock_works"]
    assert _fastbatch_warnings(result) == [], "a deliberate choice must not warn"


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_compiled_core_falls_back_with_a_runtime_warning(value):
    result = select(value, block_compiled=True)
    assert result["name"] == "python"
    assert result["modules"] == ["fastbatch.core._core_py"]
    assert [w[0] for w in _fastbatch_warnings(result)] == ["RuntimeWarning"]
    assert "pure-Python" in _fastbatch_warnings(result)[0][1]


@pytest.mark.parametrize("value", [None, "", "0"])
def test_compiled_core_is_used_when_available(compiled_core, value):
    result = select(value, block_compiled=False)
    assert result["name"] == "compiled"
    assert result["modules"] == ["fastbatch.core._core"]
    assert _fastbatch_warnings(result) == []


def test_cores_expose_the_same_api(compiled_core, py_core):
    assert hasattr(compiled_core, "monotonic_ns") and hasattr(py_core, "monotonic_ns")
    for name in ("RequestQueue", "BatchAssembler", "StatsWindow"):
        compiled_api = {n for n in dir(getattr(compiled_core, name)) if not n.startswith("_")}
        python_api = {n for n in dir(getattr(py_core, name)) if not n.startswith("_")}
        assert compiled_api == python_api, name
    for name in ("RequestQueue", "StatsWindow"):
        assert hasattr(getattr(compiled_core, name), "__len__")
        assert hasattr(getattr(py_core, name), "__len__")
