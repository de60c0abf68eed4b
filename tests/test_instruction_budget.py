"""Extended tier: the hot path's instructions per item stay within the budget in the repository.

Runs ``benchmarks/instructions.py`` (callgrind counts for one producer's predictions and
for images, see its docstring): fails when a workload costs more than 10 % over
``benchmarks/instruction_budget.json``. Skipped without valgrind, outside a source
checkout, or with a budget measured on other Python/numpy versions (the script says so).
A few minutes: every count runs a child interpreter under callgrind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fb_fixtures import EXTENDED

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "instructions.py"


@pytest.mark.skipif(not EXTENDED, reason="extended tier only (FASTBATCH_EXTENDED=1): counts instructions "
                                         "under callgrind, a few minutes")
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.skipif(not SCRIPT.is_file(), reason="needs the source checkout's benchmarks/")
@pytest.mark.timeout(1800)  # about a minute on two cores; callgrind is ~50x slower than the CPU
def test_the_hot_path_stays_within_its_instruction_budget(compiled_core):
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=1500,
                          cwd=ROOT)
    report = done.stdout + done.stderr[-3000:]
    if done.returncode == 3:
        pytest.skip(report.strip())  # the budget is from another Python or numpy
    assert done.returncode == 0, report
    print(report)
