"""Instructions per item on the hot path, counted by callgrind: a guard that needs no quiet machine.

    python benchmarks/instructions.py             # count, compare with the budget (exit 1 over it)
    python benchmarks/instructions.py --update    # count and write the counts as the new budget

Wall-clock ratios need a quiet machine and several interleaved rounds; an instruction
count does not. Each workload runs in a child interpreter under ``valgrind
--tool=callgrind``, twice, with ``n1`` and ``n2`` items; instructions per item are the
difference over ``n2 - n1``, so the interpreter's start, the imports and the processor's
start and stop cancel out. The items are queued while the processor is paused and then
released at once, so every batch is full whatever the timing: the count is the same from
one run to the next within about 3 % (thread hand-offs still vary). It counts every thread: the producer
(checking, stamping and queueing each item, making its future), the worker (taking,
assembling, calling, splitting, resolving) and the result's collection — and building
the rows, a constant of the workload.

Workloads (those of ``bench.py``): ``predict`` — ``enqueue_predict`` of ``(10,)`` float32
rows in batches of 200, the function doubling the batch (w1); ``enqueue`` — the same rows
with ``enqueue``, no futures (w2); ``images`` — 3×224×224 float32 images in batches of 32
(w5), where the copies dominate.

The budget (``instruction_budget.json``) holds the counts of the last ``--update`` with
the Python and numpy versions they were measured with; the check fails when a count
exceeds its budget by more than 10 %, and says so when it is more than 10 % under (time
to ``--update``). Counts depend on the interpreter and numpy builds: a budget from other
versions is not compared (exit status 3). The extended test tier runs the check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET = os.path.join(HERE, "instruction_budget.json")
TOLERANCE = 0.10
NOT_COMPARED = 3  # exit status: the budget is from other versions

#: workload → (items n1, items n2, batch size, sample shape)
WORKLOADS = {
    "predict": (2_000, 6_000, 200, (10,)),
    "enqueue": (2_000, 6_000, 200, (10,)),
    "images": (64, 192, 32, (3, 224, 224)),
}


def child(workload: str, n: int) -> None:
    """The measured program: queue ``n`` items while paused, release, collect every result."""
    import numpy as np

    from compiled_fastbatch import fastbatch

    _, _, batch, shape = WORKLOADS[workload]
    batch = int(os.environ.get("FASTBATCH_BENCH_BATCH", batch))  # attribution.py's batches of one
    rows = list(np.ones((n, *shape), dtype=np.float32))
    config = fastbatch.BatchProcessorConfig(
        max_batch_size=batch, initial_batch_size=batch, min_batch_size=1, batch_timeout=0.0, max_queue_size=0,
        enable_adaptive_batching=False, enable_health_monitoring=False)
    processor = fastbatch.BatchProcessor(config)
    seen = [0]

    def double(batch: np.ndarray) -> np.ndarray:
        seen[0] += len(batch)
        return batch * 2

    processor.start(double)
    processor.pause()
    if workload == "enqueue":
        for row in rows:
            processor.enqueue(row)
        processor.resume()
        processor.stop()  # drains the queue: every row has been through the function
        total = 2.0 * seen[0]
    else:
        futures = [processor.enqueue_predict(row) for row in rows]
        processor.resume()
        total = sum(float(f.result(timeout=600).flat[0]) for f in futures)
        processor.stop()
    if total != 2.0 * n:
        raise SystemExit(f"wrong results: {total} != {2.0 * n}")


def count(workload: str, n: int) -> int:
    """Instructions of one child run (every thread), from callgrind's summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               sys.executable, os.path.abspath(__file__), "--child", workload, str(n)]
        env = dict(os.environ, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"the {workload} child failed:\n{done.stderr[-3000:]}")
        match = re.search(r"Collected\s*:\s*([\d,]+)", done.stderr)
        if match is None:
            raise SystemExit(f"no instruction count in callgrind's output:\n{done.stderr[-2000:]}")
        return int(match.group(1).replace(",", ""))


def measure() -> dict[str, float]:
    out = {}
    for name, (n1, n2, _, _) in WORKLOADS.items():
        a, b = count(name, n1), count(name, n2)
        out[name] = (b - a) / (n2 - n1)
        print(f"{name}: {out[name]:,.0f} instructions per item", flush=True)
    return out


def versions() -> dict[str, str]:
    import numpy as np

    return {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="write the counts as the new budget")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: the instruction counts need callgrind", file=sys.stderr)
        return 2
    counts = measure()
    env = versions()
    if args.update:
        with open(BUDGET, "w") as f:
            json.dump({"per_item": {k: round(v) for k, v in counts.items()}, **env,
                       "tolerance": TOLERANCE}, f, indent=1)
            f.write("\n")
        print(f"budget written to {BUDGET}")
        return 0
    with open(BUDGET) as f:
        budget = json.load(f)
    if any(budget.get(k) != v for k, v in env.items()):
        print(f"the budget was measured with {budget.get('python')}/numpy {budget.get('numpy')}, here "
              f"{env['python']}/numpy {env['numpy']}: not compared (refresh it with --update)")
        return NOT_COMPARED
    failed = False
    for name, value in counts.items():
        limit = budget["per_item"].get(name)
        if limit is None:
            print(f"{name}: {value:,.0f} per item, no budget yet (write one with --update)")
            continue
        ratio = value / limit
        verdict = "ok"
        if ratio > 1 + TOLERANCE:
            verdict, failed = f"OVER BUDGET by {(ratio - 1) * 100:.0f} %", True
        elif ratio < 1 - TOLERANCE:
            verdict = f"{(1 - ratio) * 100:.0f} % under budget: refresh it with --update"
        print(f"{name}: {value:,.0f} per item, budget {limit:,} ({ratio:.2f}×): {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
