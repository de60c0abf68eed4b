"""Statistics: ``BatchStats`` keeps the windows and counters behind ``get_stats()``.

The workers write the windows, one batch at a time (several may end at once: a lock
keeps each batch's records together); readers get snapshots computed by the
core's ``StatsWindow`` (copy under a short lock, percentiles outside it), so reading
statistics never stalls the worker. The running totals live in one ``Counters`` object
(``_counters``), shared with the processor.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import _backend
from ._counters import Counters
from ._histograms import DEFAULT_TIME_BUCKETS, ArrivalMeter, HistogramSnapshot, default_size_buckets

#: Keys computed from the windows; with monitoring off they are reported as 0.0.
WINDOW_KEYS = (
    "avg_processing_time_ms", "p95_processing_time_ms", "avg_batch_size", "max_batch_size",
    "min_batch_size", "avg_queue_time_ms", "avg_latency_ms", "p50_latency_ms",
    "p95_latency_ms", "p99_latency_ms", "avg_queue_length", "max_queue_length", "throughput",
)

# Percentiles get_stats() asks of the processing-time, batch-size, queue-time, latency
# and queue-length windows.
_WINDOW_QS: tuple[tuple[float, ...], ...] = ((95.0,), (), (), (50.0, 95.0, 99.0), ())

# Per-item windows hold this many batches' worth of items at the most; a 10,000-item
# window keeps get_stats() well under a millisecond with the compiled core.
_ITEM_WINDOW_CAP = 10_000


def _num(value: float) -> float:
    return 0.0 if math.isnan(value) else float(value)


class BatchStats:
    """Processing statistics over the last ``window`` batches (classic API kept).

    Args:
        window: number of batches the per-batch windows hold (``monitoring_window``).
        item_window: number of items the per-item latency windows hold; by default
            ``window * 100`` capped at 10,000.
        enabled: when False, nothing is recorded in the windows or the histograms
            (counters still count).
        time_buckets: upper bounds (seconds) of the latency, queue-time and processing-time
            histograms; ``size_buckets``: of the batch-size histogram (samples).
    """

    def __init__(self, window: int = 100, item_window: int | None = None, enabled: bool = True,
                 counters: Counters | None = None, time_buckets: Sequence[float] | None = None,
                 size_buckets: Sequence[float] | None = None) -> None:
        if item_window is None:
            item_window = min(_ITEM_WINDOW_CAP, window * 100)
        core = _backend
        self.enabled = enabled
        self.counters = counters if counters is not None else Counters()
        self._processing_ms = core.StatsWindow(window)
        self._batch_size = core.StatsWindow(window)
        self._queue_length = core.StatsWindow(window)
        self._batch_start_s = core.StatsWindow(window)
        self._queue_ms = core.StatsWindow(item_window)
        self._latency_ms = core.StatsWindow(item_window)
        self._last_end_s = math.nan
        self._record_lock = threading.Lock()
        times = DEFAULT_TIME_BUCKETS if time_buckets is None else time_buckets
        self._make_histograms(times, default_size_buckets(1024) if size_buckets is None else size_buckets)
        self.arrivals = ArrivalMeter()

    # Read-only views of the totals, for code that reads them as attributes.
    @property
    def batch_count(self) -> int:
        return int(self.counters.batches)

    @property
    def total_processed(self) -> int:
        return int(self.counters.processed)

    @property
    def total_samples(self) -> int:
        return int(self.counters.samples)

    @property
    def total_failed(self) -> int:
        return int(self.counters.failed + self.counters.external_errors)

    @property
    def total_cancelled(self) -> int:
        return int(self.counters.cancelled)

    @property
    def batch_errors(self) -> int:
        return int(self.counters.batch_errors)

    def record_batch(
        self,
        *,
        start_ns: int,
        end_ns: int,
        samples: int,
        queue_length: int,
        enqueue_ns: npt.NDArray[Any],
    ) -> None:
        """Record one finished batch's times and sizes (times from the core clock)."""
        self.record(start_ns, end_ns, samples, queue_length, enqueue_ns)

    def record(self, start_ns: int, end_ns: int, samples: int, queue_length: int,
               enqueue_ns: npt.NDArray[Any]) -> None:
        """:meth:`record_batch` with positional arguments (the worker's call, once per batch)."""
        if not self.enabled:
            return
        with self._record_lock:  # several workers may finish batches at once
            self._processing_ms.record((end_ns - start_ns) / 1e6)
            self._batch_size.record(samples)
            self._queue_length.record(queue_length)
            self._batch_start_s.record(start_ns / 1e9)
            self._last_end_s = end_ns / 1e9
            self._queue_ms.record_elapsed_ms(enqueue_ns, start_ns)
            self._latency_ms.record_elapsed_ms(enqueue_ns, end_ns)
            self._processing_h.observe((end_ns - start_ns) / 1e9)
            self._size_h.observe(samples)
            self._queue_h.observe_elapsed(enqueue_ns, start_ns, 1e-9)
            self._latency_h.observe_elapsed(enqueue_ns, end_ns, 1e-9)

    def update(
        self,
        processing_time: float,
        batch_size: int,
        queue_time: float | Sequence[float],
        latency: float | Sequence[float],
        queue_length: int,
    ) -> None:
        """Classic API: record a batch from times in seconds (per-item or one for all)."""
        end_s = _backend.monotonic_ns() / 1e9
        self.counters.add(batches=1, processed=batch_size, samples=batch_size)
        if not self.enabled:
            return
        with self._record_lock:
            self._update(end_s, processing_time, batch_size, queue_time, latency, queue_length)

    def _update(self, end_s: float, processing_time: float, batch_size: int,
                queue_time: float | Sequence[float], latency: float | Sequence[float],
                queue_length: int) -> None:
        self._processing_ms.record(processing_time * 1e3)
        self._batch_size.record(batch_size)
        self._queue_length.record(queue_length)
        self._batch_start_s.record(end_s - processing_time)
        self._last_end_s = end_s
        queue_s = np.atleast_1d(np.asarray(queue_time, dtype=np.float64))
        latency_s = np.atleast_1d(np.asarray(latency, dtype=np.float64))
        self._queue_ms.record_many(queue_s * 1e3)
        self._latency_ms.record_many(latency_s * 1e3)
        self._processing_h.observe(processing_time)
        self._size_h.observe(batch_size)
        for h, values in ((self._queue_h, queue_s), (self._latency_h, latency_s)):
            for v in values.tolist():
                h.observe(v)

    def reset_after_fork(self) -> None:
        """In a forked child a lock may be held by a parent thread that no longer exists:
        the histograms start again from zero (the child has processed nothing yet)."""
        self._make_histograms(self._latency_h.bounds, self._size_h.bounds)
        self.arrivals.reset_after_fork()
        self._record_lock = threading.Lock()

    def _make_histograms(self, times: Sequence[float], sizes: Sequence[float]) -> None:
        histogram = _backend.Histogram
        self._latency_h, self._queue_h, self._processing_h = (histogram(times) for _ in range(3))
        self._size_h = histogram(sizes)
        self._histograms = {"item_latency_seconds": self._latency_h, "item_queue_time_seconds": self._queue_h,
                            "batch_processing_seconds": self._processing_h, "batch_size_samples": self._size_h}

    def get_histograms(self) -> dict[str, HistogramSnapshot]:
        """Each cumulative histogram (since creation), by name."""
        out = {}
        for name, h in self._histograms.items():
            counts, observations, total = h.snapshot()
            out[name] = HistogramSnapshot(h.bounds, counts, total, observations)
        return out

    def record_error(self, count: int = 1) -> None:
        """Classic API: count ``count`` failed items (thread-safe)."""
        self.counters.add(external_errors=count)

    def get_stats(self, counts: dict[str, Any] | None = None) -> dict[str, Any]:
        """Snapshot of the window statistics and counters as a plain dict.

        ``counts``: a ``Counters.snapshot()`` already taken (the processor takes one for
        all of ``get_stats()``).
        """
        stats: dict[str, Any] = dict.fromkeys(WINDOW_KEYS, 0.0)
        stats.update(totals(self.counters.snapshot() if counts is None else counts))
        if not self.enabled:
            return stats
        # One core call for the five windows: one copy each, one computation (without
        # the GIL in the compiled core), no numpy call per window.
        windows = (self._processing_ms, self._batch_size, self._queue_ms, self._latency_ms,
                   self._queue_length)
        processing, sizes, queue_ms, latency, queue_length = type(self._latency_ms).summaries(
            windows, _WINDOW_QS)
        stats["avg_processing_time_ms"] = _num(processing[1])
        stats["p95_processing_time_ms"] = _num(processing[4][0])
        n_sizes, mean_size = sizes[0], sizes[1]
        if n_sizes:
            stats["avg_batch_size"] = mean_size
            stats["max_batch_size"] = int(sizes[3])
            stats["min_batch_size"] = int(sizes[2])
            span = self._last_end_s - float(self._batch_start_s.values()[0])
            # The window's sum as mean * count (the pairwise sum / n * n: within an ulp).
            stats["throughput"] = mean_size * n_sizes / span if span > 0 else 0.0
        stats["avg_queue_time_ms"] = _num(queue_ms[1])
        _, mean, _, _, (p50, p95, p99) = latency
        stats["avg_latency_ms"] = _num(mean)
        stats["p50_latency_ms"] = _num(p50)
        stats["p95_latency_ms"] = _num(p95)
        stats["p99_latency_ms"] = _num(p99)
        stats["avg_queue_length"] = _num(queue_length[1])
        stats["max_queue_length"] = int(_num(queue_length[3]))
        return stats

    def clear(self) -> None:
        """Forget the windows (counters are kept: they count since creation)."""
        for window in (self._processing_ms, self._batch_size, self._queue_length,
                       self._batch_start_s, self._queue_ms, self._latency_ms):
            window.clear()


def totals(c: dict[str, Any]) -> dict[str, Any]:
    """The ``get_stats()`` keys computed from a ``Counters.snapshot()``."""
    failed = c["failed"] + c["external_errors"]
    finished = c["processed"] + failed
    return {
        "batch_count": c["batches"],
        "total_processed": c["processed"],
        "total_samples": c["samples"],
        "total_failed": failed,
        "total_cancelled": c["cancelled"],
        "batch_errors": c["batch_errors"],
        "error_rate": failed / finished if finished else 0.0,
    }
