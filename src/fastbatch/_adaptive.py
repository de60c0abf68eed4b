"""Adaptive batch sizing: where the batch size goes after each batch.

The classic rule (ADAPTIVE): keep an exponential moving average of the batch processing
time, call ``load = ema / batch_timeout``; shrink the size by 20 % above 0.8, grow it by
20 % below 0.4, always within ``[min_batch_size, max_batch_size]``.

That rule alone is unstable under steady load: a slow function means a high load, the
batch shrinks, the fixed per-call cost is paid more often, the function gets slower per
item, and throughput collapses. So a batch may never shrink below the size that keeps up
with the arrival rate: items arrive at ``rate`` samples/s, a batch of ``size`` takes
``ema`` seconds, so while it runs ``rate * ema`` new samples arrive; the size must be at
least that (plus 10 % headroom) or the queue grows without bound. And while a full batch
is already waiting (a backlog), the size grows whatever the load: a backlog drains faster
in bigger batches.
"""

from __future__ import annotations

import math
import threading

from ._config import BatchProcessingStrategy, BatchProcessorConfig

_ALPHA = 0.2  # EMA weight of the newest observation
_SHRINK, _GROW = 0.8, 1.2
_HIGH_LOAD, _LOW_LOAD = 0.8, 0.4
_HEADROOM = 1.1


class BatchSizer:
    """Owns the current batch size; the worker reads it before each batch.

    ``observe`` is called by the worker after each batch; ``set`` by the user
    (``update_batch_size``) and the health monitor. One lock guards the size so that a
    health-monitor change and a worker adjustment cannot interleave.
    """

    def __init__(self, config: BatchProcessorConfig) -> None:
        self.strategy = config.effective_strategy
        self.min_size = config.min_batch_size
        self.max_size = config.max_batch_size
        self._timeout_s = max(config.batch_timeout, 1e-3)
        self._lock = threading.Lock()
        self._size = config.max_batch_size if self.strategy is BatchProcessingStrategy.GREEDY else config.initial_batch_size
        self.ema_processing_s = math.nan
        self.arrival_rate = 0.0  # samples per second, EMA
        self._rate_seen = False
        self._last_take_s = math.nan
        self._last_backlog = 0

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
            if backlog >= size:
                # A full batch is already waiting: the queue is not keeping up, and
                # smaller batches would only drain it more slowly.
                size = max(size + 1, int(size * _GROW))
            elif load > _HIGH_LOAD:
                # Shrink, but never below the size that keeps up with arrivals: if the
                # size is already below it, this grows the batch instead.
                floor = math.ceil(self.arrival_rate * self.ema_processing_s * _HEADROOM)
                size = max(int(size * _SHRINK), floor)
            elif load < _LOW_LOAD:
                size = max(size + 1, int(size * _GROW))
            self._size = max(self.min_size, min(self.max_size, size))
