"""How ``max_batch_size`` and ``batch_timeout`` play with callers that block on their result.

A closed loop: ``clients`` threads each send one item and wait for its result before
sending the next (a web handler awaiting its model call). The model costs ``fixed_ms``
plus ``per_item_ms`` per item, as a sleep that releases the GIL (a model running in
native code). Every combination runs for ``seconds``, one after another in one process,
and the table gives calls/s, latency percentiles and the average batch.

    python benchmarks/choosing_timeout.py [--clients 16] [--seconds 2]

What it shows: with blocking callers at most ``clients`` items can ever be waiting, so a
``max_batch_size`` above ``clients`` is never reached and every batch waits out the whole
``batch_timeout``; ``max_batch_size = clients`` (or a short timeout) releases each batch
as soon as every caller has sent.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from closed_clients import closed_loop  # noqa: E402
from compiled_fastbatch import fastbatch  # noqa: E402 - the installed package, compiled


def run(clients: int, max_batch: int, timeout: float, seconds: float, fixed_ms: float,
        per_item_ms: float, strategy: str = "fixed") -> dict[str, float]:
    def model(batch: np.ndarray) -> np.ndarray:
        time.sleep((fixed_ms + per_item_ms * len(batch)) / 1e3)
        return batch * 2

    config = fastbatch.BatchProcessorConfig(max_batch_size=max_batch, batch_timeout=timeout,
                                            processing_strategy=strategy,
                                            enable_health_monitoring=False)
    def check(i: int, result: np.ndarray) -> None:
        assert result[0] == 2.0 * i

    with fastbatch.BatchProcessor(config) as processor:
        processor.start(model)
        lat, wall = closed_loop(processor, clients, seconds, lambda i: np.full(4, float(i)), check)
        stats = processor.get_stats()
    return {"calls_s": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "avg_batch": stats["avg_batch_size"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fixed-ms", type=float, default=5.0)
    parser.add_argument("--per-item-ms", type=float, default=0.1)
    args = parser.parse_args()
    c = args.clients
    grid = [(mb, t) for mb in (50, c) for t in (0.0, 0.002, 0.01, 0.05)]
    print(f"{c} blocking clients, model = {args.fixed_ms:g} ms + {args.per_item_ms:g} ms/item, "
          f"FIXED strategy, {args.seconds:g} s per row\n")
    print("| max_batch_size | batch_timeout | calls/s | p50 ms | p99 ms | avg batch |")
    print("|---|---|---|---|---|---|")
    for max_batch, timeout in grid:
        r = run(c, max_batch, timeout, args.seconds, args.fixed_ms, args.per_item_ms)
        print(f"| {max_batch} | {timeout * 1e3:g} ms | {r['calls_s']:,.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['avg_batch']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
