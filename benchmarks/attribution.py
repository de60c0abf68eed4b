"""Where the instructions per item go, version against version: callgrind, function by function.

    python benchmarks/attribution.py e49d904 .                 # every workload of instructions.py
    python benchmarks/attribution.py e49d904 HEAD --workload enqueue --top 30
    python benchmarks/attribution.py . --workload batch1       # one version: its own breakdown

Each version (a git revision, built as ``versions.py`` builds it, or ``.``: this working
tree, with its core built in place) runs the workloads of ``instructions.py`` under
``valgrind --tool=callgrind`` with ``n1`` and ``n2`` items; a function's instructions per
item are the difference over ``n2 - n1`` (start, imports and shutdown cancel out). The
``batch1`` workload is ``enqueue`` with batches of one item: its count per item is the
cost of one batch.

The table groups the functions by what they do (the interpreter running Python code, the
core's C functions, numpy, allocation and reference counting, locks and thread hand-offs)
and lists the functions whose count changed most. Functions are named by their C
symbol: the core's Cython functions show their Python names inside
(``..._RequestQueue_..._take_batch``); Python functions do not appear one by one, only as
the interpreter's share (``_PyEval_EvalFrameDefault``) — ``hotpath.py`` and the
ablation in ``benchmarks/README.md`` attribute that share.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import versions  # noqa: E402

#: workload → (items n1, items n2); batch1 runs instructions.py's enqueue child in batches of one.
SIZES = {"predict": (2_000, 6_000), "enqueue": (2_000, 6_000), "images": (64, 192), "batch1": (500, 1_500)}

# (group, pattern on the symbol): the first match names a function's group.
GROUPS = [
    ("interpreter (Python code)", r"_PyEval_EvalFrameDefault|ceval|_PyEvalFramePushAndInit|_PyFrame_|"
                                  r"frameobject|vgetargs|getargs|_PyArg_|_PyObject_MakeTpCall|vectorcall|"
                                  r"_PyType_Lookup|dictobject|unicodekeys|lookdict|PyObject_GetAttr|"
                                  r"_PyObject_GenericGetAttr|PyCMethod_New|methodobject|descrobject|"
                                  r"funcobject|classobject|call\.c|_Py_Specialize|specialize|_Py_dict_lookup|find_name_in_mro|"
                                  r"initialize_locals|insertdict|PyDict_|_PyFunction|method_vectorcall|"
                                  r"cfunction|PyObject_Call|_PyObject_Call|slot_tp|wrapperdescr"),
    ("fastbatch core (C)", r"^core "),
    ("locks and thread hand-offs", r"pthread|futex|PyThread_|take_gil|drop_gil|_PyEval_(Save|Restore)Thread|"
                                   r"PyEval_(Save|Restore)Thread|condvar|PyCOND|PyMUTEX|lock"),
    ("allocation, reference counts, GC", r"obmalloc|_PyObject_(Malloc|Free|Realloc)|PyObject_(Malloc|Free)|"
                                         r"malloc|free|gcmodule|_Py_Dealloc|dealloc|tupleobject|listobject|"
                                         r"floatobject|longobject|_PyObject_GC|_Py_NewReference|gc_collect|visit_|"
                                         r"PyTuple_New|PyList_New|PyFloat_|PyLong_"),
    ("numpy", r"numpy|multiarray|umath|PyArray|npy_|blas"),
    ("copies (memcpy, memmove)", r"memcpy|memmove|memset"),
]


def child_env(src: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=src, PYTHONHASHSEED="0", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")


def profile(src: str, workload: str, n: int, out: str) -> None:
    child = "enqueue" if workload == "batch1" else workload
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
           os.path.join(HERE, "instructions.py"), "--child", child, str(n)]
    env = child_env(src)
    if workload == "batch1":
        env["FASTBATCH_BENCH_BATCH"] = "1"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"the {workload} child failed:\n{done.stderr[-3000:]}")


def functions(path: str) -> collections.Counter[str]:
    """Self instructions per function (every thread) from a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
                          capture_output=True, text=True, check=True).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
        if match and ":" in match.group(2) and not match.group(2).startswith("PROGRAM TOTALS"):
            name = re.sub(r"\s*\[.*\]$", "", match.group(2)).strip()
            name = re.sub(r"\s*\([\d,]+x\)$", "", name)
            name = name.split(":", 1)[1] if ":" in name else name
            name = re.sub(r"\(.*$", "", name).strip()  # C++ argument lists
            if name.startswith("__pyx_"):
                # The core moved from fastbatch._core to fastbatch.core._core, and Cython numbers
                # a class's methods: one name for the same function in every version.
                name = re.sub(r"^__pyx_\w+?_9fastbatch_(4core_)?5_core_", "core ", name)
                name = re.sub(r"\d+([A-Za-z])", r"\1", name)
            counts[name] += int(match.group(1).replace(",", ""))
    return counts


def per_item(src: str, workload: str) -> dict[str, float]:
    n1, n2 = SIZES[workload]
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for n in (n1, n2):
            out = os.path.join(tmp, f"cg.{n}.out")
            profile(src, workload, n, out)
            runs.append(functions(out))
    a, b = runs
    return {k: (b[k] - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name):
            return group
    return "other"


def short(name: str, width: int = 72) -> str:
    return name if len(name) <= width else "…" + name[-width + 1:]


def table(labels: list[str], counts: list[dict[str, float]], top: int) -> str:
    lines = []
    head = " | ".join(labels)
    lines.append(f"| group | {head} |" + (" change |" if len(labels) > 1 else ""))
    lines.append("|---|" + "---|" * (len(labels) + (1 if len(labels) > 1 else 0)))
    totals = [collections.Counter() for _ in counts]
    for total, c in zip(totals, counts):
        for name, v in c.items():
            total[group_of(name)] += v
    for group in [g for g, _ in GROUPS] + ["other"]:
        cells = " | ".join(f"{t[group]:,.0f}" for t in totals)
        change = f" {totals[-1][group] - totals[0][group]:+,.0f} |" if len(labels) > 1 else ""
        lines.append(f"| {group} | {cells} |{change}")
    cells = " | ".join(f"**{sum(t.values()):,.0f}**" for t in totals)
    change = f" **{sum(totals[-1].values()) - sum(totals[0].values()):+,.0f}** |" if len(labels) > 1 else ""
    lines.append(f"| **all** | {cells} |{change}")
    lines.append("")
    names = set().union(*counts)
    if len(counts) > 1:
        ranked = sorted(names, key=lambda k: -abs(counts[-1].get(k, 0) - counts[0].get(k, 0)))
    else:
        ranked = sorted(names, key=lambda k: -counts[0].get(k, 0))
    lines.append(f"| function (group) | {head} |" + (" change |" if len(labels) > 1 else ""))
    lines.append("|---|" + "---|" * (len(labels) + (1 if len(labels) > 1 else 0)))
    for name in ranked[:top]:
        cells = " | ".join(f"{c.get(name, 0):,.0f}" for c in counts)
        change = f" {counts[-1].get(name, 0) - counts[0].get(name, 0):+,.0f} |" if len(labels) > 1 else ""
        lines.append(f"| `{short(name)}` ({group_of(name).split(' ')[0]}) | {cells} |{change}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("refs", nargs="+", help="git revisions, or '.' for the working tree")
    parser.add_argument("--workload", default="predict,enqueue,images,batch1")
    parser.add_argument("--top", type=int, default=20, help="functions listed per workload")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("valgrind (callgrind, callgrind_annotate) is not installed", file=sys.stderr)
        return 2
    srcs = [os.path.join(versions.checkout(ref), "src") for ref in args.refs]
    if "." in args.refs:
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=versions.REPO,
                       check=True, stdout=subprocess.DEVNULL)
    for workload in args.workload.split(","):
        counts = [per_item(src, workload) for src in srcs]
        unit = "per batch of one item" if workload == "batch1" else "per item"
        print(f"\n### {workload}: instructions {unit}\n")
        print(table(args.refs, counts, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
