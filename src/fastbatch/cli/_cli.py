"""Command line: python -m fastbatch demo | info | bench."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from .. import __version__
from ..core import _backend

#: Where this package lives; in a source checkout, ``<checkout>/src/fastbatch``.
_PACKAGE_DIR = Path(__file__).resolve().parent
_BENCH_MODULE = "_fastbatch_benchmarks_bench"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def find_bench(cwd: Path | None = None, package_dir: Path | None = None) -> Path | None:
    """``benchmarks/bench.py`` of a source checkout, or None.

    Looked for in the current directory and its parents, then in the parents of the
    package's directory (``<checkout>/src/fastbatch`` when fastbatch is imported from a
    checkout). A directory counts only if it holds both ``bench.py`` and ``workloads.py``.
    """
    here = (cwd or Path.cwd()).resolve()
    package = (package_dir or _PACKAGE_DIR).resolve()
    seen: set[Path] = set()
    for base in [here, *here.parents, *package.parents]:
        if base in seen:
            continue
        seen.add(base)
        bench = base / "benchmarks" / "bench.py"
        if bench.is_file() and (bench.parent / "workloads.py").is_file():
            return bench
    return None


def _bench(argv: list[str]) -> int:
    """Run ``benchmarks/bench.py`` in this process, with ``argv`` passed through."""
    path = find_bench()
    if path is None:
        print("fastbatch bench: benchmarks/bench.py not found. The benchmark harness is not "
              "part of the installed package: run `python -m fastbatch bench` from a source "
              "checkout of fastbatch (the directory that holds benchmarks/).", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(_BENCH_MODULE, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        print(f"fastbatch bench: cannot load {path}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[_BENCH_MODULE] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    code: int = module.main(argv, prog="fastbatch bench")
    return code


_DESCRIPTION = """\
fastbatch: in-process dynamic batching for Python.

commands:
  demo    a worked example, then a numpy model served one call per request and batched
  info    the version, the core in use (compiled or pure Python) and the Python
  bench   the benchmark harness (only from a source checkout, which holds benchmarks/)
"""

_DEMO_DESCRIPTION = """\
Runs two things and prints what they did:
  1. a worked example: 1000 rows of 10 floats through a batch function (batch * 2),
     every result checked;
  2. a small numpy MLP served two ways, one call per request and batched by fastbatch
     (producer threads, requests in flight each), with a table of throughput, latency
     percentiles and batch sizes, and the speed-up.
"""


def _parser(with_bench: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastbatch", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"fastbatch {__version__} (core: {_backend.NAME})")
    sub = parser.add_subparsers(dest="command", metavar="{demo,info" + (",bench}" if with_bench else "}"))
    demo = sub.add_parser("demo", help="a worked example and a batched numpy model, with statistics",
                          description=_DEMO_DESCRIPTION,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--items", type=_positive_int, default=20000,
                      help="requests sent to the model (default 20000)")
    demo.add_argument("--producers", type=_positive_int, default=4, help="producer threads (default 4)")
    demo.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="draw a progress bar on stderr (default: only when stderr is a terminal)")
    sub.add_parser("info", help="print the version, the core in use and the Python",
                   description="Prints the fastbatch version, which core is in use (compiled or "
                               "pure Python), the Python version and where the package lives.")
    if with_bench:
        sub.add_parser("bench", add_help=False,
                       help="run the benchmark harness: [--quick] [--plot out.png] [...] "
                            "(fastbatch bench --help for every option)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fastbatch`` and the ``fastbatch`` script."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["bench"]:
        # Everything after `bench` belongs to benchmarks/bench.py (its own --help too).
        return _bench(args_in[1:])
    parser = _parser(with_bench=find_bench() is not None)
    args = parser.parse_args(args_in)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        print(f"fastbatch {__version__}, core: {_backend.NAME}, Python {sys.version.split()[0]}, "
              f"from {_PACKAGE_DIR}")
        return 0
    from . import _demo

    _demo.run(n_items=args.items, producers=args.producers, progress=args.progress)
    return 0
