"""``python -m fastbatch demo``: the seed's example, then a model that shows why batching pays.

Part 1 runs the seed document's example (rows of 10 floats, ``batch * 2``) with its
config and checks every result. Part 2 serves a small numpy MLP: once calling it per
request (what batching replaces), once through a ``BatchProcessor`` fed by producer
threads, and prints throughput, latency percentiles, batch sizes and the speed-up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _backend
from ._config import BatchProcessorConfig
from ._processor import BatchProcessor


_IN_FLIGHT = 64


class MLP:
    """A 3-layer perceptron in float32: the per-call overhead is what batching amortises."""

    def __init__(self, width: int = 256, hidden: int = 1024, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((width, hidden), dtype=np.float32) / np.sqrt(width)
        self.w2 = rng.standard_normal((hidden, hidden), dtype=np.float32) / np.sqrt(hidden)
        self.w3 = rng.standard_normal((hidden, 16), dtype=np.float32) / np.sqrt(hidden)
        self.width = width

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ self.w1, 0.0)
        h = np.maximum(h @ self.w2, 0.0)
        out: np.ndarray = h @ self.w3
        return out


def _seed_example(out: Callable[[str], None]) -> None:
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
    with BatchProcessor[np.ndarray, np.ndarray](config, name="seed-example") as processor:
        processor.start(lambda batch: batch * 2)
        futures = [processor.enqueue_predict(item) for item in items]
        wrong = sum(not np.array_equal(f.result(timeout=30), item * 2) for f, item in zip(futures, items))
        stats = processor.get_stats()
    out(f"1. The seed's example: 1000 rows of 10 floats, batch * 2 -> {1000 - wrong}/1000 results correct")
    out(f"   batches: {stats['batch_count']}, avg batch size {stats['avg_batch_size']:.0f}, "
        f"avg latency {stats['avg_latency_ms']:.1f} ms (batch_timeout=1.0, min_batch_interval=0.1)")
    if wrong:
        raise SystemExit(f"demo failed: {wrong} wrong results")


def _unbatched(model: MLP, inputs: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The alternative: one model call per request, back to back on one thread."""
    latencies = np.empty(len(inputs))
    outputs = np.empty((len(inputs), 16), dtype=np.float32)
    t0 = time.perf_counter()
    for i, x in enumerate(inputs):
        t = time.perf_counter()
        outputs[i] = model(x)
        latencies[i] = time.perf_counter() - t
    return time.perf_counter() - t0, latencies * 1e3, outputs


def _batched(processor: BatchProcessor[np.ndarray, np.ndarray], inputs: np.ndarray, producers: int) -> tuple[float, list[Any]]:
    """``producers`` clients, each with up to 64 requests in flight, send their share."""
    n = len(inputs)
    outputs: list[Any] = [None] * n
    barrier = threading.Barrier(producers + 1)

    def produce(first: int) -> None:
        # Each producer is a client with up to `_IN_FLIGHT` requests outstanding.
        barrier.wait()
        mine = range(first, n, producers)
        for start in range(0, len(mine), _IN_FLIGHT):
            chunk = mine[start:start + _IN_FLIGHT]
            futures = [processor.enqueue_predict(inputs[i]) for i in chunk]
            for i, future in zip(chunk, futures):
                outputs[i] = future.result(timeout=60)

    threads = [threading.Thread(target=produce, args=(p,), name=f"demo-producer-{p}") for p in range(producers)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, outputs


def _model_demo(out: Callable[[str], None], n_items: int, producers: int) -> float:
    model = MLP()
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((n_items, model.width), dtype=np.float32)
    expected = model(inputs)

    wall_single, lat_single, got_single = _unbatched(model, inputs)
    config = BatchProcessorConfig(initial_batch_size=128, min_batch_size=16, max_batch_size=256,
                                  max_queue_size=10_000, batch_timeout=0.002)
    with BatchProcessor[np.ndarray, np.ndarray](config, name="mlp") as processor:
        processor.start(model)
        wall_batched, got_batched = _batched(processor, inputs, producers)
        stats = processor.get_stats()

    np.testing.assert_allclose(got_single, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(np.stack(got_batched), expected, rtol=1e-3, atol=1e-4)
    speedup = wall_single / wall_batched
    out(f"2. A numpy MLP (256-1024-1024-16, float32), {n_items} requests, every result checked")
    out(f"   {'':34s}{'items/s':>10s}{'p50 ms':>9s}{'p95 ms':>9s}{'p99 ms':>9s}{'batch':>8s}")
    p50, p95, p99 = np.percentile(lat_single, [50, 95, 99])
    out(f"   {'one model call per request':34s}{n_items / wall_single:10.0f}{p50:9.2f}{p95:9.2f}"
        f"{p99:9.2f}{1.0:8.1f}")
    label = f"fastbatch, {producers}x{_IN_FLIGHT} in flight"
    out(f"   {label:34s}{n_items / wall_batched:10.0f}{stats['p50_latency_ms']:9.2f}"
        f"{stats['p95_latency_ms']:9.2f}{stats['p99_latency_ms']:9.2f}{stats['avg_batch_size']:8.1f}")
    out(f"   speed-up from batching: {speedup:.1f}x  (core: {_backend.NAME}, {stats['batch_count']} batches,"
        f" error rate {stats['error_rate']:.3f}, throughput {stats['throughput']:.0f} samples/s)")
    out("   latency: per request, enqueue -> result (unbatched: the call alone; batched: from get_stats())")
    return speedup


def run(n_items: int = 20000, producers: int = 4, out: Callable[[str], None] = print) -> None:
    """Run the demo, printing to ``out``."""
    out(f"fastbatch demo (core: {_backend.NAME})")
    _seed_example(out)
    _model_demo(out, n_items, producers)
