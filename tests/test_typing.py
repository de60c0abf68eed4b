"""The installed package type-checks under mypy --strict, and the stubs match the core."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastbatch

pytest.importorskip("mypy", reason="mypy comes with the test extra: pip install '.[test]'")

PACKAGE = Path(fastbatch.__file__).parent


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPY_CACHE_DIR": os.devnull}
    if PACKAGE.parent.name != "site-packages":
        env["MYPYPATH"] = env["PYTHONPATH"] = str(PACKAGE.parent)  # a source checkout
    # Never from site-packages itself: mypy would take its modules for our own files.
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=env)


def test_mypy_strict_on_the_package(tmp_path):
    out = _run("mypy", "--strict", "--no-incremental", "-p", "fastbatch", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_stubs_match_the_compiled_core(tmp_path):
    pytest.importorskip("fastbatch.core._core")
    out = _run("mypy.stubtest", "fastbatch.core._core", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_generic_parameters_type_enqueue_predict(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import numpy as np\n"
        "from fastbatch import BatchProcessor\n"
        "p = BatchProcessor[np.ndarray, float]()\n"
        "f = p.enqueue_predict(np.zeros(3))\n"
        "reveal_type(f.result())\n"
        "p.enqueue_predict('not an array')\n"
    )
    out = _run("mypy", "--strict", "--no-incremental", str(sample), cwd=tmp_path)
    assert re.search(r'Revealed type is "(builtins\.)?float"', out.stdout), out.stdout
    assert 'incompatible type "str"; expected "ndarray' in out.stdout, out.stdout
