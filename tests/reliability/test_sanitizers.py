"""Extended tier: the compiled core under AddressSanitizer (``sanitizers.sh asan``).

Only with ``FASTBATCH_EXTENDED=1``. The script builds the core with ``-fsanitize=address``
in a temporary copy of the project (the work tree's in-place build is never touched),
then runs, against that build with gcc's ASan runtime preloaded, the core tests and the
stress and fault-injection suites on the compiled core (``-k compiled``), at their
fast-tier sizes (``FASTBATCH_EXTENDED`` is not passed on: under ASan the extended loops
would take hours). The test fails with the tail of the output and of any ASan report if
ASan reports anything or a test fails, and is skipped (never failed) when a tool it needs
is missing: bash, gcc/g++ with libasan (Debian: ``gcc``, ``g++``, ``libasan8``), ``nm``
(``binutils``), and either Cython/numpy/setuptools in this interpreter or pip to build
with them (from the package index).

About a minute on two cores: ~15 s for the build, ~35 s for the 265 tests.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fb_reliability import EXTENDED

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "reliability" / "sanitizers.sh"
SUITES = [
    "tests/core",
    "tests/reliability/test_fault_injection.py",
    "tests/reliability/test_shutdown.py",
    "tests/reliability/test_state_machine.py",
    "tests/reliability/test_callbacks.py",
]
BUDGET = 900  # seconds for the whole script (a clean run: ~50 s); the marker leaves room to report
TAIL = 60  # lines of the script's output in a failure message
REPORT_HEAD = 30  # lines of each ASan report


@pytest.fixture
def backend() -> None:
    """Overrides the suite's per-core ``backend``: one run covers the compiled core."""
    return None


def missing_tool() -> str | None:
    """Why the ASan run cannot happen on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "the sanitizer script uses gcc's runtimes on Linux"
    for tool, package in (("bash", "bash"), ("gcc", "gcc"), ("g++", "g++"), ("nm", "binutils"),
                          ("tar", "tar")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    runtime = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        return "gcc has no AddressSanitizer runtime libasan.so (Debian package libasan8)"
    build_tools = all(importlib.util.find_spec(m) for m in ("Cython", "numpy", "setuptools"))
    if not build_tools and importlib.util.find_spec("pip") is None:
        return "neither Cython/numpy/setuptools nor pip (to build with them) in this interpreter"
    return None


def tail(text: str, n: int = TAIL) -> str:
    return "\n".join(text.splitlines()[-n:])


@pytest.mark.slow
@pytest.mark.timeout(BUDGET + 120)
@pytest.mark.skipif(not EXTENDED, reason="extended tier only (FASTBATCH_EXTENDED=1): builds the "
                    "core with AddressSanitizer and runs the core and stress suites, ~1 min")
def test_core_and_stress_suites_are_clean_under_address_sanitizer(tmp_path: Path) -> None:
    why = missing_tool()
    if why:
        pytest.skip(f"cannot run the ASan build: {why}")
    # pytest's faulthandler_timeout (120 s) would dump every thread's stack midway through
    # this long but healthy wait; the timeout marker and BUDGET bound it instead.
    faulthandler.cancel_dump_traceback_later()
    logs = tmp_path / "logs"
    env = dict(os.environ)
    env.update(PYTHON=sys.executable, OUT=str(logs), TMPDIR=str(tmp_path))
    for name in ("FASTBATCH_EXTENDED", "FASTBATCH_NO_EXTENSIONS", "LD_PRELOAD", "PYTHONPATH"):
        env.pop(name, None)
    start = time.monotonic()
    proc = subprocess.Popen(["bash", str(SCRIPT), "asan", *SUITES, "-k", "compiled"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"sanitizers.sh asan still running after {BUDGET} s; its output ends:\n"
                    f"{tail(out)}", pytrace=False)
    elapsed = time.monotonic() - start
    reports = sorted(logs.glob("asan-report*"))
    # A report's head says what and where (the error line, then the stack).
    report_text = "\n".join(f"--- {p.name}\n" + "\n".join(
        p.read_text(errors="replace").splitlines()[:REPORT_HEAD]) for p in reports[:3])
    if proc.returncode != 0 or reports or "ASan: clean" not in out:
        pytest.fail(f"sanitizers.sh asan exited {proc.returncode} after {elapsed:.0f} s "
                    f"({len(reports)} ASan report(s) in {logs}); output ends:\n{tail(out)}"
                    + (f"\n{report_text}" if report_text else ""), pytrace=False)
    # The run must have used the instrumented copy, not the work tree's build.
    core = [line.split() for line in out.splitlines() if line.strip().startswith("core:")]
    assert core and core[0][1] == "compiled", out[:2000]
    assert not core[0][2].startswith(str(ROOT / "src")), f"the ASan run imported {core[0][2]}"
    print(f"ASan run: clean in {elapsed:.0f} s")
