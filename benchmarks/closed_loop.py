"""The batching policy on a synthetic model in a closed loop: how close to full batches?

``clients`` threads each send one item and wait for its result (a web handler awaiting
its model call). The model costs ``a + b·n`` — a sleep that releases the GIL, as native
code does. The optimum is full batches back to back: ``max_batch / (a + max_batch·b)``
items/s. Each ``batch_timeout`` runs the default ``ADAPTIVE`` policy and ``FIXED`` (the
classic rule: a batch waits ``batch_timeout`` after its first item), rounds interleaved,
and the table gives items/s, the fraction of the optimum, p99 latency and the average
batch (median of the rounds).

    python benchmarks/closed_loop.py [--clients 64] [--seconds 3] [--repeat 2]

Python threads take time to come back: here 64 callers need about 4 ms, all told, to
wake from their results and send again, while the model idles. That part of each cycle
no batcher can save, so the optimum is out of reach by that much; the policy's part is to
wait for them (up to ``batch_timeout``) instead of releasing half a batch.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from choosing_timeout import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--fixed-ms", type=float, default=20.0)
    parser.add_argument("--per-item-ms", type=float, default=0.1)
    parser.add_argument("--timeouts-ms", default="1,5,10,30,50")
    args = parser.parse_args()
    a, b, m = args.fixed_ms, args.per_item_ms, args.max_batch
    optimum = m / ((a + m * b) / 1e3)
    timeouts = [float(t) / 1e3 for t in args.timeouts_ms.split(",")]
    print(f"{args.clients} blocking clients, model = {a:g} ms + {b:g} ms/item, max_batch_size={m}, "
          f"optimum {optimum:,.0f} items/s; {args.seconds:g} s per round, median of {args.repeat}\n")
    results: dict[tuple[float, str], list[dict[str, float]]] = {}
    for _ in range(args.repeat):
        for timeout in timeouts:
            for strategy in ("adaptive", "fixed"):
                r = run(args.clients, m, timeout, args.seconds, a, b, strategy)
                results.setdefault((timeout, strategy), []).append(r)
    print("| batch_timeout | strategy | items/s | × optimum | p99 ms | avg batch |")
    print("|---|---|---|---|---|---|")
    for timeout in timeouts:
        for strategy in ("adaptive", "fixed"):
            rs = results[(timeout, strategy)]
            rate = statistics.median(r["calls_s"] for r in rs)
            p99 = statistics.median(r["p99_ms"] for r in rs)
            batch = statistics.median(r["avg_batch"] for r in rs)
            print(f"| {timeout * 1e3:g} ms | {strategy.upper()} | {rate:,.0f} | {rate / optimum:.2f} | "
                  f"{p99:.1f} | {batch:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
