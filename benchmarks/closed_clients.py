"""Closed-loop clients: each thread sends one item, waits for its result, sends the next.

    from closed_clients import closed_loop
    latencies_ms, wall_s = closed_loop(processor, clients=64, seconds=3.0, row=lambda i: ...)

A web handler awaiting its model call behaves this way; at most ``clients`` items are
ever waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def closed_loop(processor: Any, clients: int, seconds: float, row: Callable[[int], np.ndarray],
                check: Callable[[int, Any], None] | None = None) -> tuple[np.ndarray, float]:
    """Run ``clients`` threads against a started processor for ``seconds``; returns every
    call's latency (ms) and the wall time (s). ``row(i)``: client ``i``'s item;
    ``check(i, result)``: called on each result (a benchmark that also checks)."""
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def client(i: int) -> None:
        item = row(i)
        out = latencies[i]
        while not stop.is_set():
            t0 = time.perf_counter()
            result = processor.enqueue_predict(item).result(timeout=60)
            out.append(time.perf_counter() - t0)
            if check is not None:
                check(i, result)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    wall = time.perf_counter() - start
    return np.concatenate([np.asarray(x) for x in latencies]) * 1e3, wall
