"""Run every workload for the three contenders in one run and print the table.

    python benchmarks/bench.py [--quick] [--repeat K] [--json out.json] [--plot out.png]
                               [--only 1,4] [--contenders compiled,stdlib]
    python -m fastbatch bench ...      # the same, from a source checkout

Contenders: fastbatch with the compiled core, fastbatch with the pure-Python twin, and the
plain-stdlib batcher (``stdlib_batcher.py``). Each repeat runs every workload once per
contender, contenders interleaved (their order rotates from one repeat to the next); the
table shows medians over the repeats, the ratios, and whether each performance target
is met. ``--quick`` uses small sizes (a smoke test, well under a minute); its numbers are
noisier than the full run's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import workloads as wl  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: workload number → (title, function, full sizes, quick sizes)
WORKLOADS: dict[int, tuple[str, Callable[..., dict[str, Any]], dict[str, Any], dict[str, Any]]] = {
    1: ("predict, 1 producer", wl.predict_one_producer, {"n": 50_000}, {"n": 10_000}),
    2: ("enqueue, no futures", wl.enqueue_no_futures, {"n": 50_000}, {"n": 10_000}),
    3: ("predict, 4 producers", wl.predict_four_producers, {"n": 50_000}, {"n": 10_000}),
    4: ("light load 2000/s", wl.light_load_latency, {"duration": 3.0}, {"duration": 1.0}),
    5: ("images 3x224x224 f32", wl.image_items, {"n": 2_000}, {"n": 300}),
    6: ("get_stats, full window", wl.stats_on_full_window,
        {"calls": 200, "drain": 100_000}, {"calls": 50, "drain": 60_000}),
}


@dataclass(frozen=True)
class Row:
    """One line of the table: a metric of a workload."""

    workload: int
    label: str
    key: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:,.0f}"


ROWS = [
    Row(1, "throughput", "items_per_s", "items/s", True),
    Row(2, "throughput", "items_per_s", "items/s", True),
    Row(3, "throughput", "items_per_s", "items/s", True),
    Row(4, "latency p50", "p50_ms", "ms", False, "{:.2f}"),
    Row(4, "latency p99", "p99_ms", "ms", False, "{:.2f}"),
    Row(4, "p99 bound", "bound_ms", "ms", False, "{:.2f}"),
    Row(5, "throughput", "items_per_s", "items/s", True),
    Row(5, "bandwidth of items", "gbps", "GB/s", True, "{:.2f}"),
    Row(5, "single-thread copy", "copy_gbps", "GB/s", True, "{:.2f}"),
    Row(5, "items / copy bandwidth", "fraction_of_copy", "", True, "{:.2f}"),
    Row(6, "get_stats p50", "stats_us_p50", "µs", False, "{:,.1f}"),
    Row(6, "worker drain", "drain_items_per_s", "items/s", True),
    Row(6, "drain, get_stats poller / alone", "drain_ratio", "", True, "{:.2f}"),
    Row(6, "drain, busy-Python control / alone", "drain_ratio_control", "", True, "{:.2f}"),
]


# -- environment -----------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() if out.returncode == 0 else "?"


def environment() -> dict[str, Any]:
    """What was measured, on what."""
    src = os.path.dirname(wl._backend.__file__)  # the compiled core sits beside it
    stale = False
    try:
        pyx = os.path.getmtime(os.path.join(src, "_core.pyx"))
        sos = [f for f in os.listdir(src) if f.startswith("_core.") and f.endswith((".so", ".pyd"))]
        stale = bool(sos) and all(os.path.getmtime(os.path.join(src, f)) < pyx for f in sos)
    except OSError:
        pass
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "fastbatch": getattr(wl.fastbatch, "__version__", "?"),
        "fastbatch_path": os.path.dirname(wl.fastbatch.__file__),
        "default_core": wl._backend.NAME,
        "compiled_core_stale": stale,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "src_uncommitted_changes": bool(dirty and dirty != "?"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


# -- running ----------------------------------------------------------------------------


def run(workload_ids: list[int], contenders: list[wl.Contender], repeat: int, quick: bool,
        log: Callable[[str], None]) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Raw results: workload → contender name → one dict per repeat."""
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        w: {c.name: [] for c in contenders} for w in workload_ids}
    for rep in range(repeat):
        k = rep % len(contenders)
        order = contenders[k:] + contenders[:k]
        for w in workload_ids:
            title, func, full, small = WORKLOADS[w]
            for c in order:
                t0 = time.perf_counter()
                results[w][c.name].append(func(c, **(small if quick else full)))
                log(f"  repeat {rep + 1}/{repeat}  ({w}) {title:<24} {c.name:<9} "
                    f"{time.perf_counter() - t0:6.2f} s")
    return results


def medians(results: dict[int, dict[str, list[dict[str, Any]]]]) -> dict[int, dict[str, dict[str, Any]]]:
    """Median of every numeric metric over the repeats."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for w, by_contender in results.items():
        out[w] = {}
        for name, runs in by_contender.items():
            merged: dict[str, Any] = {}
            for key in runs[0]:
                values = [r[key] for r in runs]
                if all(isinstance(v, bool) for v in values):
                    merged[key] = sum(values) / len(values) if key != "n/a" else True
                elif all(isinstance(v, (int, float)) for v in values):
                    merged[key] = statistics.median(values)
            out[w][name] = merged
    return out


# -- reporting ---------------------------------------------------------------------------

Runs = dict[int, dict[str, list[dict[str, Any]]]]
Medians = dict[int, dict[str, dict[str, Any]]]


def _ratio(a: float | None, b: float | None, higher_is_better: bool) -> float | None:
    """How many times better ``a`` is than ``b`` (> 1: ``a`` wins)."""
    if a is None or b is None or a <= 0 or b <= 0:
        return None
    return a / b if higher_is_better else b / a


def _value(med: Medians, w: int, name: str, key: str) -> float | None:
    v = med.get(w, {}).get(name, {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def paired(runs: Runs, w: int, a: str, b: str, key: str,
           higher_is_better: bool) -> tuple[float, float, float] | None:
    """``a`` over ``b`` repeat by repeat: (median, min, max) of the per-repeat ratios.

    The two runs of one repeat ran back to back, so their ratio cancels the slow drift
    of a shared machine better than a ratio of medians does.
    """
    ra, rb = runs.get(w, {}).get(a), runs.get(w, {}).get(b)
    if not ra or not rb or len(ra) != len(rb):
        return None
    ratios = [_ratio(x.get(key), y.get(key), higher_is_better) for x, y in zip(ra, rb)]
    if any(r is None for r in ratios):
        return None
    vals = [float(r) for r in ratios if r is not None]
    return statistics.median(vals), min(vals), max(vals)


def table(runs: Runs, med: Medians, names: list[str]) -> str:
    """The medians and the paired ratios as a Markdown table."""
    head = ["workload", "metric", *names]
    pairs = [(a, b) for a, b in (("compiled", "stdlib"), ("python", "stdlib"), ("compiled", "python"))
             if a in names and b in names]
    head += [f"{a} / {b}" for a, b in pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        if row.workload not in med:
            continue
        cells = [f"({row.workload}) {WORKLOADS[row.workload][0]}",
                 f"{row.label} ({row.unit})" if row.unit else row.label]
        for name in names:
            v = _value(med, row.workload, name, row.key)
            cells.append("n/a" if v is None else row.fmt.format(v))
        for a, b in pairs:
            if row.key in ("bound_ms", "copy_gbps", "drain_items_per_s", "drain_ratio_control"):
                cells.append("")  # reference values, not contests
                continue
            r = paired(runs, row.workload, a, b, row.key, row.higher_is_better)
            cells.append("n/a" if r is None else f"{r[0]:.2f}×")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Target:
    text: str
    met: bool | None  # None: could not be evaluated (a contender or workload missing)
    detail: str


def _per_repeat(runs: Runs, w: int, name: str, key: str) -> list[float]:
    return [float(r[key]) for r in runs.get(w, {}).get(name, []) if key in r]


def targets(runs: Runs, med: Medians) -> list[Target]:
    """Each performance target, judged on the median (of paired ratios, for ratios).

    The detail gives the range over the repeats: a target met at the median but not in
    every repeat is within the noise of this machine.
    """
    out: list[Target] = []

    def v(w: int, name: str, key: str) -> float | None:
        return _value(med, w, name, key)

    def at_least(text: str, stat: tuple[float, float, float] | None, goal: float) -> None:
        if stat is None:
            out.append(Target(text, None, "not measured in this run"))
            return
        value, lo, hi = stat
        gap = "" if value >= goal else f", short by {(1 - value / goal) * 100:.0f} %"
        out.append(Target(text, value >= goal,
                          f"{value:.2f}× (goal ≥ {goal:g}×{gap}; repeats {lo:.2f}–{hi:.2f}×)"))

    def spread(w: int, name: str, key: str) -> tuple[float, float, float] | None:
        vals = _per_repeat(runs, w, name, key)
        return (statistics.median(vals), min(vals), max(vals)) if vals else None

    for w, goal in ((1, 10.0), (2, 15.0), (3, 10.0)):
        at_least(f"({w}) compiled ≥ {goal:g}× stdlib items/s",
                 paired(runs, w, "compiled", "stdlib", "items_per_s", True), goal)
    p99, bound = v(4, "compiled", "p99_ms"), v(4, "compiled", "bound_ms")
    if p99 is None or bound is None:
        out.append(Target("(4) compiled p99 ≤ batch_timeout + batch time + 1 ms", None, "not measured"))
    else:
        over = "" if p99 <= bound else f", over by {p99 - bound:.2f} ms"
        p99s = _per_repeat(runs, 4, "compiled", "p99_ms")
        out.append(Target("(4) compiled p99 ≤ batch_timeout + batch time + 1 ms", p99 <= bound,
                          f"p99 {p99:.2f} ms vs bound {bound:.2f} ms{over}; "
                          f"repeats {min(p99s):.2f}–{max(p99s):.2f} ms"))
    at_least("(5) compiled ≥ 0.9× single-thread copy bandwidth", spread(5, "compiled", "fraction_of_copy"), 0.9)
    at_least("(6) compiled get_stats ≥ 10× faster than the twin's",
             paired(runs, 6, "compiled", "python", "stats_us_p50", False), 10.0)
    at_least("(6) no worker pause: worker drain rate while get_stats runs back to back "
             "≥ 0.9× alone", spread(6, "compiled", "drain_ratio"), 0.9)
    # The twin is the fallback, not a toy: within 2x of the stdlib batcher everywhere.
    worst: tuple[float, str] | None = None
    checks = [(w, "items_per_s", True, f"({w}) items/s") for w in (1, 2, 3, 5)]
    checks.append((4, "p99_ms", False, "(4) p99"))
    for w, key, higher, label in checks:
        r = paired(runs, w, "python", "stdlib", key, higher)
        if r is not None and (worst is None or r[0] < worst[0]):
            worst = (r[0], label)
    if worst is None:
        out.append(Target("twin within 2× of stdlib (≥ 0.5× on every workload)", None, "not measured"))
    else:
        out.append(Target("twin within 2× of stdlib (≥ 0.5× on every workload)", worst[0] >= 0.5,
                          f"worst median: {worst[0]:.2f}× on {worst[1]}"))
    return out


PLOT_MISSING = ("--plot needs matplotlib, which fastbatch does not install by default: "
                "pip install 'fastbatch[plot]' (or pip install 'matplotlib>=3.7,<4')")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test under a minute")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table shows medians (default 3)")
    parser.add_argument("--json", metavar="PATH", help="write environment, raw runs, medians and targets")
    parser.add_argument("--plot", metavar="PATH",
                        help="write a PNG: latency CDF of (4) and items/s of (1)-(3) per contender "
                             "(needs matplotlib: pip install 'fastbatch[plot]')")
    parser.add_argument("--only", metavar="LIST", help="workload numbers, e.g. 1,4 (default: all six)")
    parser.add_argument("--contenders", metavar="LIST", default="compiled,python,stdlib")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    ids = sorted(WORKLOADS) if not args.only else [int(x) for x in args.only.split(",")]
    if any(w not in WORKLOADS for w in ids):
        parser.error(f"--only takes numbers among {sorted(WORKLOADS)}")
    plot = None
    if args.plot:  # before the run: a missing matplotlib should not cost a minute of benchmarks
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
            parser.error(f"--plot: the directory of {args.plot!r} does not exist")
        try:
            import plot  # matplotlib only when --plot is given
        except ImportError as exc:
            if (exc.name or "").partition(".")[0] != "matplotlib":
                raise
            print(f"error: {PLOT_MISSING}", file=sys.stderr)
            return 2
    contenders = wl.contenders(tuple(args.contenders.split(",")))
    names = [c.name for c in contenders]

    env = environment()
    print(f"fastbatch benchmarks ({'quick' if args.quick else 'full'}, {args.repeat} repeat(s), medians)")
    print(f"Python {env['python']}, numpy {env['numpy']}, fastbatch {env['fastbatch']} from "
          f"{env['fastbatch_path']}")
    print(f"cores exercised: {', '.join(names)} (the default core here is {env['default_core']!r}); "
          f"commit {env['commit']}{' + uncommitted changes in src/' if env['src_uncommitted_changes'] else ''}")
    print(f"machine: {env['cpu']}, {env['cpus']} CPUs, {env['platform']}")
    if env["compiled_core_stale"]:
        print("WARNING: the compiled core is older than _core.pyx: run "
              "`python setup.py build_ext --inplace` first", file=sys.stderr)
    t0 = time.perf_counter()
    results = run(ids, contenders, args.repeat, args.quick, lambda s: print(s, file=sys.stderr, flush=True))
    elapsed = time.perf_counter() - t0
    med = medians(results)
    print()
    print(table(results, med, names))
    print("\nValues are medians over the repeats. Ratios are 'times better' (> 1: the first "
          "contender wins; for times and latencies the inverse is shown), taken repeat by "
          "repeat (the two runs of a repeat ran back to back), median over the repeats.")
    print("\nPerformance targets (compiled core unless stated):")
    tgs = targets(results, med)
    for t in tgs:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[t.met]
        print(f"  {mark} {t.text}: {t.detail}")
    print(f"\n(ran in {elapsed:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "quick": args.quick, "repeat": args.repeat,
                       "sizes": {w: WORKLOADS[w][3 if args.quick else 2] for w in ids},
                       "runs": results, "medians": med,
                       "targets": [t.__dict__ for t in tgs], "seconds": elapsed}, f, indent=1)
    if plot is not None:
        plot.plot(results, names, args.plot, env=env, quick=args.quick)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
