"""Two or more versions of fastbatch side by side: the workloads of ``bench.py``, interleaved.

    python benchmarks/versions.py 4dd6905 HEAD [--only 1,2,3,4,5] [--repeat 3] [--quick]
    python benchmarks/versions.py 4dd6905 .          # "." is this working tree as it is

Each git revision is exported (``git archive``, nothing in the repository changes) to a
cache directory and its compiled core built in place; ``.`` is the working tree. Every
repeat runs ``bench.py`` once per version, each in its own process with that version's
``src/`` first on the path, the order of the versions rotating from one repeat to the
next; the table gives the medians of the repeats and each version's ratio to the first.
The plain-stdlib batcher runs in every process too, so that each version runs the same
sequence; its figure (from the first version's processes) is the yardstick that says how
fast the machine was during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.path.join(tempfile.gettempdir(), "fastbatch-versions")

# (workload, key, label, higher is better)
METRICS = [(1, "items_per_s", "(1) predict, 1 producer, items/s", True),
           (2, "items_per_s", "(2) enqueue, no futures, items/s", True),
           (3, "items_per_s", "(3) predict, 4 producers, items/s", True),
           (4, "p99_ms", "(4) light load, p99 ms", False),
           (5, "gbps", "(5) images, GB/s", True),
           (6, "stats_us_p50", "(6) get_stats p50, µs", False)]


def checkout(ref: str) -> str:
    """A directory holding ``ref``'s tree with its core built in place."""
    if ref == ".":
        return REPO
    sha = subprocess.run(["git", "rev-parse", "--short=12", ref], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = os.path.join(CACHE, sha)
    if not os.path.isfile(os.path.join(path, ".built")):
        os.makedirs(path, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
        try:
            import Cython  # noqa: F401 - building a version's core needs it here
        except ImportError:
            raise SystemExit("building another version's compiled core needs Cython: pip install Cython") from None
        print(f"building {ref} ({sha}) in {path} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=path, check=True,
                       stdout=subprocess.DEVNULL)
        open(os.path.join(path, ".built"), "w").close()
    return path


def bench_once(path: str, only: str, quick: bool, contenders: str) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = dict(os.environ, PYTHONPATH=os.path.join(path, "src"))
        cmd = [sys.executable, os.path.join(path, "benchmarks", "bench.py"), "--repeat", "1",
               "--only", only, "--contenders", contenders, "--json", out.name]
        if quick:
            cmd.append("--quick")
        subprocess.run(cmd, cwd=path, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out.name) as f:
            result: dict[str, object] = json.load(f)
    return result


def value(result: dict[str, object], workload: int, contender: str, key: str) -> float | None:
    medians = result.get("medians", {})
    assert isinstance(medians, dict)
    got = medians.get(str(workload), {}).get(contender, {}).get(key)
    return None if got is None else float(got)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("refs", nargs="+", help="git revisions, or '.' for the working tree")
    parser.add_argument("--only", default="1,2,3,4,5", help="workloads of bench.py (default 1-5)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="bench.py's small sizes")
    args = parser.parse_args()
    paths = {ref: checkout(ref) for ref in args.refs}
    runs: dict[str, list[dict[str, object]]] = {ref: [] for ref in args.refs}
    for rep in range(args.repeat):
        order = args.refs[rep % len(args.refs):] + args.refs[:rep % len(args.refs)]
        for ref in order:
            # The stdlib batcher in every process, so that each version runs the same sequence.
            contenders = "compiled,stdlib"
            print(f"repeat {rep + 1}/{args.repeat}: {ref}", file=sys.stderr, flush=True)
            runs[ref].append(bench_once(paths[ref], args.only, args.quick, contenders))
    wanted = {int(w) for w in args.only.split(",")}
    first = args.refs[0]
    head = " | ".join(args.refs)
    ratios = " | ".join(f"{r} / {first}" for r in args.refs[1:])
    print(f"| workload | {head} | {ratios} | stdlib |")
    print("|---|" + "---|" * (2 * len(args.refs)))
    for w, key, label, higher in METRICS:
        if w not in wanted:
            continue
        meds = {}
        for ref in args.refs:
            vals = [v for v in (value(r, w, "compiled", key) for r in runs[ref]) if v is not None]
            meds[ref] = statistics.median(vals) if vals else None
        std = [v for v in (value(r, w, "stdlib", key) for r in runs[first]) if v is not None]
        cells = [f"{meds[r]:,.2f}" if meds[r] is not None else "—" for r in args.refs]
        rs = []
        for ref in args.refs[1:]:
            a, b = meds[first], meds[ref]
            rs.append("—" if not a or not b else f"{(b / a if higher else a / b):.2f}")
        yardstick = f"{statistics.median(std):,.2f}" if std else "—"
        print(f"| {label} | {' | '.join(cells)} | {' | '.join(rs)} | {yardstick} |")
    print("\nRatios are 'times better' than the first version (> 1: faster, or a lower p99).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
