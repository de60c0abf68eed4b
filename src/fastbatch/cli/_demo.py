"""``python -m fastbatch demo``: a worked example, then a model that shows why batching pays.

Part 1 runs the classic ``BatchProcessor`` example (rows of 10 floats, ``batch * 2``) with
its config and checks every result. Part 2 serves a small numpy MLP: once calling it per
request (what batching replaces), once through a ``BatchProcessor`` fed by producer
threads, and prints a table: throughput, latency percentiles, batch sizes and the
speed-up. A progress bar on stderr follows each step (on a terminal, or when forced).
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from .._config import BatchProcessorConfig
from .._processor import BatchProcessor
from ..core import _backend
from ._progress import ProgressBar, wanted

_IN_FLIGHT = 64
#: The unbatched baseline runs on at most this many requests, for at most this many
#: seconds: its rate is steady after a few hundred calls, and all 20,000 would take ~8 s
#: of a demo meant to last seconds (far more on a busy machine).
_UNBATCHED_MAX = 5000
_UNBATCHED_BUDGET_S = 4.0


class MLP:
    """A 3-layer perceptron in float32: the per-call overhead is what batching amortises."""

    def __init__(self, width: int = 256, hidden: int = 1024, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((width, hidden), dtype=np.float32) / np.sqrt(width)
        self.w2 = rng.standard_normal((hidden, hidden), dtype=np.float32) / np.sqrt(hidden)
        self.w3 = rng.standard_normal((hidden, 16), dtype=np.float32) / np.sqrt(hidden)
        self.width = width

    def __call__(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        h = np.maximum(x @ self.w1, 0.0)
        h = np.maximum(h @ self.w2, 0.0)
        out: npt.NDArray[Any] = h @ self.w3
        return out


def _worked_example(out: Callable[[str], None], bar: Callable[[str, int], ProgressBar]) -> None:
    config = BatchProcessorConfig(
        initial_batch_size=100, min_batch_size=50, max_batch_size=200, max_queue_size=1000,
        batch_timeout=1.0, min_batch_interval=0.1, max_retries=3, retry_delay=0.5,
        enable_priority_queue=True, enable_monitoring=True, monitoring_window=100,
        enable_health_monitoring=True, health_check_interval=10.0,
        memory_warning_threshold=80.0, memory_critical_threshold=90.0,
        queue_warning_threshold=500, queue_critical_threshold=800,
        enable_memory_optimization=True, gc_batch_threshold=100,
    )
    rng = np.random.default_rng(1)
    items = [rng.random(10) for _ in range(1000)]
    with bar("example", len(items)) as progress, \
            BatchProcessor[npt.NDArray[Any], npt.NDArray[Any]](config, name="example") as processor:

        def times_two(batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
            progress.advance(len(batch))
            return batch * 2

        processor.start(times_two)
        futures = [processor.enqueue_predict(item) for item in items]
        wrong = sum(not np.array_equal(f.result(timeout=30), item * 2) for f, item in zip(futures, items))
        stats = processor.get_stats()
    out(f"1. The classic example: 1000 rows of 10 floats, batch * 2 -> {1000 - wrong}/1000 results correct")
    out(f"   batches: {stats['batch_count']}, avg batch size {stats['avg_batch_size']:.0f}, "
        f"avg latency {stats['avg_latency_ms']:.1f} ms (batch_timeout=1.0, min_batch_interval=0.1)")
    if wrong:
        raise SystemExit(f"demo failed: {wrong} wrong results")


def _unbatched(model: MLP, inputs: npt.NDArray[Any], progress: ProgressBar,
               budget_s: float = _UNBATCHED_BUDGET_S) -> tuple[float, npt.NDArray[Any], npt.NDArray[Any]]:
    """The alternative: one model call per request, back to back on one thread.

    Stops early when ``budget_s`` seconds have passed; returns the wall time and the
    latencies (ms) and outputs of the requests served.
    """
    latencies = np.empty(len(inputs))
    outputs = np.empty((len(inputs), 16), dtype=np.float32)
    t0 = time.perf_counter()
    deadline = t0 + budget_s
    served = 0
    for x in inputs:
        t = time.perf_counter()
        if served and t > deadline:
            break
        outputs[served] = model(x)
        latencies[served] = time.perf_counter() - t
        served += 1
        progress.advance()
    return time.perf_counter() - t0, latencies[:served] * 1e3, outputs[:served]


def _stamp(store: list[int], i: int, _future: Any) -> None:
    store[i] = time.perf_counter_ns()


def _batched(processor: BatchProcessor[npt.NDArray[Any], npt.NDArray[Any]], inputs: npt.NDArray[Any], producers: int,
             start_ns: list[int], done_ns: list[int]) -> tuple[float, list[Any]]:
    """``producers`` clients, each with up to 64 requests in flight, send their share.

    Returns the wall time and the outputs. Each request's ``start_ns`` is stamped just
    before ``enqueue_predict``, its ``done_ns`` by a done-callback of its future. A
    callback runs after the future's waiters are woken, so the last stamps are only
    certain once the processor has stopped (its worker joined).
    """
    n = len(inputs)
    outputs: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(producers + 1)

    def produce(first: int) -> None:
        # Each producer is a client with up to `_IN_FLIGHT` requests outstanding.
        try:
            barrier.wait()
            mine = range(first, n, producers)
            for start in range(0, len(mine), _IN_FLIGHT):
                chunk = mine[start:start + _IN_FLIGHT]
                futures = []
                for i in chunk:
                    start_ns[i] = time.perf_counter_ns()
                    future = processor.enqueue_predict(inputs[i])
                    future.add_done_callback(functools.partial(_stamp, done_ns, i))
                    futures.append(future)
                for i, future in zip(chunk, futures):
                    outputs[i] = future.result(timeout=60)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(p,), name=f"demo-producer-{p}") for p in range(producers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, outputs


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "   ") -> list[str]:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]

    def fmt(r: Sequence[str]) -> str:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return indent + "  ".join(cells).rstrip()

    return [fmt(header), indent + "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _model_demo(out: Callable[[str], None], bar: Callable[[str, int], ProgressBar],
                n_items: int, producers: int) -> float:
    model = MLP()
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((n_items, model.width), dtype=np.float32)
    expected = model(inputs)

    with bar("unbatched", min(n_items, _UNBATCHED_MAX)) as progress:
        wall_single, lat_single, got_single = _unbatched(model, inputs[:_UNBATCHED_MAX], progress)
    n_single = len(got_single)

    # Up to producers x _IN_FLIGHT requests wait at once by design: the queue thresholds
    # are sized for that, so that the health monitor warns only of a real backlog.
    in_flight = producers * _IN_FLIGHT
    config = BatchProcessorConfig(initial_batch_size=128, min_batch_size=16, max_batch_size=256,
                                  max_queue_size=max(10_000, 4 * in_flight), batch_timeout=0.002,
                                  queue_warning_threshold=2 * in_flight,
                                  queue_critical_threshold=3 * in_flight)
    sizes: list[int] = []
    start_ns, done_ns = [0] * n_items, [0] * n_items
    with bar("batched", n_items) as progress, \
            BatchProcessor[npt.NDArray[Any], npt.NDArray[Any]](config, name="mlp") as processor:

        def batched_model(batch: npt.NDArray[Any]) -> npt.NDArray[Any]:
            sizes.append(len(batch))  # only the worker thread calls this
            result = model(batch)
            progress.advance(len(batch))
            return result

        processor.start(batched_model)
        wall_batched, got_batched = _batched(processor, inputs, producers, start_ns, done_ns)
        stats = processor.get_stats()
    # The processor has stopped: every done-callback has run.
    if not all(done_ns):
        raise SystemExit(f"demo failed: {done_ns.count(0)} requests were never completed")
    lat_batched = (np.array(done_ns, dtype=np.int64) - np.array(start_ns, dtype=np.int64)) / 1e6

    np.testing.assert_allclose(got_single, expected[:n_single], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.stack(got_batched), expected, rtol=1e-3, atol=1e-4)
    rate_single, rate_batched = n_single / wall_single, n_items / wall_batched
    speedup = rate_batched / rate_single
    ps_single = np.percentile(lat_single, [50, 95, 99])
    ps_batched = np.percentile(lat_batched, [50, 95, 99])

    out("2. A numpy MLP (256-1024-1024-16, float32), every result checked")
    out(f"   unbatched: one model call per request, back to back on one thread ({n_single:,} requests,"
        f" at most {_UNBATCHED_MAX:,} or {_UNBATCHED_BUDGET_S:g} s)")
    out(f"   batched:   fastbatch, {producers} producer threads x {_IN_FLIGHT} requests in flight "
        f"({n_items:,} requests)")
    out("")
    rows = [
        ["throughput (items/s)", f"{rate_single:,.0f}", f"{rate_batched:,.0f}"],
        *([f"latency p{q} (ms)", f"{a:.2f}", f"{b:.2f}"]
          for q, a, b in zip((50, 95, 99), ps_single, ps_batched)),
        ["batch size avg", "1.0", f"{np.mean(sizes):.1f}"],
        ["batch size min", "1", f"{min(sizes)}"],
        ["batch size max", "1", f"{max(sizes)}"],
        ["speed-up (throughput)", "1.0x", f"{speedup:.1f}x"],
    ]
    for line in _table(["", "unbatched", "batched"], rows):
        out(line)
    out("")
    out(f"   speed-up from batching: {speedup:.1f}x the unbatched throughput ({len(sizes)} batches)")
    out("   latency per request: unbatched, the model call alone; batched, enqueue_predict -> future"
        " done (queueing included)")
    out(f"   why batched latency is higher: {in_flight} requests are in flight at once and share one"
        " model, so each")
    out(f"   waits behind the others (about in-flight / throughput = {in_flight / rate_batched * 1e3:.1f} ms);"
        " unbatched, one request")
    out("   at a time never queues. Batching trades latency for throughput: fewer requests in flight,"
        " a smaller")
    out("   max_batch_size or batch_timeout lower the latency and the throughput together.")
    window = min(n_items, 100 * config.monitoring_window, 10_000)
    out(f"   get_stats() (core {_backend.NAME}): {stats['batch_count']} batches, error rate "
        f"{stats['error_rate']:.3f}; over its window, the latest {window:,} requests: p99 "
        f"{stats['p99_latency_ms']:.2f} ms, throughput {stats['throughput']:,.0f} samples/s")
    out("   (the table times every request from outside, enqueue_predict call -> done-callback; get_stats()"
        " from inside,")
    out("   enqueue -> result set, over its window: the two p99s measure different spans)")
    return speedup


def run(n_items: int = 20000, producers: int = 4, out: Callable[[str], None] = print,
        progress: bool | None = None, stream: TextIO | None = None) -> float:
    """Run the demo, printing to ``out``; returns the speed-up from batching.

    ``progress``: draw a progress bar on ``stream`` (stderr by default) during each step;
    ``None`` draws it only when ``stream`` is a terminal.
    """
    err = stream if stream is not None else sys.stderr
    enabled = wanted(err, progress)
    steps = iter(range(1, 4))

    def bar(label: str, total: int) -> ProgressBar:
        return ProgressBar(f"[{next(steps)}/3] {label:<12}", total, enabled=enabled, stream=err)

    out(f"fastbatch demo (core: {_backend.NAME})")
    _worked_example(out, bar)
    return _model_demo(out, bar, n_items, producers)
