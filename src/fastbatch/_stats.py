"""Statistics: ``BatchStats`` keeps the windows and counters behind ``get_stats()``.

The worker is the only writer of the windows and of the completion counters; readers get
snapshots computed by the core's ``StatsWindow`` (copy under a short lock, percentiles
outside it), so reading statistics never stalls the worker.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _backend

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
    """Processing statistics over the last ``window`` batches (seed API kept).

    Args:
        window: number of batches the per-batch windows hold (``monitoring_window``).
        item_window: number of items the per-item latency windows hold; by default
            ``window * 100`` capped at 10,000.
        enabled: when False, nothing is recorded in the windows (counters still count).
    """

    def __init__(self, window: int = 100, item_window: int | None = None, enabled: bool = True) -> None:
        if item_window is None:
            item_window = min(_ITEM_WINDOW_CAP, window * 100)
        core = _backend
        self.enabled = enabled
        self._processing_ms = core.StatsWindow(window)
        self._batch_size = core.StatsWindow(window)
        self._queue_length = core.StatsWindow(window)
        self._batch_start_s = core.StatsWindow(window)
        self._queue_ms = core.StatsWindow(item_window)
        self._latency_ms = core.StatsWindow(item_window)
        self._last_end_s = math.nan
        # Completion counters: written by the worker only.
        self.batch_count = 0
        self.total_processed = 0
        self.total_samples = 0
        self.total_failed = 0
        self.total_cancelled = 0
        self.batch_errors = 0
        # Written from any thread (record_error from user code, refusals by producers).
        self._lock = threading.Lock()
        self._external_errors = 0
        self._external_cancelled = 0
        self.expired_dropped = 0  # expired items taken out of the queue (never run)

    def count_batch(self, samples: int, processed: int, failed: int) -> None:
        """Count a batch's outcome; the worker calls it *before* resolving the futures,
        so that whoever sees a result also sees it counted."""
        self.batch_count += 1
        self.total_processed += processed
        self.total_failed += failed
        if processed:
            self.total_samples += samples

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
        if not self.enabled:
            return
        self._processing_ms.record((end_ns - start_ns) / 1e6)
        self._batch_size.record(samples)
        self._queue_length.record(queue_length)
        self._batch_start_s.record(start_ns / 1e9)
        self._last_end_s = end_ns / 1e9
        self._queue_ms.record_elapsed_ms(enqueue_ns, start_ns)
        self._latency_ms.record_elapsed_ms(enqueue_ns, end_ns)

    def update(
        self,
        processing_time: float,
        batch_size: int,
        queue_time: float | Sequence[float],
        latency: float | Sequence[float],
        queue_length: int,
    ) -> None:
        """Seed API: record a batch from times in seconds (per-item or one for all)."""
        end_s = _backend.monotonic_ns() / 1e9
        self.batch_count += 1
        self.total_processed += batch_size
        self.total_samples += batch_size
        if not self.enabled:
            return
        self._processing_ms.record(processing_time * 1e3)
        self._batch_size.record(batch_size)
        self._queue_length.record(queue_length)
        self._batch_start_s.record(end_s - processing_time)
        self._last_end_s = end_s
        self._queue_ms.record_many(np.atleast_1d(np.asarray(queue_time, dtype=np.float64)) * 1e3)
        self._latency_ms.record_many(np.atleast_1d(np.asarray(latency, dtype=np.float64)) * 1e3)

    def record_error(self, count: int = 1) -> None:
        """Seed API: count ``count`` failed items (thread-safe)."""
        with self._lock:
            self._external_errors += count

    def correct(self, processed: int, failed: int) -> None:
        """Take back counts ``count_batch`` predicted for futures ``stop`` failed first."""
        self.total_processed += processed
        self.total_failed += failed

    def record_cancelled(self, count: int) -> None:
        """Count cancelled items taken out of the queue by ``stop`` (thread-safe)."""
        if count:
            with self._lock:
                self._external_cancelled += count

    def record_dropped(self, count: int) -> None:
        """Count expired items taken out of the queue without running (thread-safe)."""
        if count:
            with self._lock:
                self.expired_dropped += count

    def get_stats(self) -> dict[str, Any]:
        """Snapshot of the window statistics and counters as a plain dict."""
        stats: dict[str, Any] = dict.fromkeys(WINDOW_KEYS, 0.0)
        failed = self.total_failed + self._external_errors
        finished = self.total_processed + failed
        stats.update(
            batch_count=self.batch_count,
            total_processed=self.total_processed,
            total_samples=self.total_samples,
            total_failed=failed,
            total_cancelled=self.total_cancelled + self._external_cancelled,
            batch_errors=self.batch_errors,
            error_rate=failed / finished if finished else 0.0,
        )
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
