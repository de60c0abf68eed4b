"""Batch sizing: where the batch size goes after each batch, and who plans the wait.

ADAPTIVE: the size grows by 20 % while the function is fast next to ``batch_timeout``
(the classic rule's growth) and whenever a full batch is already waiting (a backlog
drains faster in bigger batches), always within ``[min_batch_size, max_batch_size]``. It
never shrinks because the function is slow: the classic rule did (``load = EMA(batch
time) / batch_timeout`` above 0.8), which reads every model slower than
``batch_timeout`` as overloaded, raises the per-item cost by paying the fixed cost more
often, and can collapse throughput. Failures and memory pressure still shrink it
(``shrink``). When to release a batch is the ``WaitPolicy``'s (``_policy``).

BALANCED follows the backlog; FIXED and GREEDY keep their size.
"""

from __future__ import annotations

import math
import threading

from ._config import BatchProcessingStrategy, BatchProcessorConfig
from ._policy import WaitPolicy

_ALPHA = 0.2  # EMA weight of the newest observation
_GROW = 1.2
_LOW_LOAD = 0.4


class BatchSizer:
    """Owns the current batch size; the worker forming a batch reads it.

    ``observe`` is called by the workers after each batch (several may end at once);
    ``set`` by the user (``update_batch_size``) and the health monitor. One lock guards
    the size and the measurements, so that changes from several threads cannot
    interleave.
    """

    def __init__(self, config: BatchProcessorConfig) -> None:
        self.strategy = config.effective_strategy
        self.min_size = config.min_batch_size
        self.max_size = config.max_batch_size
        self.batch_timeout = config.batch_timeout  # read by the worker before each batch
        self._target_s = None if config.target_latency_ms is None else config.target_latency_ms / 1e3
        self._timeout_s = max(config.batch_timeout, 1e-3)
        self._lock = threading.RLock()  # observe() sets the size under it
        self.concurrency = config.max_concurrent_batches
        self._size = config.max_batch_size if self.strategy is BatchProcessingStrategy.GREEDY else config.initial_batch_size
        self.ema_processing_s = math.nan
        self.arrival_rate = 0.0  # samples per second, EMA
        self._rate_seen = False
        self._last_take_s = math.nan
        self._last_backlog = 0
        # Plans when each batch is released (ADAPTIVE only): learns the batch cost and
        # how items arrive, across runs.
        self.policy = WaitPolicy(config.batch_timeout) if self.strategy is BatchProcessingStrategy.ADAPTIVE else None

    @property
    def size(self) -> int:
        """The batch size (in samples) the next batch is formed with."""
        return self._size

    @property
    def load(self) -> float:
        """The classic system load: EMA of processing time over ``batch_timeout``, in [0, 1]."""
        if math.isnan(self.ema_processing_s):
            return 0.0
        return min(1.0, self.ema_processing_s / self._timeout_s)

    def reconfigure(self, config: BatchProcessorConfig) -> None:
        """New limits and timeout (``BatchProcessor.reconfigure``), from the next batch on."""
        with self._lock:
            self.min_size, self.max_size = config.min_batch_size, config.max_batch_size
            if self.strategy is BatchProcessingStrategy.GREEDY:
                self._size = self.max_size
            self._size = max(self.min_size, min(self.max_size, self._size))
            self.batch_timeout = config.batch_timeout
            self._timeout_s = max(config.batch_timeout, 1e-3)
            self.concurrency = config.max_concurrent_batches
            if self.policy is not None and self.policy.timeout_ns != int(config.batch_timeout * 1e9):
                self.policy.set_timeout(config.batch_timeout)  # what it learnt is measured in the old one

    def max_wait_s(self) -> float:
        """The longest a batch may wait for more items: ``batch_timeout``, and with a
        latency target no more than what the target leaves after one batch's time (the
        whole target before the first batch)."""
        wait = self.batch_timeout
        target, batch_s = self._target_s, self.ema_processing_s
        if target is not None:
            wait = min(wait, max(0.0, target - (0.0 if math.isnan(batch_s) else batch_s)))
        return wait

    def predicted_latency_s(self, queued_samples: int, busy: bool) -> float:
        """About how long a new item would take: the batches queued ahead of it and its
        own, ``concurrency`` of them at a time, plus half a batch when ``busy`` (no worker
        is free), at the usual batch time (0.0 before the first batch)."""
        batch_s = self.ema_processing_s
        if math.isnan(batch_s):
            return 0.0
        batches = -(-(queued_samples + 1) // self._size)
        rounds = -(-batches // self.concurrency)
        return (rounds + (0.5 if busy else 0.0)) * batch_s

    def reset_after_fork(self) -> None:
        """In a forked child: a parent thread may have held these locks."""
        self._lock = threading.RLock()
        if self.policy is not None:
            self.policy.reset_after_fork()

    def drop_policy(self) -> None:
        """The policy failed: the classic rule (wait ``batch_timeout``) from now on."""
        self.policy = None

    def set(self, size: int) -> int:
        """Set the size, clamped to ``[min, max]``; returns the size applied."""
        with self._lock:
            self._size = max(self.min_size, min(self.max_size, int(size)))
            return self._size

    def shrink(self, factor: float = 0.5) -> int:
        """Reduce the size (failures, memory pressure); never below the minimum."""
        with self._lock:
            self._size = max(self.min_size, int(self._size * factor))
            return self._size

    def observe(self, now_s: float, processing_s: float, samples: int, backlog: int) -> None:
        """Feed one finished batch: its duration, its samples and the samples still queued."""
        with self._lock:
            self._observe(now_s, processing_s, samples, backlog)

    def _observe(self, now_s: float, processing_s: float, samples: int, backlog: int) -> None:
        if math.isnan(self.ema_processing_s):
            self.ema_processing_s = processing_s
        else:
            self.ema_processing_s += _ALPHA * (processing_s - self.ema_processing_s)
        if not math.isnan(self._last_take_s) and now_s > self._last_take_s:
            # Samples that arrived since the last batch: those taken plus the backlog change.
            arrived = samples + backlog - self._last_backlog
            rate = max(0.0, arrived) / (now_s - self._last_take_s)
            if self._rate_seen:
                self.arrival_rate += _ALPHA * (rate - self.arrival_rate)
            else:
                self.arrival_rate, self._rate_seen = rate, True
        self._last_take_s, self._last_backlog = now_s, backlog

        if self.strategy is BatchProcessingStrategy.ADAPTIVE:
            self._adapt(backlog)
        elif self.strategy is BatchProcessingStrategy.BALANCED:
            self.set(max(samples, backlog))

    def _adapt(self, backlog: int) -> None:
        load = self.ema_processing_s / self._timeout_s
        with self._lock:
            size = self._size
            if backlog >= size or load < _LOW_LOAD:
                # A full batch is already waiting (smaller batches would drain it more
                # slowly), or the function is fast: grow.
                size = max(size + 1, int(size * _GROW))
            self._size = max(self.min_size, min(self.max_size, size))
