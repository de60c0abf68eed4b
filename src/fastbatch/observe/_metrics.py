"""Prometheus exporter: a custom collector that turns ``get_stats()`` into metric families.

Needs ``prometheus_client`` (``pip install 'fastbatch[prometheus]'``); nothing else in
fastbatch imports this module, so ``import fastbatch`` never imports prometheus_client.

Every family is labelled ``processor=<name>``. Three kinds:

- counters: the since-creation totals (``*_total``);
- histograms (``_bucket``/``_sum``/``_count``, since creation) of item latency, item queue
  time, batch processing time and batch size, which sum across processes and replicas
  (``histogram_quantile(0.99, sum by (le) (rate(..._bucket[5m])))``); their bounds are the
  config's ``latency_buckets`` / ``batch_size_buckets``;
- gauges of the current state and of the statistics window (the last
  ``monitoring_window`` batches), percentiles of the window as a ``quantile`` label.

A window with nothing in it (no batch yet, ``enable_monitoring=False``) is exported as NaN
rather than as a misleading 0. ``fastbatch_processor_info`` is an info metric (typed
``info`` in OpenMetrics; the classic text format has no such type and shows a gauge of 1).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
        Metric,
    )
    from prometheus_client.samples import Sample
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the fastbatch Prometheus exporter needs prometheus_client: "
                      "pip install 'fastbatch[prometheus]'") from exc

from .._processor import BatchProcessor
from ._stats import WINDOW_KEYS

__all__ = ["PrometheusCollector", "register"]

_LABELS = ("processor",)
_MS = 1e-3  # get_stats() reports milliseconds; Prometheus wants seconds

# (family name without the prefix and "_total", get_stats key, help)
_COUNTERS = (
    ("items_submitted", "total_submitted", "Items accepted into the queue."),
    ("items_processed", "total_processed", "Items completed successfully."),
    ("items_failed", "total_failed",
     "Items that failed: the batch function raised, a result mismatch, item_timeout, a stop."),
    ("items_cancelled", "total_cancelled", "Items whose future was cancelled before their batch formed."),
    ("items_refused", "total_refused", "Items refused because the queue stayed full."),
    ("items_expired", "total_expired", "Items whose deadline passed while they were queued."),
    ("samples_processed", "total_samples", "Samples in batches that succeeded."),
    ("batches", "batch_count", "Batches run."),
    ("batch_errors", "batch_errors", "Failed attempts of the batch function, retries included."),
)
# (family name, get_stats key, scale, unit, help)
_GAUGES = (
    ("queue_size", "queue_size", 1.0, "", "Items queued now."),
    ("active_batches", "active_batches", 1.0, "", "Batches running now (up to max_concurrent_batches)."),
    ("current_batch_size", "current_batch_size", 1.0, "", "Samples the next batch aims for."),
    ("system_load", "system_load", 1.0, "",
     "Load: EMA of batch processing time over batch_timeout, capped at 1."),
    ("throughput_samples_per_second", "throughput", 1.0, "",
     "Samples processed per second of wall time over the window."),
    ("arrival_rate_items_per_second", "arrival_rate", 1.0, "",
     "Items accepted per second over the last 10 s."),
    ("running", "is_running", 1.0, "", "1 between start() and stop()."),
    ("paused", "is_paused", 1.0, "", "1 while paused."),
    ("batch_size_avg", "avg_batch_size", 1.0, "", "Mean samples per batch over the window."),
    ("batch_size_max", "max_batch_size", 1.0, "", "Largest batch (samples) in the window."),
    ("batch_size_min", "min_batch_size", 1.0, "", "Smallest batch (samples) in the window."),
    ("queue_length_avg", "avg_queue_length", 1.0, "", "Mean items queued when a batch was taken."),
    ("queue_length_max", "max_queue_length", 1.0, "", "Most items queued when a batch was taken."),
    ("item_latency_avg_seconds", "avg_latency_ms", _MS, "seconds",
     "Mean per-item latency (enqueue to result) over the window."),
    ("item_queue_time_avg_seconds", "avg_queue_time_ms", _MS, "seconds",
     "Mean per-item wait from enqueue to its batch's start over the window."),
    ("batch_processing_avg_seconds", "avg_processing_time_ms", _MS, "seconds",
     "Mean batch duration (assembly, function with retries, split) over the window."),
)
# (family name, {quantile: get_stats key}, help): gauges with a quantile label.
_WINDOW_QUANTILES = (
    ("item_latency_window_seconds", {"0.5": "p50_latency_ms", "0.95": "p95_latency_ms",
                                     "0.99": "p99_latency_ms"},
     "Per-item latency percentiles, enqueue to result, over the window."),
    ("batch_processing_window_seconds", {"0.95": "p95_processing_time_ms"},
     "Batch duration percentiles over the window."),
)
# (family name = get_histograms() key, unit, help)
_HISTOGRAMS = (
    ("item_latency_seconds", "seconds", "Per-item latency, enqueue to result, since creation."),
    ("item_queue_time_seconds", "seconds", "Per-item wait from enqueue to its batch's start, since creation."),
    ("batch_processing_seconds", "seconds",
     "Batch duration (assembly, function with retries, split), since creation."),
    ("batch_size_samples", "samples", "Samples per batch, since creation."),
)
# Window keys that are a rate or a count rather than "no data" when the window is empty.
_ZERO_WHEN_EMPTY = frozenset({"throughput"})


def _value(stats: dict[str, Any], key: str, scale: float, empty_window: bool) -> float:
    if empty_window and key in WINDOW_KEYS and key not in _ZERO_WHEN_EMPTY:
        return math.nan
    return float(stats[key]) * scale


def _as_processor(obj: Any) -> BatchProcessor[Any, Any]:
    """A ``BatchProcessor``, or the one behind a ``@fastbatch.batch`` function."""
    if isinstance(obj, BatchProcessor):
        return obj
    processor = getattr(obj, "processor", None)
    if isinstance(processor, BatchProcessor):
        return processor
    raise TypeError(f"expected a BatchProcessor or a @fastbatch.batch function, not {type(obj).__name__}")


class PrometheusCollector:
    """Exports the statistics of one or more processors as Prometheus metric families.

    Register it on a registry (``registry.register(collector)``), or use
    :func:`register`, which keeps one collector per registry. Processors are held by weak
    reference: one that is garbage-collected drops out of the next scrape.

    Args:
        processors: ``BatchProcessor``s (or ``@fastbatch.batch`` functions) to export.

    Raises:
        TypeError: an object that is neither.
        ValueError: two processors with the same name (their series would collide).
    """

    def __init__(self, processors: Iterable[Any] = ()) -> None:
        self._lock = threading.Lock()
        self._refs: list[weakref.ref[BatchProcessor[Any, Any]]] = []
        for processor in processors:
            self.add(processor)

    def processors(self) -> list[BatchProcessor[Any, Any]]:
        """The live processors this collector exports."""
        with self._lock:
            alive = [p for p in (ref() for ref in self._refs) if p is not None]
            if len(alive) < len(self._refs):
                self._refs = [weakref.ref(p) for p in alive]
            return alive

    def add(self, processor: Any) -> None:
        """Export ``processor`` too (adding one already exported does nothing).

        Raises:
            TypeError: not a processor or a batched function.
            ValueError: another exported processor has the same name.
        """
        processor = _as_processor(processor)
        current = self.processors()
        with self._lock:
            if any(p is processor for p in current):
                return
            if any(p.name == processor.name for p in current):
                raise ValueError(f"a processor named {processor.name!r} is already exported; "
                                 "give processors distinct names (BatchProcessor(name=...))")
            self._refs.append(weakref.ref(processor))

    def remove(self, processor: Any) -> None:
        """Stop exporting ``processor`` (not exported: nothing happens)."""
        processor = _as_processor(processor)
        with self._lock:
            self._refs = [ref for ref in self._refs if ref() is not processor and ref() is not None]

    def describe(self) -> list[Metric]:
        """The families (without samples), so that registering costs no ``get_stats()``."""
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        """One snapshot of every exported processor, family by family (called per scrape)."""
        families = self._families()
        for processor in self.processors():
            stats = processor.get_stats()
            labels = [processor.name]
            empty = stats["avg_batch_size"] == 0  # a recorded batch has at least one sample
            for name, key, _ in _COUNTERS:
                if key in stats:  # total_expired: only where deadlines exist
                    families[name].add_metric(labels, float(stats[key]))
            for name, key, scale, _, _ in _GAUGES:
                families[name].add_metric(labels, _value(stats, key, scale, empty))
            for name, quantiles, _ in _WINDOW_QUANTILES:
                family = families[name]
                for quantile, key in quantiles.items():
                    family.samples.append(Sample(family.name, {"processor": processor.name,
                                                               "quantile": quantile},
                                                 _value(stats, key, _MS, empty)))
            histograms = processor.get_histograms()
            for name, _, _ in _HISTOGRAMS:
                h = histograms[name]
                buckets = [(repr(bound), float(count)) for bound, count in zip(h.bounds, h.counts)]
                buckets.append(("+Inf", float(h.observations)))
                families[name].add_metric(labels, buckets, h.sum)
            families["processor"].add_metric(labels, {"core": str(stats["core"])})
        yield from families.values()

    @staticmethod
    def _families() -> dict[str, Any]:
        # Any: each value is a *MetricFamily with its own add_metric signature.
        families: dict[str, Any] = {}
        for name, _, doc in _COUNTERS:
            families[name] = CounterMetricFamily(f"fastbatch_{name}", doc, labels=_LABELS)
        for name, _, _, unit, doc in _GAUGES:
            families[name] = GaugeMetricFamily(f"fastbatch_{name}", doc, labels=_LABELS, unit=unit)
        for name, _, doc in _WINDOW_QUANTILES:
            families[name] = GaugeMetricFamily(f"fastbatch_{name}", doc, labels=("processor", "quantile"),
                                               unit="seconds")
        for name, unit, doc in _HISTOGRAMS:
            families[name] = HistogramMetricFamily(f"fastbatch_{name}", doc, labels=_LABELS, unit=unit)
        families["processor"] = InfoMetricFamily("fastbatch_processor", "Which core a processor runs.",
                                                 labels=_LABELS)
        return families


_registered: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusCollector] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()


def register(*processors: Any, registry: CollectorRegistry | None = None) -> PrometheusCollector:
    """Export ``processors`` on ``registry`` (the default registry when omitted).

    One collector serves each registry: calling this again adds to it, so every
    processor can register itself wherever it is created.

    Args:
        *processors: ``BatchProcessor``s or ``@fastbatch.batch`` functions.
        registry: a ``prometheus_client.CollectorRegistry``; ``prometheus_client.REGISTRY``
            by default.

    Returns:
        The registry's collector (for ``remove()``).

    Raises:
        TypeError: an object that is neither a processor nor a batched function.
        ValueError: a processor's name is already exported on this registry.
    """
    if registry is None:
        registry = REGISTRY
    with _registered_lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = PrometheusCollector(processors)
            registry.register(collector)
            _registered[registry] = collector
            return collector
    for processor in processors:
        collector.add(processor)
    return collector
