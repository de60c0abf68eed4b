"""fastbatch: in-process dynamic batching with a compiled core.

Producers on any thread call :meth:`BatchProcessor.enqueue_predict` and get a future; a
worker thread forms batches by size or timeout, calls the batch function once per batch
and hands each future its rows of the result.
"""

from ._config import BatchPriority, BatchProcessingStrategy, BatchProcessorConfig
from ._decorator import batch
from ._errors import (
    BatchDtypeError,
    BatchFunctionExit,
    BatchShapeError,
    FastBatchError,
    ItemExpiredError,
    ItemTimeoutError,
    ProcessorStoppedError,
    QueueClosedError,
    QueueFullError,
    ResultMismatchError,
    SelfWaitError,
    OverloadedError,
    TooManyLanesError,
)
from ._future import BatchFuture
from ._processor import BatchProcessor
from .items._padded import PaddedBatch
from .observe._histograms import HistogramSnapshot
from .observe._stats import BatchStats
from .runtime._health import HealthSnapshot

__version__ = "0.1.0"

__all__ = [
    "BatchDtypeError",
    "BatchFunctionExit",
    "BatchFuture",
    "BatchPriority",
    "BatchProcessingStrategy",
    "BatchProcessor",
    "BatchProcessorConfig",
    "BatchShapeError",
    "BatchStats",
    "FastBatchError",
    "HealthSnapshot",
    "HistogramSnapshot",
    "ItemExpiredError",
    "ItemTimeoutError",
    "PaddedBatch",
    "ProcessorStoppedError",
    "QueueClosedError",
    "QueueFullError",
    "ResultMismatchError",
    "SelfWaitError",
    "OverloadedError",
    "TooManyLanesError",
    "__version__",
    "batch",
]
