"""Several batches in flight: what ``max_concurrent_batches=k`` gains.

``clients`` threads each send one item and wait for its result (a closed loop). Two
kinds of batch function that leave a core idle while Python waits:

- ``remote``: 50 ms of sleep per batch, whatever its size — a remote embedding API, a
  database, a device. Run at k = 1, 2, 4, 8 with ``max_batch_size=16`` and 64 clients:
  one batch in flight serves at most 16 items per 50 ms, k batches k times that, until
  the clients are all waiting (64 = 4 batches of 16). The goal: within 10 % of k× the
  k = 1 figure up to k = 4.
- ``cpu``: a 3-layer MLP (256 → hidden → hidden → 256) in torch on one intra-op thread
  per call (numpy on single-threaded BLAS without torch) — CPU-bound native code that
  releases the GIL. At k = 1 and 2 on a 2-core machine, a second batch can use the
  second core.

Every setting runs once per round, rounds interleaved; the table gives the median
items/s of the rounds, the gain over k = 1 measured in the same run, the median p99
latency and the average batch.

    python benchmarks/concurrent_batches.py [--quick] [--clients 64] [--seconds 3] [--repeat 3]
"""

from __future__ import annotations

import os

# Before numpy loads: one BLAS thread per call, so that a second batch is what uses a second core.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from closed_clients import closed_loop  # noqa: E402
from compiled_fastbatch import fastbatch  # noqa: E402

WIDTH = 256


def remote_model(ms: float) -> Callable[[np.ndarray], np.ndarray]:
    def model(batch: np.ndarray) -> np.ndarray:
        time.sleep(ms / 1e3)
        return batch * 2

    return model


def mlp_model(hidden: int) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((WIDTH, hidden)).astype(np.float32) / 16,
               rng.standard_normal((hidden, hidden)).astype(np.float32) / hidden**0.5,
               rng.standard_normal((hidden, WIDTH)).astype(np.float32) / hidden**0.5]
    try:
        import torch
    except ImportError:
        def numpy_mlp(batch: np.ndarray) -> np.ndarray:
            h = batch
            for w in weights:
                h = np.maximum(h @ w, 0)
            return h

        return f"numpy MLP {hidden}", numpy_mlp
    torch.set_num_threads(1)
    layers = [torch.from_numpy(w) for w in weights]

    def torch_mlp(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            h = torch.from_numpy(batch)
            for w in layers:
                h = torch.relu(h @ w)
            return h.numpy()

    return f"torch MLP {hidden}, 1 thread", torch_mlp


def run(model: Callable[[np.ndarray], Any], clients: int, max_batch: int, concurrent: int,
        seconds: float) -> dict[str, float]:
    config = fastbatch.BatchProcessorConfig(max_batch_size=max_batch, max_concurrent_batches=concurrent,
                                            enable_health_monitoring=False)
    with fastbatch.BatchProcessor(config) as processor:
        processor.start(model)
        processor.enqueue_predict(np.zeros(WIDTH, dtype=np.float32)).result(timeout=60)  # warm up
        lat, wall = closed_loop(processor, clients, seconds, lambda i: np.full(WIDTH, 0.01 * i, np.float32))
        stats = processor.get_stats()
    return {"items_s": len(lat) / wall, "p99_ms": float(np.percentile(lat, 99)),
            "avg_batch": stats["avg_batch_size"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s rounds, one round: a smoke test")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--remote-ms", type=float, default=50.0, help="the remote call's time per batch")
    parser.add_argument("--remote-batch", type=int, default=16, help="max_batch_size for the remote call")
    parser.add_argument("--hidden", type=int, default=2048, help="hidden width of the MLP")
    parser.add_argument("--cpu-batch", type=int, default=32, help="max_batch_size for the MLP")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeat = 1.0, 1
    mlp_name, mlp = mlp_model(args.hidden)
    remote_name = f"remote call, {args.remote_ms:g} ms per batch"
    settings = [(remote_name, remote_model(args.remote_ms), args.remote_batch, k) for k in (1, 2, 4, 8)]
    settings += [(mlp_name, mlp, args.cpu_batch, k) for k in (1, 2)]
    print(f"{args.clients} closed-loop clients, {os.cpu_count()} cores; {args.seconds:g} s per round, "
          f"median of {args.repeat} interleaved rounds\n")
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for name, model, batch, k in settings:
            results.setdefault((name, k), []).append(run(model, args.clients, batch, k, args.seconds))
    print("| batch function | max_batch_size | max_concurrent_batches | items/s | × k = 1 | p99 ms | avg batch |")
    print("|---|---|---|---|---|---|---|")
    for name, _, batch, k in settings:
        base = statistics.median(r["items_s"] for r in results[(name, 1)])
        rs = results[(name, k)]
        rate = statistics.median(r["items_s"] for r in rs)
        p99 = statistics.median(r["p99_ms"] for r in rs)
        size = statistics.median(r["avg_batch"] for r in rs)
        print(f"| {name} | {batch} | {k} | {rate:,.0f} | {rate / base:.2f} | {p99:.1f} | {size:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
