"""The seed document's examples, pasted with fastbatch imports, give correct results."""

from __future__ import annotations

import numpy as np

from fastbatch import BatchProcessor, BatchProcessorConfig


def seed_config() -> BatchProcessorConfig:
    # Verbatim from the seed's "Initialization" section (health monitor off only to keep
    # the test's thread count fixed; the value does not change the batching).
    return BatchProcessorConfig(
        initial_batch_size=100,
        min_batch_size=50,
        max_batch_size=200,
        max_queue_size=1000,
        batch_timeout=1.0,
        min_batch_interval=0.1,
        max_retries=3,
        retry_delay=0.5,
        enable_priority_queue=True,
        enable_monitoring=True,
        monitoring_window=100,
        enable_health_monitoring=True,
        health_check_interval=10.0,
        memory_warning_threshold=80.0,
        memory_critical_threshold=90.0,
        queue_warning_threshold=500,
        queue_critical_threshold=800,
        enable_memory_optimization=True,
        gc_batch_threshold=100,
    )


def test_seed_usage_sections():
    processor = BatchProcessor(seed_config())

    def process_batch(batch: np.ndarray) -> np.ndarray:
        return batch * 2

    processor.start(process_batch)
    processor.enqueue(np.array([1, 2, 3]))
    future = processor.enqueue_predict(np.array([4, 5, 6]))
    result = future.result()
    assert result.tolist() == [8, 10, 12]
    processor.stop(timeout=5.0)
    stats = processor.get_stats()
    assert stats["total_processed"] == 2 and stats["error_rate"] == 0.0


def test_seed_example_use_case(capsys):
    def process_batch(batch: np.ndarray) -> np.ndarray:
        return batch * 2

    seen = []
    processor = BatchProcessor(seed_config())
    processor.start(lambda batch: seen.append(batch.copy()) or process_batch(batch))
    for i in range(1000):
        item = np.random.rand(10)
        processor.enqueue(item)
    stats = processor.get_stats()
    print("Processing Statistics:", stats)
    processor.stop(timeout=5.0)

    assert "Processing Statistics: {" in capsys.readouterr().out
    # stop() drained the queue: every row went through the function exactly once.
    assert sum(len(b) for b in seen) == 1000
    assert all(b.shape[1:] == (10,) and len(b) <= 200 for b in seen)
    final = processor.get_stats()
    assert final["total_processed"] == 1000 and final["batch_count"] == len(seen)
