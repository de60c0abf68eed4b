"""The picture of a ``bench.py`` run: ``python benchmarks/bench.py --plot out.png``.

Two panels: the per-item latency CDF of workload (4) for each contender (every item of
every repeat), and the items/s of workloads (1)-(3) as bars grouped by workload (the
median over the repeats, the whiskers spanning the repeats). Needs matplotlib
(``pip install 'fastbatch[plot]'``); only ``bench.py --plot`` imports this module. No
``pyplot``: the figure is drawn on its own Agg canvas, so no GUI backend or global
state is involved.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, PercentFormatter

Runs = dict[int, dict[str, list[dict[str, Any]]]]

#: One colour per contender, the same in both panels.
COLOURS = {"compiled": "#1f77b4", "python": "#ff7f0e", "stdlib": "#2ca02c"}
#: What the legends call each contender.
LABELS = {"compiled": "fastbatch (compiled)", "python": "fastbatch (pure Python)",
          "stdlib": "stdlib batcher"}
THROUGHPUT_WORKLOADS = {1: "(1) predict,\n1 producer", 2: "(2) enqueue,\nno futures",
                        3: "(3) predict,\n4 producers"}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _colour(name: str, k: int) -> str:
    return COLOURS.get(name, f"C{k + 3}")


def _si(value: float, _pos: Any = None) -> str:
    """1,234,567 -> '1.23M'; 75,000 -> '75k'."""
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            text = f"{value / div:.3g}"
            return text + suffix
    return f"{value:.0f}"


def _cdf_panel(ax: Any, runs: Runs, names: list[str]) -> None:
    by_name = runs.get(4, {})
    drawn = 0
    tail, head = 0.0, float("inf")
    bound: list[float] = []
    for k, name in enumerate(names):
        reps = [r for r in by_name.get(name, []) if r.get("latencies_ms")]
        if not reps:
            continue
        lat = np.sort(np.concatenate([np.asarray(r["latencies_ms"], dtype=np.float64) for r in reps]))
        y = np.arange(1, len(lat) + 1) / len(lat)
        # The legend gives the table's numbers: the median over the repeats of each
        # repeat's percentile (the curve itself pools every item of every repeat).
        p50 = statistics.median(float(r["p50_ms"]) for r in reps)
        p99 = statistics.median(float(r["p99_ms"]) for r in reps)
        ax.step(lat, y, where="post", color=_colour(name, k), linewidth=1.6,
                label=f"{_label(name)}: p50 {p50:.2f}, p99 {p99:.2f}")
        tail = max(tail, float(np.percentile(lat, 99.9)))
        head = min(head, float(lat[0]))
        bound.extend(float(r["bound_ms"]) for r in reps if "bound_ms" in r)
        drawn += 1
    ax.set_title("(4) light load, 2,000 items/s: per-item latency CDF")
    ax.set_ylabel("share of items at or below")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.01)
    if not drawn:
        ax.text(0.5, 0.5, "workload (4) was not run", ha="center", va="center", transform=ax.transAxes)
        return
    for level, text in ((0.5, "p50"), (0.99, "p99")):
        ax.axhline(level, color="0.6", linewidth=0.8, linestyle=":")
        ax.text(0.995, level - 0.005, text, color="0.4", fontsize=8, ha="right", va="top",
                transform=ax.get_yaxis_transform())
    if bound:
        b = statistics.median(bound)
        ax.axvline(b, color="#d62728", linewidth=1.0, linestyle="--",
                   label=f"p99 bound (timeout + batch time + 1 ms): {b:.2f}")
        tail = max(tail, b)
    # Log scale: the body (a few ms) and the tail (stray pauses of tens of ms) both show;
    # the last 0.1 % is cut so that one outlier does not squash the rest.
    ax.set_xscale("log")
    ax.set_xlim(head * 0.9, tail * 1.15)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency, enqueue → result (ms, log scale; the axis ends just past p99.9)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def _throughput_panel(ax: Any, runs: Runs, names: list[str]) -> None:
    workloads = [w for w in THROUGHPUT_WORKLOADS if w in runs]
    ax.set_title("(1)–(3) throughput per contender (median of repeats)")
    ax.set_ylabel("items/s")
    ax.yaxis.set_major_formatter(FuncFormatter(_si))
    if not workloads:
        ax.text(0.5, 0.5, "workloads (1)–(3) were not run", ha="center", va="center", transform=ax.transAxes)
        return
    width = 0.8 / max(1, len(names))
    x = np.arange(len(workloads))
    for k, name in enumerate(names):
        med, lo, hi = [], [], []
        for w in workloads:
            vals = [float(r["items_per_s"]) for r in runs[w].get(name, []) if "items_per_s" in r]
            m = statistics.median(vals) if vals else 0.0
            med.append(m)
            lo.append(m - min(vals) if vals else 0.0)
            hi.append(max(vals) - m if vals else 0.0)
        pos = x + (k - (len(names) - 1) / 2) * width
        many = any(len(runs[w].get(name, [])) > 1 for w in workloads)
        bars = ax.bar(pos, med, width * 0.92, color=_colour(name, k), label=_label(name),
                      yerr=[lo, hi] if many else None, capsize=3 if many else 0,
                      error_kw={"elinewidth": 0.8, "ecolor": "0.3"})
        for bar, m, up in zip(bars, med, hi if many else [0.0] * len(med)):
            # Above the whisker, so that the label and the range never overlap.
            ax.annotate(_si(m), (bar.get_x() + bar.get_width() / 2, m + up), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [THROUGHPUT_WORKLOADS[w] for w in workloads])
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def plot(runs: Runs, names: list[str], path: str, env: dict[str, Any] | None = None,
         quick: bool = False) -> None:
    """Draw both panels for the contenders ``names`` and save the figure to ``path``."""
    fig = Figure(figsize=(13, 5.2), dpi=110, layout="constrained")
    cdf_ax, bar_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    _cdf_panel(cdf_ax, runs, names)
    _throughput_panel(bar_ax, runs, names)
    repeats = max((len(v) for by in runs.values() for v in by.values()), default=0)
    title = f"fastbatch benchmarks ({'quick' if quick else 'full'}, {repeats} repeat(s))"
    if env:
        dirty = "+" if env.get("src_uncommitted_changes") else ""
        title += (f" — commit {env.get('commit', '?')}{dirty}, Python {env.get('python', '?')}, "
                  f"numpy {env.get('numpy', '?')}, {env.get('cpus', '?')} CPUs")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path)
