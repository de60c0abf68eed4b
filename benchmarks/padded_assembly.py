"""Padded assembly of variable-length samples: compiled core, plain numpy, the twin.

    python benchmarks/padded_assembly.py [--rounds 15] [--seconds 0.1] [--seed 0]

Three contenders build the same ``(data, lengths, mask)`` from the same items:

* ``compiled``: ``fastbatch.core._core.assemble_padded``;
* ``numpy``: the code a user would write — ``np.full((B, L_max, *rest), pad)``, a slice
  assignment per row, ``lengths`` from the items, ``mask = np.arange(L_max) <
  lengths[:, None]``;
* ``python``: the pure-Python twin, ``fastbatch.core._core_py.assemble_padded``.

Cases: (a) 64 int64 token sequences, lengths uniformly random in 8..512, pad 0 (the
performance goal: compiled at least 3x numpy and 3x the twin); (b) the same with pad
-100; (c) 64 samples of ``(L, 384)`` float32, L in 8..512, where copying dominates (no
goal). Every contender's result is checked against the others off the clock.

Each round times every contender once (calls repeated for about ``--seconds``),
contenders interleaved and their order rotating from round to round; the figures are
medians over the rounds, per call. The garbage collector stays on.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if importlib.util.find_spec("fastbatch") is None and os.path.isdir(_SRC):
    sys.path.insert(0, _SRC)  # the working tree, as `PYTHONPATH=src` gives it

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    import fastbatch
    from fastbatch.core import _core, _core_py

GOAL = 3.0
perf_ns = time.perf_counter_ns


def numpy_padded(items: list[np.ndarray], pad_value: Any = 0) -> tuple[np.ndarray, ...]:
    """The obvious numpy code."""
    lengths = np.array([len(a) for a in items], dtype=np.int64)
    longest = int(lengths.max())
    data = np.full((len(items), longest, *items[0].shape[1:]), pad_value, dtype=items[0].dtype)
    for i, a in enumerate(items):
        data[i, : len(a)] = a
    mask = np.arange(longest) < lengths[:, None]
    return data, lengths, mask


def make_cases(seed: int) -> dict[str, tuple[list[np.ndarray], Any]]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 513, size=64)
    tokens = [rng.integers(0, 50_000, size=int(n), dtype=np.int64) for n in lengths]
    features = [rng.random((int(n), 384), dtype=np.float32) for n in lengths]
    return {
        "(a) 64 x int64 tokens, L 8..512, pad 0": (tokens, 0),
        "(b) 64 x int64 tokens, L 8..512, pad -100": (tokens, -100),
        "(c) 64 x (L, 384) float32, L 8..512, pad 0": (features, 0.0),
    }


def _time_call(fn: Callable[[], Any], seconds: float) -> float:
    """ns per call of ``fn`` over about ``seconds`` (the loop count fixed beforehand)."""
    t0 = perf_ns()
    fn()
    once = max(perf_ns() - t0, 1)
    number = max(1, int(seconds * 1e9 / once))
    t0 = perf_ns()
    for _ in range(number):
        fn()
    return (perf_ns() - t0) / number


def run_case(items: list[np.ndarray], pad_value: Any, rounds: int, seconds: float) -> dict[str, float]:
    contenders: dict[str, Callable[[], Any]] = {
        "compiled": lambda: _core.assemble_padded(items, pad_value),
        "numpy": lambda: numpy_padded(items, pad_value),
        "python": lambda: _core_py.assemble_padded(items, pad_value),
    }
    results = {name: fn() for name, fn in contenders.items()}
    for name, result in results.items():  # the same arrays, byte for byte
        for got, want in zip(result, results["numpy"]):
            if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
                raise AssertionError(f"{name} differs from numpy")
    del results
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(_time_call(contenders[name], seconds))
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.1, help="per contender and round")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, fastbatch from "
          f"{os.path.dirname(fastbatch.__file__)}; {args.rounds} rounds, medians per call")
    print()
    print("| case | compiled µs | numpy µs | python µs | numpy / compiled | python / compiled |")
    print("|---|---|---|---|---|---|")
    verdicts = []
    for label, (items, pad_value) in make_cases(args.seed).items():
        t = run_case(items, pad_value, args.rounds, args.seconds)
        vs_numpy, vs_twin = t["numpy"] / t["compiled"], t["python"] / t["compiled"]
        print(f"| {label} | {t['compiled'] / 1e3:,.1f} | {t['numpy'] / 1e3:,.1f} | "
              f"{t['python'] / 1e3:,.1f} | {vs_numpy:.2f}x | {vs_twin:.2f}x |")
        if label.startswith("(a)"):
            verdicts = [("compiled vs numpy", vs_numpy), ("compiled vs python", vs_twin)]
    print()
    for what, ratio in verdicts:
        mark = "MET   " if ratio >= GOAL else "MISSED"
        print(f"{mark} case (a), {what}: {ratio:.2f}x (goal {GOAL:.0f}x, margin {ratio / GOAL:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
