"""Configuration and enums: ``BatchProcessorConfig``, ``BatchPriority``, ``BatchProcessingStrategy``.

The fields and defaults of the classic ``BatchProcessor`` API, plus a few of our own, each
validated at construction with an error that names the field, the value and the rule.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from .observe._histograms import check_buckets, default_size_buckets


class BatchPriority(enum.IntEnum):
    """Queue priority of an item; lower values are taken first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3
    BACKGROUND = 4


class BatchProcessingStrategy(enum.Enum):
    """How the batch size moves while the processor runs.

    FIXED: stays where ``initial_batch_size`` / ``update_batch_size`` put it.
    ADAPTIVE: the classic load rule, with a floor that keeps up with the arrival rate.
    GREEDY: always ``max_batch_size``; a batch is released by size or timeout as usual.
    BALANCED: follows the backlog: the size is what was waiting at the last batch,
    clamped to ``[min_batch_size, max_batch_size]``.
    """

    FIXED = "fixed"
    ADAPTIVE = "adaptive"
    GREEDY = "greedy"
    BALANCED = "balanced"


def _fail(exc: type[Exception], name: str, value: Any, rule: str) -> None:
    raise exc(f"BatchProcessorConfig.{name}={value!r}: {rule}")


# Upper bounds keep every value inside what the core's int64 counters and the stdlib's
# timed waits (threading.TIMEOUT_MAX, about 292 years) can represent.
_MAX_COUNT = 2**40
_MAX_SECONDS = 1e9
_MAX_MB = 2.0**30
#: One worker thread per batch in flight: a bound that keeps a typo from starting thousands.
MAX_CONCURRENT_BATCHES = 64


class _Unset:
    """The default of a batch size the caller did not give (resolved in ``__post_init__``)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()
# The sizes when none is given (the classic API's defaults).
_SIZE_DEFAULTS = {"initial_batch_size": 100, "min_batch_size": 50, "max_batch_size": 200}


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(TypeError, name, value, "must be an int")
    if value < minimum:
        _fail(ValueError, name, value, f"must be >= {minimum}")
    if value > _MAX_COUNT:
        _fail(ValueError, name, value, f"must be <= 2**40 ({_MAX_COUNT})")


def _check_float(name: str, value: Any, *, positive: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(TypeError, name, value, "must be a number")
    if not math.isfinite(value):
        _fail(ValueError, name, value, "must be finite")
    if positive and value <= 0:
        _fail(ValueError, name, value, "must be > 0")
    if value < 0:
        _fail(ValueError, name, value, "must be >= 0")
    limit = _MAX_MB if name == "max_batch_memory_mb" else _MAX_SECONDS
    if value > limit:
        _fail(ValueError, name, value, f"must be <= {limit:g}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(TypeError, name, value, "must be a bool")


@dataclasses.dataclass
class BatchProcessorConfig:
    """Settings of a :class:`~fastbatch.BatchProcessor`.

    Sizes count samples: a 1-D array item is one sample, an ``(n, ...)`` array is ``n``.
    Times are in seconds. Defaults are the classic API's except ``batch_timeout`` (0.01 s
    instead of 1.0 s: a one-second wait for a half-full batch surprises any
    latency-sensitive caller) and ``retry_delay`` (0.05 s instead of 0.5 s).

    The three sizes follow from the ones given: with none, they are 50 <= 100 <= 200; with
    only ``max_batch_size``, ``initial_batch_size`` is that maximum and ``min_batch_size``
    ``min(50, max_batch_size)``; in general a size not given is its default moved just
    enough to fit the given ones. Sizes given that contradict each other are refused.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a field breaks its rule (min <= initial <= max, warning < critical ...).
    """

    initial_batch_size: int = _UNSET
    min_batch_size: int = _UNSET
    max_batch_size: int = _UNSET
    max_queue_size: int = 1000
    batch_timeout: float = 0.01
    min_batch_interval: float = 0.0
    max_retries: int = 3
    retry_delay: float = 0.05
    enable_priority_queue: bool = True
    enable_monitoring: bool = True
    monitoring_window: int = 100
    enable_health_monitoring: bool = True
    health_check_interval: float = 5.0
    memory_warning_threshold: float = 70.0
    memory_critical_threshold: float = 85.0
    queue_warning_threshold: int = 100
    queue_critical_threshold: int = 500
    enable_memory_optimization: bool = True
    gc_batch_threshold: int = 32
    # Further fields of the classic API.
    item_timeout: float | None = 10.0
    max_workers: int = 4
    max_batch_memory_mb: float | None = None
    processing_strategy: BatchProcessingStrategy = BatchProcessingStrategy.ADAPTIVE
    enable_adaptive_batching: bool = True
    reduce_batch_on_failure: bool = True
    debug_mode: bool = False
    # Our own.
    batch_generic_items: bool = False
    """Non-array items go to the batch function as one list (it must return a sequence of
    equal length) instead of one call per item."""
    raise_on_queue_full: bool = False
    """``enqueue_predict`` raises ``QueueFullError`` instead of returning a failed future."""
    stuck_batch_timeout: float = 60.0
    """A batch running longer than this is reported as stuck by the health monitor."""
    default_deadline: float | None = None
    """Seconds an item may wait in the queue when ``enqueue`` is given no ``deadline``."""
    isolate_failures: bool = True
    """A batch that still fails after its retries is split in halves, recursively, so
    that a poisonous item fails alone and its neighbours succeed."""
    isolation_budget: int = 64
    """Extra calls of the batch function that isolating one failed batch may make."""
    latency_buckets: tuple[float, ...] | None = None
    """Upper bounds (seconds) of the item-latency, queue-time and batch-processing-time
    histograms; ``None``: 0.5 ms to 10 s in 1-2.5-5 steps."""
    batch_size_buckets: tuple[float, ...] | None = None
    """Upper bounds (samples) of the batch-size histogram; ``None``: powers of two up to
    ``max_batch_size``."""
    max_lanes: int = 64
    """How many lanes (distinct item signatures: dtype and sample shape, device, key) may
    hold queued items at once; an item that would open one more is refused with
    ``TooManyLanesError``."""
    variable_length: bool = False
    """Each array item is one sample whose first axis may vary (token ids ``(L,)``,
    frames ``(L, d)``): the batch function receives a ``PaddedBatch``."""
    pad_value: Any = 0
    """What pads the samples of a ``PaddedBatch`` to the longest; checked against each
    lane's dtype when its first item arrives (it must hold the value exactly)."""
    trim_results: bool | tuple[int | str, ...] = False
    """With ``variable_length``: which outputs are per position, so that each item gets
    ``r[i, :L_i]`` instead of the padded row. ``True``: the result (a single array, or
    every array of a tuple / dict of outputs); a tuple of positions / keys: those outputs
    of a tuple / dict result. A declared output must have shape ``(B, L_max, ...)``;
    anything else fails the batch with ``ResultMismatchError``, so an output's shape never
    depends on which items shared its batch. A list of per-sample results is handed out
    as it is."""
    bucket_by_length: bool = False
    """With ``variable_length``: a batch is formed from waiting items of similar length
    (the oldest item always goes, with those closest to its length), so that batches
    carry little padding."""
    target_latency_ms: float | None = None
    """A latency target per item: a new item that would wait longer than this (queued
    batches ahead of it times the measured batch time) is refused at once with
    ``OverloadedError`` instead of queueing, and no batch waits for more items longer than
    the target minus the measured batch time. None: bounded by ``max_queue_size`` only."""
    max_concurrent_batches: int = 1
    """How many batches may run at once, each on a worker thread of its own, for batch
    functions that release the GIL or wait (torch, onnxruntime, a remote API, a coroutine):
    the next batch is formed while the others run. One batch is formed at a time."""
    split_oversized: bool = True
    """An ``(n, ...)`` item of more than ``max_batch_size`` samples is queued as parts of at
    most ``max_batch_size`` (its future gets the parts' results joined); False: it runs
    alone in a batch of its own, larger than ``max_batch_size``."""
    shutdown_timeout: float = 10.0
    """Seconds a ``with BatchProcessor(...)`` block's exit, and a running processor left at
    interpreter exit (or garbage-collected without ``stop()``), drain the queue before what
    is left fails with ``ProcessorStoppedError``; the exit never hangs on a stuck model."""

    def __post_init__(self) -> None:
        self._resolve_sizes()
        if isinstance(self.processing_strategy, str):
            try:
                self.processing_strategy = BatchProcessingStrategy(self.processing_strategy.lower())
            except ValueError:
                names = ", ".join(s.value for s in BatchProcessingStrategy)
                _fail(ValueError, "processing_strategy", self.processing_strategy, f"must be one of {names}")
        self.validate()

    def _resolve_sizes(self) -> None:
        """Fill in the sizes not given from the ones given (see the class docstring)."""
        given = {}
        for name in _SIZE_DEFAULTS:
            value = getattr(self, name)
            if value is not _UNSET:
                _check_int(name, value, 1)
                given[name] = value
        if "max_batch_size" not in given:
            self.max_batch_size = max(_SIZE_DEFAULTS["max_batch_size"], *given.values(), 1)
        if "initial_batch_size" not in given:
            if "max_batch_size" in given:
                self.initial_batch_size = self.max_batch_size
            else:
                low = given.get("min_batch_size", 1)
                self.initial_batch_size = min(max(_SIZE_DEFAULTS["initial_batch_size"], low),
                                              self.max_batch_size)
        if "min_batch_size" not in given:
            self.min_batch_size = min(_SIZE_DEFAULTS["min_batch_size"], self.initial_batch_size)
        if self.min_batch_size > self.max_batch_size:
            _fail(ValueError, "min_batch_size", self.min_batch_size,
                  f"must be <= max_batch_size ({self.max_batch_size})")

    def validate(self) -> None:
        """Check every field again (for a config changed after construction).

        Raises:
            TypeError, ValueError: as at construction.
        """
        for name in ("initial_batch_size", "min_batch_size", "max_batch_size", "max_retries",
                     "monitoring_window", "queue_warning_threshold", "queue_critical_threshold",
                     "gc_batch_threshold", "max_workers", "max_queue_size"):
            minimum = 0 if name in ("max_retries", "max_queue_size") else 1
            _check_int(name, getattr(self, name), minimum)
        if not self.min_batch_size <= self.initial_batch_size <= self.max_batch_size:
            _fail(ValueError, "initial_batch_size", self.initial_batch_size,
                  f"must satisfy min_batch_size ({self.min_batch_size}) <= initial_batch_size"
                  f" <= max_batch_size ({self.max_batch_size})")
        for name in ("batch_timeout", "min_batch_interval", "retry_delay", "shutdown_timeout"):
            _check_float(name, getattr(self, name))
        for name in ("health_check_interval", "stuck_batch_timeout"):
            _check_float(name, getattr(self, name), positive=True)
        _check_float("item_timeout", self.item_timeout, positive=True, allow_none=True)
        _check_float("default_deadline", self.default_deadline, positive=True, allow_none=True)
        _check_float("target_latency_ms", self.target_latency_ms, positive=True, allow_none=True)
        _check_int("isolation_budget", self.isolation_budget, 0)
        _check_int("max_lanes", self.max_lanes, 1)
        _check_int("max_concurrent_batches", self.max_concurrent_batches, 1)
        if self.max_concurrent_batches > MAX_CONCURRENT_BATCHES:
            _fail(ValueError, "max_concurrent_batches", self.max_concurrent_batches,
                  f"must be <= {MAX_CONCURRENT_BATCHES} (one worker thread each)")
        self._check_trim()
        if not self.variable_length and not (type(self.pad_value) in (int, float) and self.pad_value == 0):
            _fail(ValueError, "pad_value", self.pad_value, "applies to variable-length items: set variable_length=True too")
        for name in ("trim_results", "bucket_by_length"):
            value = getattr(self, name)
            if value is not False and self.variable_length is not True:
                _fail(ValueError, name, value, "applies to variable-length items: set variable_length=True too")
        if self.max_lanes > 1 << 20:
            _fail(ValueError, "max_lanes", self.max_lanes, f"must be <= 2**20 ({1 << 20})")
        _check_float("max_batch_memory_mb", self.max_batch_memory_mb, positive=True, allow_none=True)
        for name in ("memory_warning_threshold", "memory_critical_threshold"):
            value = getattr(self, name)
            _check_float(name, value, positive=True)
            if value > 100:
                _fail(ValueError, name, value, "is a percentage of RAM and must be <= 100")
        if self.memory_warning_threshold >= self.memory_critical_threshold:
            _fail(ValueError, "memory_warning_threshold", self.memory_warning_threshold,
                  f"must be < memory_critical_threshold ({self.memory_critical_threshold})")
        if self.queue_warning_threshold >= self.queue_critical_threshold:
            _fail(ValueError, "queue_warning_threshold", self.queue_warning_threshold,
                  f"must be < queue_critical_threshold ({self.queue_critical_threshold})")
        for name in ("latency_buckets", "batch_size_buckets"):
            if getattr(self, name) is not None:
                setattr(self, name, check_buckets(name, getattr(self, name)))
        if not isinstance(self.processing_strategy, BatchProcessingStrategy):
            _fail(TypeError, "processing_strategy", self.processing_strategy,
                  "must be a BatchProcessingStrategy")
        for name in ("enable_priority_queue", "enable_monitoring", "enable_health_monitoring",
                     "enable_memory_optimization", "enable_adaptive_batching",
                     "reduce_batch_on_failure", "debug_mode", "batch_generic_items",
                     "raise_on_queue_full", "isolate_failures", "variable_length",
                     "bucket_by_length", "split_oversized"):
            _check_bool(name, getattr(self, name))

    def _check_trim(self) -> None:
        value = self.trim_results
        if isinstance(value, bool):
            return
        if isinstance(value, list):
            value = tuple(value)
        rule = ("must be True, False, or a tuple of the per-position outputs' positions (ints >= 0, for a "
                "tuple result) or keys (strs, for a dict result)")
        if not isinstance(value, tuple) or not value:
            _fail(TypeError, "trim_results", self.trim_results, rule)
        for name in value:
            if isinstance(name, bool) or not isinstance(name, (int, str)):
                _fail(TypeError, "trim_results", self.trim_results, rule)
            if isinstance(name, int) and name < 0:
                _fail(ValueError, "trim_results", self.trim_results, rule)
        if len(set(value)) != len(value):
            _fail(ValueError, "trim_results", self.trim_results, "names an output twice")
        self.trim_results = value

    @property
    def max_batch_bytes(self) -> int:
        """``max_batch_memory_mb`` in bytes; 0 when there is no byte budget."""
        if self.max_batch_memory_mb is None:
            return 0
        return max(1, int(self.max_batch_memory_mb * 1024 * 1024))

    @property
    def size_buckets(self) -> tuple[float, ...]:
        """The batch-size histogram's bounds in force."""
        if self.batch_size_buckets is None:
            return default_size_buckets(self.max_batch_size)
        return self.batch_size_buckets

    @property
    def effective_strategy(self) -> BatchProcessingStrategy:
        """The strategy in force: FIXED whenever ``enable_adaptive_batching`` is off."""
        if not self.enable_adaptive_batching:
            return BatchProcessingStrategy.FIXED
        return self.processing_strategy
