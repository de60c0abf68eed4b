"""The Prometheus exporter, scraped and parsed with prometheus_client's own parsers."""

from __future__ import annotations

import gc
import math
import threading
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

import fastbatch
import fastbatch.metrics
from fastbatch.observe import _metrics

COUNTERS = {
    "fastbatch_items_submitted": "total_submitted",
    "fastbatch_items_processed": "total_processed",
    "fastbatch_items_failed": "total_failed",
    "fastbatch_items_cancelled": "total_cancelled",
    "fastbatch_items_refused": "total_refused",
    "fastbatch_items_expired": "total_expired",
    "fastbatch_samples_processed": "total_samples",
    "fastbatch_batches": "batch_count",
    "fastbatch_batch_errors": "batch_errors",
}
MS = 1e-3
GAUGES = {
    "fastbatch_queue_size": ("queue_size", 1),
    "fastbatch_active_batches": ("active_batches", 1),
    "fastbatch_current_batch_size": ("current_batch_size", 1),
    "fastbatch_system_load": ("system_load", 1),
    "fastbatch_throughput_samples_per_second": ("throughput", 1),
    "fastbatch_arrival_rate_items_per_second": ("arrival_rate", 1),
    "fastbatch_running": ("is_running", 1),
    "fastbatch_paused": ("is_paused", 1),
    "fastbatch_batch_size_avg": ("avg_batch_size", 1),
    "fastbatch_batch_size_max": ("max_batch_size", 1),
    "fastbatch_batch_size_min": ("min_batch_size", 1),
    "fastbatch_queue_length_avg": ("avg_queue_length", 1),
    "fastbatch_queue_length_max": ("max_queue_length", 1),
    "fastbatch_item_latency_avg_seconds": ("avg_latency_ms", MS),
    "fastbatch_item_queue_time_avg_seconds": ("avg_queue_time_ms", MS),
    "fastbatch_batch_processing_avg_seconds": ("avg_processing_time_ms", MS),
}
WINDOW_QUANTILES = {
    "fastbatch_item_latency_window_seconds": {"0.5": "p50_latency_ms", "0.95": "p95_latency_ms",
                                              "0.99": "p99_latency_ms"},
    "fastbatch_batch_processing_window_seconds": {"0.95": "p95_processing_time_ms"},
}
HISTOGRAMS = {"fastbatch_item_latency_seconds", "fastbatch_item_queue_time_seconds",
              "fastbatch_batch_processing_seconds", "fastbatch_batch_size_samples"}
INFO = "fastbatch_processor_info"


def row(tag: float) -> np.ndarray:
    return np.full(3, float(tag))


def scrape(registry: CollectorRegistry) -> dict[str, Any]:
    """Families by name, through the text format and its parser (as Prometheus reads it)."""
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, processor: str, **labels: str) -> float:
    found = [s.value for s in families[family].samples
             if s.labels == {"processor": processor, **labels}]
    assert len(found) == 1, (family, processor, labels, families[family].samples)
    return float(found[0])


def hsample(families: dict[str, Any], family: str, suffix: str, processor: str, **labels: str) -> float:
    """One sample (``_bucket``, ``_sum`` or ``_count``) of a histogram family."""
    found = [s.value for s in families[family].samples
             if s.name == family + suffix and s.labels == {"processor": processor, **labels}]
    assert len(found) == 1, (family, suffix, processor, labels)
    return float(found[0])


def busy_processors(make_processor: Any, gate: Any) -> tuple[Any, Any]:
    """'alpha' with successes, a cancelled and a refused item; 'beta' whose batches fail."""
    alpha = make_processor(gate, name="alpha", max_queue_size=2, max_batch_size=1)
    gate.hold()
    futures = [alpha.enqueue_predict(row(1))]
    assert gate.entered.wait(5)
    futures += [alpha.enqueue_predict(row(2)), alpha.enqueue_predict(row(3))]
    assert futures[2].cancel()
    refused = alpha.enqueue_predict(row(4), timeout=0)
    assert isinstance(refused.exception(0), fastbatch.QueueFullError)
    gate.release.set()
    futures += [alpha.enqueue_predict(row(i)) for i in range(5, 15)]
    for f in futures:
        assert f.cancelled() or f.result(5) is not None

    def fail(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("down")

    beta = make_processor(fail, name="beta", max_retries=1)
    for i in range(3):
        with pytest.raises(RuntimeError):
            beta.enqueue_predict(row(i)).result(5)
    alpha.stop()  # quiescent: the statistics no longer move
    beta.stop()
    return alpha, beta


def test_families_types_labels_and_values(make_processor: Any, gate: Any) -> None:
    alpha, beta = busy_processors(make_processor, gate)
    registry = CollectorRegistry()
    fastbatch.metrics.register(alpha, beta, registry=registry)
    families = scrape(registry)

    assert set(families) == {*COUNTERS, *GAUGES, *WINDOW_QUANTILES, *HISTOGRAMS, INFO}
    for name in COUNTERS:
        assert families[name].type == "counter", name
    for name in (*GAUGES, *WINDOW_QUANTILES):
        assert families[name].type == "gauge", name
    for name in HISTOGRAMS:
        assert families[name].type == "histogram", name
    for family in families.values():
        assert family.documentation, family.name
        for s in family.samples:
            assert s.labels["processor"] in ("alpha", "beta"), s

    for processor in (alpha, beta):
        stats, name = processor.get_stats(), processor.name
        for family, key in COUNTERS.items():
            if key in stats:
                assert sample(families, family, name) == stats[key], family
        for family, (key, scale) in GAUGES.items():
            if key == "arrival_rate":  # a rate over time: it falls while nothing arrives
                assert sample(families, family, name) >= stats[key] > 0, family
                continue
            assert sample(families, family, name) == pytest.approx(float(stats[key]) * scale), family
        for family, quantiles in WINDOW_QUANTILES.items():
            assert {s.labels["quantile"] for s in families[family].samples
                    if s.labels["processor"] == name} == set(quantiles)
            for quantile, key in quantiles.items():
                assert sample(families, family, name, quantile=quantile) == pytest.approx(stats[key] * MS)
        assert sample(families, INFO, name, core=stats["core"]) == 1.0

    a = alpha.get_stats()
    assert (a["total_processed"], a["total_cancelled"], a["total_refused"]) == (12, 1, 1)
    assert sample(families, "fastbatch_items_failed", "beta") == 3
    assert sample(families, "fastbatch_batch_errors", "beta") == 2 * beta.get_stats()["batch_count"]
    assert sample(families, "fastbatch_item_latency_window_seconds", "alpha", quantile="0.99") > 0
    # The histograms count every item and batch since creation, with sums that add up.
    for processor in (alpha, beta):
        stats, name = processor.get_stats(), processor.name
        settled = stats["total_processed"] + stats["total_failed"]
        assert hsample(families, "fastbatch_item_latency_seconds", "_count", name) == settled
        assert hsample(families, "fastbatch_batch_processing_seconds", "_count", name) == stats["batch_count"]
        assert hsample(families, "fastbatch_batch_size_samples", "_count", name) == stats["batch_count"]
        assert hsample(families, "fastbatch_batch_size_samples", "_sum", name) == settled
        assert hsample(families, "fastbatch_item_latency_seconds", "_bucket", name, le="+Inf") == settled
        bounds = processor.config.size_buckets
        assert hsample(families, "fastbatch_batch_size_samples", "_bucket", name, le=str(float(bounds[0]))) \
            == stats["batch_count"]  # max_batch_size=1 / default sizes: every batch is small
        latencies = [s for s in families["fastbatch_item_latency_seconds"].samples
                     if s.name.endswith("_bucket") and s.labels["processor"] == name]
        values = [s.value for s in latencies]
        assert values == sorted(values), "buckets are cumulative"
        assert hsample(families, "fastbatch_item_latency_seconds", "_sum", name) > 0


def test_openmetrics_exposition_parses(make_processor: Any, gate: Any) -> None:
    alpha, _ = busy_processors(make_processor, gate)
    registry = CollectorRegistry()
    fastbatch.metrics.register(alpha, registry=registry)
    text = om_exposition.generate_latest(registry).decode()
    families = {f.name: f for f in om_parser.text_string_to_metric_families(text)}
    assert families["fastbatch_items_processed"].type == "counter"
    assert families["fastbatch_item_latency_seconds"].unit == "seconds"
    assert families["fastbatch_item_latency_seconds"].type == "histogram"
    assert families["fastbatch_batch_size_samples"].unit == "samples"
    assert families["fastbatch_processor"].type == "info"


def test_an_idle_processor_exports_nan_for_empty_windows(make_processor: Any) -> None:
    idle = make_processor(lambda b: b, name="idle")
    registry = CollectorRegistry()
    fastbatch.metrics.register(idle, registry=registry)
    families = scrape(registry)
    assert sample(families, "fastbatch_items_processed", "idle") == 0
    assert sample(families, "fastbatch_running", "idle") == 1
    assert sample(families, "fastbatch_throughput_samples_per_second", "idle") == 0
    assert math.isnan(sample(families, "fastbatch_batch_size_avg", "idle"))
    assert math.isnan(sample(families, "fastbatch_item_latency_window_seconds", "idle", quantile="0.5"))


def test_scrapes_under_load_see_counters_only_grow(make_processor: Any) -> None:
    p = make_processor(lambda b: b * 2, name="load")
    registry = CollectorRegistry()
    fastbatch.metrics.register(p, registry=registry)
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            p.enqueue_predict(row(i)).result(5)
            i += 1

    producers = [threading.Thread(target=produce, name=f"test-produce-{i}") for i in range(4)]
    for t in producers:
        t.start()
    try:
        last: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        scrapes, give_up = 0, time.monotonic() + 10
        # At least 30 scrapes, and on until some batches have finished meanwhile.
        while (scrapes < 30 or last["fastbatch_items_processed"] < 20) and time.monotonic() < give_up:
            scrapes += 1
            families = scrape(registry)
            for name in COUNTERS:
                if families[name].samples:
                    value = sample(families, name, "load")
                    assert value >= last[name], name
                    last[name] = value
    finally:
        stop.set()
        for t in producers:
            t.join(5)
    assert last["fastbatch_items_processed"] > 0


def test_register_keeps_one_collector_per_registry(make_processor: Any) -> None:
    registry = CollectorRegistry()
    one, two = make_processor(name="one"), make_processor(name="two")
    collector = fastbatch.metrics.register(one, registry=registry)
    assert fastbatch.metrics.register(two, registry=registry) is collector
    assert fastbatch.metrics.register(two, registry=registry) is collector  # again: no-op
    assert {s.labels["processor"] for s in scrape(registry)["fastbatch_running"].samples} == {"one", "two"}

    with pytest.raises(ValueError, match="named 'one'"):
        fastbatch.metrics.register(make_processor(name="one"), registry=registry)
    with pytest.raises(TypeError, match="BatchProcessor"):
        fastbatch.metrics.register(object(), registry=registry)

    collector.remove(one)
    assert {s.labels["processor"] for s in scrape(registry)["fastbatch_running"].samples} == {"two"}


def test_processors_are_held_weakly(backend: Any) -> None:
    registry = CollectorRegistry()
    gone = fastbatch.BatchProcessor(name="gone")
    collector = fastbatch.metrics.register(gone, registry=registry)
    del gone
    gc.collect()
    assert collector.processors() == []
    assert scrape(registry)["fastbatch_running"].samples == []


def test_a_batched_function_can_be_registered(make_batched: Any) -> None:
    fn = make_batched(lambda b: b + 1, name="decorated")
    registry = CollectorRegistry()
    fastbatch.metrics.register(fn, registry=registry)
    fn(row(1))
    fn.stop()
    assert sample(scrape(registry), "fastbatch_items_processed", "decorated") == 1


def test_default_registry(make_processor: Any) -> None:
    p = make_processor(lambda b: b, name="on-default-registry")
    collector = fastbatch.metrics.register(p)
    try:
        assert b'fastbatch_running{processor="on-default-registry"} 1.0' in generate_latest()
    finally:
        REGISTRY.unregister(collector)
        _metrics._registered.pop(REGISTRY)


def test_a_collector_can_be_registered_by_hand(make_processor: Any) -> None:
    registry = CollectorRegistry()
    registry.register(fastbatch.metrics.PrometheusCollector([make_processor(name="manual")]))
    assert sample(scrape(registry), "fastbatch_running", "manual") == 0


def test_the_example_dashboard_queries_only_exported_series(make_processor: Any, gate: Any) -> None:
    import json
    import pathlib
    import re

    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"
    if not path.is_file():
        pytest.skip("needs the source checkout's examples/")
    alpha, _ = busy_processors(make_processor, gate)
    registry = CollectorRegistry()
    fastbatch.metrics.register(alpha, registry=registry)
    exported = {s.name for family in scrape(registry).values() for s in family.samples}
    dashboard = json.loads(path.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries.append(dashboard["templating"]["list"][1]["query"]["query"])
    assert len(queries) > 10
    for query in queries:
        for name in re.findall(r"fastbatch_[a-z_]+", query):
            assert name in exported, f"{name} in {query!r} is not exported"
