"""The command line: ``python -m fastbatch info | demo | bench``."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fastbatch
from fastbatch.cli import _cli
from fastbatch.cli._progress import ProgressBar, wanted

CHECKOUT = Path(__file__).resolve().parents[1]
HAS_BENCHMARKS = (CHECKOUT / "benchmarks" / "bench.py").is_file()
TABLE_ROWS = ["throughput (items/s)", "latency p50 (ms)", "latency p95 (ms)", "latency p99 (ms)",
              "batch size avg", "batch size min", "batch size max", "speed-up (throughput)"]


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child ``python -m fastbatch``: it imports this same fastbatch."""
    package_parent = str(Path(fastbatch.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _fastbatch(*args: str, cwd: Path | None = None, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastbatch", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=_env())


def _row(stdout: str, label: str) -> list[str]:
    """The cells after ``label`` on its table line."""
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith(label))
    return line.strip()[len(label):].split()


# -- info ------------------------------------------------------------------------------


def test_info_names_version_core_and_python():
    out = _fastbatch("info")
    assert out.returncode == 0, out.stderr
    assert re.match(rf"fastbatch {re.escape(fastbatch.__version__)}, core: (compiled|python), Python 3\.",
                    out.stdout), out.stdout
    assert out.stderr == ""


def test_no_command_prints_the_help_and_succeeds():
    out = _fastbatch()
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: fastbatch") and "demo" in out.stdout and "info" in out.stdout
    assert out.stderr == ""


def test_version():
    out = _fastbatch("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"fastbatch {fastbatch.__version__} (core: ")


@pytest.mark.parametrize("args", [("--help",), ("demo", "--help"), ("info", "--help")])
def test_help_is_plain_text_with_a_description(args):
    out = _fastbatch(*args)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "``" not in text and ":class:" not in text and ":func:" not in text, text
    body = text.split("\n\n", 1)[1]  # past the usage line: a description, then the options
    assert not body.lstrip().startswith(("options:", "positional arguments:")), text


def test_bench_is_offered_only_where_the_harness_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cli, "_PACKAGE_DIR", tmp_path / "venv" / "site-packages" / "fastbatch")
    with pytest.raises(SystemExit):
        _cli.main(["--help"])
    installed = capsys.readouterr().out
    assert "{demo,info}" in installed and "{demo,info,bench}" not in installed, installed
    monkeypatch.chdir(CHECKOUT)
    if HAS_BENCHMARKS:
        with pytest.raises(SystemExit):
            _cli.main(["--help"])
        assert "{demo,info,bench}" in capsys.readouterr().out


# -- demo ------------------------------------------------------------------------------


def test_demo_prints_the_summary_table_and_nothing_on_stderr():
    out = _fastbatch("demo", "--items", "300", "--producers", "2")
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # not a terminal: no progress bar
    assert "1000/1000 results correct" in out.stdout  # the seed's example is still there
    header = next(ln for ln in out.stdout.splitlines() if "unbatched" in ln and "batched" in ln.split())
    assert header.split() == ["unbatched", "batched"]
    for label in TABLE_ROWS:
        cells = _row(out.stdout, label)
        assert len(cells) == 2, (label, cells)
    rates = [float(c.replace(",", "")) for c in _row(out.stdout, "throughput (items/s)")]
    assert all(r > 0 for r in rates), out.stdout
    p50, p95, p99 = (float(_row(out.stdout, f"latency p{q} (ms)")[1]) for q in (50, 95, 99))
    assert 0 < p50 <= p95 <= p99, out.stdout
    lo, avg, hi = (float(_row(out.stdout, f"batch size {k}")[1]) for k in ("min", "avg", "max"))
    assert 1 <= lo <= avg <= hi <= 256, out.stdout  # 256: the demo's max_batch_size
    assert _row(out.stdout, "batch size avg")[0] == "1.0"
    speedup = _row(out.stdout, "speed-up (throughput)")[1]
    # Printed with one decimal, from unrounded rates.
    assert speedup.endswith("x") and float(speedup[:-1]) == pytest.approx(rates[1] / rates[0], abs=0.06), out.stdout
    assert "speed-up from batching" in out.stdout


def test_demo_progress_forced_on_draws_on_stderr():
    out = subprocess.run([sys.executable, "-m", "fastbatch", "demo", "--items", "300", "--producers", "2",
                          "--progress"], check=False, capture_output=True, timeout=50, env=_env())
    stdout, stderr = out.stdout.decode(), out.stderr.decode()  # bytes: keep the carriage returns
    assert out.returncode == 0, stderr
    for label in ("[1/3] example", "[2/3] unbatched", "[3/3] batched"):
        assert label in stderr, stderr
    assert "/300" in stderr and "/1,000" in stderr
    assert stderr.startswith("\r") and stderr.endswith("\r") and "\n" not in stderr  # redrawn in place, erased
    assert "\r" not in stdout and "speed-up from batching" in stdout


def test_demo_no_progress_and_bad_arguments():
    out = _fastbatch("demo", "--items", "300", "--producers", "1", "--no-progress")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    bad = _fastbatch("demo", "--items", "0")
    assert bad.returncode == 2 and "--items: must be >= 1" in bad.stderr


@pytest.mark.skipif(sys.platform == "win32" or not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_demo_draws_the_bar_by_default_on_a_terminal():
    master, slave = os.openpty()
    received: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=drain, name="test-pty-reader", daemon=True)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "fastbatch", "demo", "--items", "300", "--producers", "2"],
                                stdout=subprocess.PIPE, stderr=slave, text=True, env=_env(TERM="xterm"))
    finally:
        os.close(slave)
    reader.start()
    try:
        stdout, _ = proc.communicate(timeout=50)
    finally:
        reader.join(10)
        os.close(master)
    assert proc.returncode == 0
    assert "speed-up from batching" in stdout
    assert "[3/3] batched" in b"".join(received).decode(errors="replace")


def test_progress_bar_alone():
    stream = io.StringIO()
    with ProgressBar("work", 10, enabled=True, stream=stream, interval=0.01) as bar:
        bar.advance(4)
        assert "4/10" in bar.line()
    text = stream.getvalue()
    assert text.startswith("\rwork [") and text.endswith("\r")
    quiet = io.StringIO()
    with ProgressBar("work", 10, enabled=False, stream=quiet) as bar:
        bar.advance(10)
    assert quiet.getvalue() == "" and bar.done == 10


def test_progress_wanted_follows_the_terminal_unless_forced(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert wanted(Tty(), None) and not wanted(io.StringIO(), None)
    assert wanted(io.StringIO(), True) and not wanted(Tty(), False)
    monkeypatch.setenv("TERM", "dumb")
    assert not wanted(Tty(), None)


# -- bench -----------------------------------------------------------------------------


def test_bench_outside_a_checkout_exits_2_with_a_clear_message(tmp_path, monkeypatch, capsys):
    # As installed from a wheel: neither the current directory nor the package's parents
    # hold benchmarks/.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cli, "_PACKAGE_DIR", tmp_path / "venv" / "site-packages" / "fastbatch")
    assert _cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/bench.py not found" in err and "source checkout" in err


def test_find_bench_from_the_current_directory_or_the_package(tmp_path):
    bench = tmp_path / "checkout" / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "bench.py").write_text("")
    assert _cli.find_bench(cwd=tmp_path, package_dir=tmp_path / "elsewhere" / "fastbatch") is None
    (bench / "workloads.py").write_text("")
    nowhere = tmp_path / "elsewhere" / "fastbatch"
    found = bench / "bench.py"
    assert _cli.find_bench(cwd=tmp_path / "checkout", package_dir=nowhere) == found.resolve()
    assert _cli.find_bench(cwd=bench, package_dir=nowhere) == found.resolve()  # from a subdirectory
    assert _cli.find_bench(cwd=tmp_path, package_dir=tmp_path / "checkout" / "src" / "fastbatch") == found.resolve()


@pytest.mark.skipif(not HAS_BENCHMARKS, reason="needs the source checkout's benchmarks/")
def test_bench_plot_without_matplotlib_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastbatch.cli._cli import main\n"
            f"sys.exit(main(['bench', '--quick', '--only', '1', '--plot', {str(tmp_path / 'x.png')!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=50,
                         cwd=CHECKOUT, env=_env())
    assert out.returncode == 2, out.stdout + out.stderr
    assert "pip install 'fastbatch[plot]'" in out.stderr
    assert not (tmp_path / "x.png").exists()
    assert "items/s" not in out.stdout  # refused before running anything


@pytest.mark.skipif(not HAS_BENCHMARKS, reason="needs the source checkout's benchmarks/")
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib is not installed (pip install 'fastbatch[plot]')")
def test_bench_quick_plot_writes_a_png(tmp_path):
    png = tmp_path / "bench.png"
    # One repeat of the workloads the figure shows: a few seconds.
    out = _fastbatch("bench", "--quick", "--repeat", "1", "--only", "1,2,3,4", "--plot", str(png),
                     cwd=CHECKOUT, timeout=55)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| (4) light load 2000/s | latency p99 (ms) |" in out.stdout
    assert f"plot written to {png}" in out.stdout
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
