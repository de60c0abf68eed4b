"""Where the nanoseconds go: fastbatch's per-item hot path, piece by piece.

    python benchmarks/hotpath.py [--core compiled,python] [--n 20000]
    python benchmarks/hotpath.py --profile [--seconds 6]    # needs py-spy on PATH

Micro-timings: each piece of workload (1)'s path (the enqueue call, the future, the
queue put; the take, the assembly copy, the batch function, the split, the resolution,
the statistics) timed in isolation on the same 10-float64 rows, batch 200, per item.
Loops are list comprehensions; the cost of an empty comprehension over the same list is
subtracted. Each figure is the best of ``--rounds`` rounds (as ``timeit`` advises: the
fastest round is the one least disturbed by the rest of the machine). The garbage
collector stays on: the collections that allocations trigger are part of the cost. The
stdlib batcher's equivalent pieces are timed the same way.

``--profile`` runs workload (1) on the compiled core for ``--seconds`` under
``py-spy record --gil`` (samples only the thread holding the GIL: on CPython the
producer and the worker share one GIL, so GIL time is what limits items/s) and prints
the share of samples per thread and per source line.

Pieces reach into fastbatch internals (``_queue``, ``_worker``, ``stats``, ``scheduler``,
``_future.start_batch/resolve_batch``); a piece whose internals moved is reported as
"n/a" rather than failing the run.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import workloads as wl  # noqa: E402
from stdlib_batcher import StdlibBatcher, _ClosableQueue  # noqa: E402

BATCH = 200
perf_ns = time.perf_counter_ns


def _best_ns(fn: Callable[[], Any], per: int, rounds: int, baseline: Callable[[], Any] | None = None) -> float:
    """Best of ``rounds`` of (time of ``fn()`` − time of ``baseline()``) / ``per``."""
    samples = []
    for _ in range(rounds):
        t0 = perf_ns()
        fn()
        t1 = perf_ns()
        base = 0
        if baseline is not None:
            b0 = perf_ns()
            baseline()
            base = perf_ns() - b0
        samples.append((t1 - t0 - base) / per)
    return min(samples)


def _safe(fn: Callable[[], float]) -> float | None:
    try:
        return fn()
    except (AttributeError, TypeError, ImportError, KeyError, ValueError) as exc:
        print(f"  (a piece could not be timed: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


# -- fastbatch pieces ----------------------------------------------------------------------


def fastbatch_pieces(contender: wl.Contender, n: int, rounds: int) -> dict[str, float | None]:
    """Per-item ns of each piece, for one core."""
    from fastbatch import _future

    try:
        from fastbatch.items import _results
    except ImportError:  # an older tree: the core's split alone
        _results = None  # type: ignore[assignment]

    rows = list(np.random.default_rng(7).random((n, wl.ROW_WIDTH)))
    batches = [rows[i:i + BATCH] for i in range(0, n - BATCH + 1, BATCH)]
    core = contender.core
    assert core is not None
    out: dict[str, float | None] = {}
    empty = lambda: [x for x in rows]  # noqa: E731 - the loop the pieces run in

    with contender.batcher(BATCH, 0.005) as p:
        p.start(wl._times_two)
        p.enqueue_predict(rows[0]).result(timeout=wl.WAIT_S)  # fixes the schema

        def timed_paused(method: Callable[[Any], Any]) -> float:
            samples = []
            for _ in range(rounds):
                p.pause()
                t0 = perf_ns()
                r = [method(x) for x in rows]
                t1 = perf_ns()
                b0 = perf_ns()
                empty()
                base = perf_ns() - b0
                p.resume()
                if r[-1] is not None:
                    r[-1].result(timeout=wl.WAIT_S)
                else:
                    deadline = time.monotonic() + wl.WAIT_S
                    while len(p._queue) and time.monotonic() < deadline:
                        time.sleep(0.001)
                samples.append((t1 - t0 - base) / n)
            return min(samples)

        out["enqueue_predict: whole call"] = _safe(lambda: timed_paused(p.enqueue_predict))
        out["enqueue (no future): whole call"] = _safe(lambda: timed_paused(p.enqueue))

        future_cls = type(p.enqueue_predict(rows[0]))
        out["  future creation"] = _best_ns(lambda: [future_cls() for x in rows], n, rounds, empty)

        q_cls = core.RequestQueue
        nbytes = rows[0].nbytes

        def put_round() -> float:
            q = q_cls(0, True)
            futs = [future_cls() for _ in rows]
            pairs = list(zip(rows, futs))
            # The façade's fast path: put_row (row checked and put in one core call).
            q.set_row_schema(rows[0].dtype, rows[0].shape)
            put = q.put_row
            t0 = perf_ns()
            [put(x, f, None) for x, f in pairs]
            t1 = perf_ns()
            b0 = perf_ns()
            [None for x, f in pairs]
            base = perf_ns() - b0
            return (t1 - t0 - base) / n

        out["  queue put"] = min(put_round() for _ in range(rounds))

        # Worker side: one batch of 200 at a time, as the worker sees it.
        def worker_round() -> dict[str, float]:
            q = q_cls(0, True)
            futs = [future_cls() for _ in rows]
            for x, f in zip(rows, futs):
                q.put(x, f, 1, nbytes, 2, None)
            asm = core.BatchAssembler()
            acc: collections.Counter[str] = collections.Counter()
            start_batch = getattr(_future, "start_batch", None)
            resolve_batch = getattr(_future, "resolve_batch", None)
            split_result = getattr(_results, "split_result", None) if _results is not None else None
            kept = getattr(_results, "kept", None) if _results is not None else None
            stats = p.stats
            scheduler = getattr(p, "scheduler", None) or p.sizer  # older versions: a sizer
            mono = core.monotonic_ns
            for _ in batches:
                t0 = perf_ns()
                items, futures, stamps = q.take_batch(BATCH, 0, 0.005, None)
                t1 = perf_ns()
                if start_batch is not None:
                    start_batch(futures)
                else:
                    [f.set_running_or_notify_cancel() for f in futures]
                t2 = perf_ns()
                batch = asm.assemble(items)
                t3 = perf_ns()
                result = batch * 2
                del batch
                t4 = perf_ns()
                if split_result is None:
                    pieces = asm.split(result)
                elif kept is not None:  # the worker asks whether the result is kept, then splits
                    shared = kept(result)
                    pieces = split_result(asm, result, BATCH, shared)
                else:
                    pieces = split_result(asm, result, BATCH)
                t5 = perf_ns()
                if resolve_batch is not None:
                    resolve_batch(futures, pieces)
                else:
                    [f.set_result(r) for f, r in zip(futures, pieces)]
                t6 = perf_ns()
                start_ns = end_ns = mono()
                counters = getattr(p, "_counters", None)
                if counters is not None:  # the totals: one locked add per batch
                    counters.add(batches=1, samples=BATCH, processed=BATCH)
                stats.record_batch(start_ns=start_ns, end_ns=end_ns, samples=BATCH,
                                   queue_length=len(q), enqueue_ns=stamps)
                t7 = perf_ns()
                if hasattr(scheduler, "finished"):
                    scheduler.finished(end_ns, (end_ns - start_ns) / 1e9, BATCH, q.queued_samples, True)
                else:
                    scheduler.observe(end_ns / 1e9, (end_ns - start_ns) / 1e9, BATCH, q.queued_samples)
                t8 = perf_ns()
                for key, dt in (("take", t1 - t0), ("start", t2 - t1), ("assemble", t3 - t2),
                                ("func", t4 - t3), ("split", t5 - t4), ("resolve", t6 - t5),
                                ("stats", t7 - t6), ("scheduler", t8 - t7)):
                    acc[key] += dt
            return {k: v / (len(batches) * BATCH) for k, v in acc.items()}

        worker_rounds = [worker_round() for _ in range(rounds)]
        for key, label in (("take", "take_batch"), ("start", "mark futures running (start_batch)"),
                           ("assemble", "assembly copy"), ("func", "batch function (batch * 2)"),
                           ("split", "result split"), ("resolve", "future resolution (resolve_batch)"),
                           ("stats", "statistics (record_batch)"), ("scheduler", "scheduler (finished)")):
            out[f"  {label}"] = min(r[key] for r in worker_rounds)

        # The worker alone, for real: queue n items while paused, time the drain.
        def drain() -> float:
            rate, _ = wl._drain_rate(p, rows, None, 0.0)
            return 1e9 / rate

        out["worker loop: whole batch, per item"] = min(drain() for _ in range(rounds))
        done_futures = [p.enqueue_predict(x) for x in rows]
        wl._wait_all(done_futures, 0.0)
        out["consumer: result() of a done future"] = _best_ns(
            lambda: [f.result() for f in done_futures], n, rounds, empty)
    return out


# -- stdlib pieces ---------------------------------------------------------------------------


def stdlib_pieces(n: int, rounds: int) -> dict[str, float | None]:
    """The stdlib batcher's equivalents, per item."""
    import concurrent.futures
    import itertools

    rows = list(np.random.default_rng(7).random((n, wl.ROW_WIDTH)))
    empty = lambda: [x for x in rows]  # noqa: E731
    out: dict[str, float | None] = {}

    def producer(method: str) -> float:
        b = StdlibBatcher(BATCH, 0.005)
        b._queue = _ClosableQueue()  # no worker: only the producer's side is timed
        fn = getattr(b, method)
        return _best_ns(lambda: [fn(x) for x in rows], n, 1, empty)

    out["enqueue_predict: whole call"] = min(producer("enqueue_predict") for _ in range(rounds))
    out["enqueue (no future): whole call"] = min(producer("enqueue") for _ in range(rounds))
    out["  future creation"] = _best_ns(lambda: [concurrent.futures.Future() for x in rows], n, rounds, empty)

    def put_round() -> float:
        q = _ClosableQueue()
        put, seq, mono = q.put, itertools.count(), time.monotonic
        t0 = perf_ns()
        [put((2, next(seq), mono(), x, None)) for x in rows]
        t1 = perf_ns()
        b0 = perf_ns()
        [(2, next(seq), mono(), x, None) for x in rows]
        return (t1 - t0 - (perf_ns() - b0)) / n

    out["  queue put"] = min(put_round() for _ in range(rounds))

    def worker_round() -> dict[str, float]:
        q = _ClosableQueue()
        seq = itertools.count()
        for x in rows:
            q.put((2, next(seq), time.monotonic(), x, concurrent.futures.Future()))
        acc: collections.Counter[str] = collections.Counter()
        for _ in range(n // BATCH):
            t0 = perf_ns()
            entries = [q.get_nowait() for _ in range(BATCH)]
            t1 = perf_ns()
            entries = [e for e in entries if e[4] is None or e[4].set_running_or_notify_cancel()]
            t2 = perf_ns()
            batch = np.stack([e[3] for e in entries])
            t3 = perf_ns()
            result = batch * 2
            t4 = perf_ns()
            for e, row in zip(entries, result):
                e[4].set_result(row)
            t5 = perf_ns()
            for key, dt in (("take", t1 - t0), ("start", t2 - t1), ("assemble", t3 - t2),
                            ("func", t4 - t3), ("resolve", t5 - t4)):
                acc[key] += dt
        return {k: v / n for k, v in acc.items()}

    rs = [worker_round() for _ in range(rounds)]
    for key, label in (("take", "take_batch"), ("start", "mark futures running (start_batch)"),
                       ("assemble", "assembly copy"), ("func", "batch function (batch * 2)"),
                       ("resolve", "future resolution (resolve_batch)")):
        out[f"  {label}"] = min(r[key] for r in rs)
    out["  result split"] = 0.0  # rows come out of iterating the result, inside resolution

    def drain() -> float:
        b = StdlibBatcher(BATCH, 0.005)
        gate = threading.Event()
        first = True

        def func(batch: np.ndarray) -> np.ndarray:
            nonlocal first
            if first:  # hold the worker until everything is queued
                first = False
                gate.wait(wl.WAIT_S)
            return batch * 2

        b.start(func)
        b.enqueue_predict(rows[0])
        time.sleep(0.02)  # the worker takes that one item and waits at the gate
        futures = [b.enqueue_predict(x) for x in rows]
        t0 = perf_ns()
        gate.set()
        futures[-1].result(timeout=wl.WAIT_S)
        t1 = perf_ns()
        b.stop()
        return (t1 - t0) / n

    out["worker loop: whole batch, per item"] = min(drain() for _ in range(rounds))
    fs = []
    for x in rows:
        f: concurrent.futures.Future[Any] = concurrent.futures.Future()
        f.set_result(x)
        fs.append(f)
    out["consumer: result() of a done future"] = _best_ns(lambda: [f.result() for f in fs], n, rounds, empty)
    return out


# -- the garbage collector ---------------------------------------------------------------------


def gc_cost(contender: wl.Contender, n: int, rounds: int) -> dict[str, float]:
    """Workload (1) end to end, and the time the cyclic GC ran during it, per item.

    Every tracked allocation (a future, a queue record, a list) counts towards the next
    collection, and the futures of a run stay alive until it ends, so each collection of
    the older generations walks all of them: the GC is a real per-item cost of workload (1).
    """
    spent = [0]
    start = [0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            start[0] = perf_ns()
        else:
            spent[0] += perf_ns() - start[0]

    runs = []
    for _ in range(rounds):
        spent[0] = 0
        gc.callbacks.append(callback)
        try:
            r = wl.predict_one_producer(contender, n=n)
        finally:
            gc.callbacks.remove(callback)
        runs.append((1e9 / r["items_per_s"], spent[0] / n))
    whole, in_gc = min(runs)  # the least disturbed run, and its own GC time
    return {"workload (1) end to end, per item": whole, "  cyclic GC during it": in_gc}


# -- the table -------------------------------------------------------------------------------


ORDER = [
    "workload (1) end to end, per item", "  cyclic GC during it",
    "enqueue_predict: whole call", "  future creation", "  queue put",
    "enqueue (no future): whole call",
    "worker loop: whole batch, per item", "  take_batch", "  mark futures running (start_batch)",
    "  assembly copy", "  batch function (batch * 2)", "  result split",
    "  future resolution (resolve_batch)", "  statistics (record_batch)", "  scheduler (finished)",
    "consumer: result() of a done future",
]


def breakdown(names: list[str], n: int, rounds: int) -> str:
    cols: dict[str, dict[str, float | None]] = {}
    for contender in wl.contenders(tuple(names)):
        cols[contender.name] = (fastbatch_pieces(contender, n, rounds) if contender.is_fastbatch
                                else stdlib_pieces(n, rounds))
        cols[contender.name].update(gc_cost(contender, 50_000, max(3, rounds // 3)))
    for col in cols.values():  # what the pieces do not explain
        whole, fut, put = (col.get(k) for k in ORDER[2:5])
        if whole is not None and fut is not None and put is not None:
            col["  call, validation, the rest (derived)"] = whole - fut - put
    order = ORDER[:5] + ["  call, validation, the rest (derived)"] + ORDER[5:]
    head = ["piece (ns per item)", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in order:
        cells = [key.replace("  ", "↳ ", 1) if key.startswith("  ") else f"**{key}**"]
        for col in cols.values():
            v = col.get(key)
            cells.append("—" if v is None else f"{v:,.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- the profile -----------------------------------------------------------------------------


def spin(seconds: float, core: str) -> None:
    """Workload (1) over and over, for a profiler to watch."""
    contender = wl.contenders((core,))[0]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        wl.predict_one_producer(contender, n=50_000)


def profile(seconds: float, core: str, top: int) -> str:
    """py-spy (GIL samples only) over ``spin``; shares per thread and per source line."""
    exe = shutil.which("py-spy")
    if exe is None:
        return "py-spy is not on PATH: `pip install py-spy`"
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "profile.txt")
        cmd = [exe, "record", "--gil", "--threads", "-r", "1000", "-f", "raw", "-o", raw, "--",
               sys.executable, os.path.abspath(__file__), "--spin", str(seconds), "--core", core]
        subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 120)
        with open(raw) as f:
            lines = f.read().splitlines()
    total = 0
    by_thread: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[tuple[str, str]] = collections.Counter()
    by_func: collections.Counter[tuple[str, str]] = collections.Counter()
    harness = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack.startswith("thread ("):
            continue
        frames = stack.split(";")
        k = int(count)
        if "Worker._loop" in stack:
            thread = "worker"
        elif "predict_one_producer.<locals>.<listcomp>" in stack or "_results" in stack:
            thread = "producer"  # the timed part: the enqueue loop and collecting results
        else:
            harness += k  # imports, data set-up, result checks, stop(): not the hot path
            continue
        total += k
        by_thread[thread] += k
        by_line[(thread, frames[-1])] += k
        for fr in set(fr.split(" (")[0] for fr in frames[1:]):
            by_func[(thread, fr)] += k
    out = [f"py-spy --gil, workload (1), core {core}: {total} samples of the GIL holder in the "
           f"hot path ({harness} more in the harness: set-up, checks, imports; left out)",
           "", "| thread | share of GIL samples |", "|---|---|"]
    out += [f"| {t} | {v / total * 100:.1f} % |" for t, v in by_thread.most_common()]
    out += ["", "| thread | line (self) | share |", "|---|---|---|"]
    out += [f"| {t} | `{fr}` | {v / total * 100:.1f} % |" for (t, fr), v in by_line.most_common(top)]
    skip = {"Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "Worker._run", "<module>",
            "spin", "main", "_run_module_as_main", "_run_code"}
    out += ["", "| thread | function (inclusive) | share |", "|---|---|---|"]
    out += [f"| {t} | `{fr}` | {v / total * 100:.1f} % |" for (t, fr), v in by_func.most_common(top + len(skip))
            if fr not in skip][:top]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--core", default="compiled,python,stdlib", help="columns of the breakdown")
    parser.add_argument("--n", type=int, default=20_000, help="items per timed round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--profile", action="store_true", help="py-spy profile of workload (1) instead")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--spin", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.spin is not None:
        spin(args.spin, args.core.split(",")[0])
        return 0
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, fastbatch from "
          f"{os.path.dirname(wl.fastbatch.__file__)}")
    if args.profile:
        print(profile(args.seconds, args.core.split(",")[0], args.top))
        return 0
    print(breakdown(args.core.split(","), args.n, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
