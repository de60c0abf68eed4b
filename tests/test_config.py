"""BatchProcessorConfig: every field, every rule, with messages naming field, value and rule."""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import pytest

import fastbatch
from fastbatch import BatchPriority, BatchProcessingStrategy, BatchProcessorConfig

SEED_FIELDS = [
    "initial_batch_size", "min_batch_size", "max_batch_size", "max_queue_size", "batch_timeout",
    "min_batch_interval", "max_retries", "retry_delay", "enable_priority_queue", "enable_monitoring",
    "monitoring_window", "enable_health_monitoring", "health_check_interval",
    "memory_warning_threshold", "memory_critical_threshold", "queue_warning_threshold",
    "queue_critical_threshold", "enable_memory_optimization", "gc_batch_threshold",
]
ORIGINAL_FIELDS = ["item_timeout", "max_workers", "max_batch_memory_mb", "processing_strategy",
                   "enable_adaptive_batching", "reduce_batch_on_failure", "debug_mode"]


def test_every_field_exists_with_documented_defaults():
    config = BatchProcessorConfig()
    for name in SEED_FIELDS + ORIGINAL_FIELDS:
        assert hasattr(config, name), name
    assert (config.initial_batch_size, config.min_batch_size, config.max_batch_size) == (100, 50, 200)
    assert config.max_queue_size == 1000 and config.batch_timeout == 0.01
    assert config.memory_warning_threshold == 70.0 and config.memory_critical_threshold == 85.0
    assert config.queue_warning_threshold == 100 and config.queue_critical_threshold == 500
    assert config.gc_batch_threshold == 32 and config.max_workers == 4 and config.item_timeout == 10.0
    assert config.processing_strategy is BatchProcessingStrategy.ADAPTIVE


@pytest.mark.parametrize("given, expected", [
    # (the sizes given, (min, initial, max) that follow)
    (dict(), (50, 100, 200)),
    (dict(max_batch_size=64), (50, 64, 64)),
    (dict(max_batch_size=8), (8, 8, 8)),
    (dict(max_batch_size=1000), (50, 1000, 1000)),
    (dict(initial_batch_size=300), (50, 300, 300)),
    (dict(initial_batch_size=10), (10, 10, 200)),
    (dict(min_batch_size=300), (300, 300, 300)),
    (dict(min_batch_size=1, max_batch_size=4), (1, 4, 4)),
    (dict(initial_batch_size=16, max_batch_size=64), (16, 16, 64)),
])
def test_sizes_not_given_follow_from_those_given(given, expected):
    config = BatchProcessorConfig(**given)
    assert (config.min_batch_size, config.initial_batch_size, config.max_batch_size) == expected
    # The resolved config round-trips: every size is now explicit and consistent.
    import dataclasses
    again = dataclasses.replace(config)
    assert (again.min_batch_size, again.initial_batch_size, again.max_batch_size) == expected


def test_seed_example_config_is_accepted():
    BatchProcessorConfig(
        initial_batch_size=100, min_batch_size=50, max_batch_size=200, max_queue_size=1000,
        batch_timeout=1.0, min_batch_interval=0.1, max_retries=3, retry_delay=0.5,
        enable_priority_queue=True, enable_monitoring=True, monitoring_window=100,
        enable_health_monitoring=True, health_check_interval=10.0, memory_warning_threshold=80.0,
        memory_critical_threshold=90.0, queue_warning_threshold=500, queue_critical_threshold=800,
        enable_memory_optimization=True, gc_batch_threshold=100)


BAD = [
    # (fields, exception, message fragment)
    (dict(initial_batch_size=0, min_batch_size=1), ValueError, "initial_batch_size=0: must be >= 1"),
    (dict(min_batch_size=0), ValueError, "min_batch_size=0: must be >= 1"),
    (dict(max_batch_size=-5), ValueError, "max_batch_size=-5: must be >= 1"),
    (dict(initial_batch_size=300, max_batch_size=200), ValueError,
     "initial_batch_size=300: must satisfy min_batch_size (50) <= initial_batch_size <= max_batch_size (200)"),
    (dict(initial_batch_size=10, min_batch_size=50), ValueError,
     "initial_batch_size=10: must satisfy min_batch_size (50)"),
    (dict(min_batch_size=100, max_batch_size=64), ValueError,
     "min_batch_size=100: must be <= max_batch_size (64)"),
    (dict(min_batch_size=300, initial_batch_size=300, max_batch_size=200), ValueError, "max_batch_size (200)"),
    (dict(shutdown_timeout=-1), ValueError, "shutdown_timeout=-1: must be >= 0"),
    (dict(shutdown_timeout=None), TypeError, "shutdown_timeout=None: must be a number"),
    (dict(initial_batch_size=100.0), TypeError, "initial_batch_size=100.0: must be an int"),
    (dict(max_batch_size=True), TypeError, "must be an int"),
    (dict(max_queue_size=-1), ValueError, "max_queue_size=-1: must be >= 0"),
    (dict(max_queue_size="10"), TypeError, "max_queue_size='10'"),
    (dict(batch_timeout=-0.1), ValueError, "batch_timeout=-0.1: must be >= 0"),
    (dict(batch_timeout=math.nan), ValueError, "batch_timeout=nan: must be finite"),
    (dict(batch_timeout=math.inf), ValueError, "must be finite"),
    (dict(batch_timeout="1"), TypeError, "batch_timeout='1': must be a number"),
    (dict(min_batch_interval=-1), ValueError, "min_batch_interval=-1"),
    (dict(max_retries=-1), ValueError, "max_retries=-1: must be >= 0"),
    (dict(retry_delay=-1.0), ValueError, "retry_delay=-1.0"),
    (dict(monitoring_window=0), ValueError, "monitoring_window=0"),
    (dict(health_check_interval=0), ValueError, "health_check_interval=0: must be > 0"),
    (dict(memory_warning_threshold=90.0), ValueError, "must be < memory_critical_threshold (85.0)"),
    (dict(memory_critical_threshold=150.0), ValueError, "percentage of RAM and must be <= 100"),
    (dict(memory_warning_threshold=0), ValueError, "memory_warning_threshold=0: must be > 0"),
    (dict(queue_warning_threshold=500), ValueError, "must be < queue_critical_threshold (500)"),
    (dict(queue_critical_threshold=0), ValueError, "queue_critical_threshold=0"),
    (dict(gc_batch_threshold=0), ValueError, "gc_batch_threshold=0"),
    (dict(item_timeout=0), ValueError, "item_timeout=0: must be > 0"),
    (dict(max_workers=0), ValueError, "max_workers=0"),
    (dict(max_batch_memory_mb=0), ValueError, "max_batch_memory_mb=0: must be > 0"),
    (dict(max_batch_memory_mb=-1.0), ValueError, "max_batch_memory_mb=-1.0"),
    (dict(processing_strategy="fastest"), ValueError, "must be one of fixed, adaptive, greedy, balanced"),
    (dict(processing_strategy=3), TypeError, "must be a BatchProcessingStrategy"),
    (dict(enable_priority_queue=1), TypeError, "enable_priority_queue=1: must be a bool"),
    (dict(debug_mode="yes"), TypeError, "debug_mode='yes': must be a bool"),
    (dict(stuck_batch_timeout=0), ValueError, "stuck_batch_timeout=0"),
    (dict(default_deadline=0), ValueError, "default_deadline=0: must be > 0"),
    (dict(default_deadline="soon"), TypeError, "default_deadline='soon': must be a number"),
    (dict(isolation_budget=-1), ValueError, "isolation_budget=-1: must be >= 0"),
    (dict(isolate_failures=None), TypeError, "isolate_failures=None: must be a bool"),
]


@pytest.mark.parametrize("fields, error, message", BAD, ids=[str(sorted(b[0])) + str(i) for i, b in enumerate(BAD)])
def test_bad_config_refused_with_a_clear_message(fields, error, message):
    with pytest.raises(error) as info:
        BatchProcessorConfig(**fields)
    assert message in str(info.value)
    assert "BatchProcessorConfig." in str(info.value)


def test_invalid_config_starts_no_thread():
    config = BatchProcessorConfig()
    config.max_batch_size = 10  # now initial (100) > max: caught again by the processor
    before = threading.active_count()
    with pytest.raises(ValueError, match="initial_batch_size"):
        fastbatch.BatchProcessor(config)
    with pytest.raises(TypeError, match="BatchProcessorConfig"):
        fastbatch.BatchProcessor({"max_batch_size": 10})
    assert threading.active_count() == before


def test_strategy_by_name_and_adaptive_switch():
    assert BatchProcessorConfig(processing_strategy="GREEDY").processing_strategy is BatchProcessingStrategy.GREEDY
    off = BatchProcessorConfig(enable_adaptive_batching=False)
    assert off.effective_strategy is BatchProcessingStrategy.FIXED
    assert BatchProcessorConfig(max_batch_memory_mb=1).max_batch_bytes == 1024 * 1024
    assert BatchProcessorConfig().max_batch_bytes == 0


def test_priority_values():
    assert [p.value for p in BatchPriority] == [0, 1, 2, 3, 4]
    assert BatchPriority.CRITICAL < BatchPriority.BACKGROUND


def test_public_names():
    for name in ("BatchProcessor", "BatchProcessorConfig", "BatchPriority", "BatchProcessingStrategy",
                 "BatchStats", "QueueFullError", "ProcessorStoppedError"):
        assert name in fastbatch.__all__ and hasattr(fastbatch, name)


def test_demo_runs_and_prints_its_stats():
    out = subprocess.run([sys.executable, "-m", "fastbatch", "demo", "--items", "300", "--producers", "4"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "1000/1000 results correct" in out.stdout
    assert "speed-up from batching" in out.stdout and "p99" in out.stdout
    assert out.stderr == ""
