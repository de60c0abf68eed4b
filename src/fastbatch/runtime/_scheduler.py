"""When a batch leaves and how big it is: the ``Scheduler``, one object for the run's workers.

Before each batch, the worker whose turn it is to form one asks :meth:`Scheduler.plan`
and gets a :class:`Plan` — the size, how long a lone first item may linger, the moment
the batch goes with what it holds (``until_ns``), and how long to wait first so that
batches start at least ``min_batch_interval`` apart — and hands it to the queue's take.
Everything that decides is here, computed from one snapshot of the limits
(:class:`Limits`, replaced whole by ``reconfigure()``, never changed in place) and one
clock (injected: tests script time):

- the size: ADAPTIVE grows it by 20 % while the function is fast next to
  ``batch_timeout`` and whenever a full batch is already waiting (a backlog drains faster
  in bigger batches), always within ``[min_batch_size, max_batch_size]``; it never
  shrinks because the function is slow (the classic rule did, which reads every model
  slower than ``batch_timeout`` as overloaded and can collapse throughput). Failures and
  memory pressure still shrink it (``shrink``). BALANCED follows the backlog; FIXED and
  GREEDY keep their size;
- the wait: ``batch_timeout``, capped by what a latency target leaves after one batch's
  time, and under ADAPTIVE the ``WaitPolicy``'s choice (``_policy``), fed the one arrival
  estimate kept here;
- ``min_batch_interval``, from the start of the last batch, whichever worker ran it.

After each batch the worker reports it (:meth:`finished`, then :meth:`handed_out` once its
results are out). Every batch counts in the usual batch time (a failing backend's
retries make items late, and shedding must see it); only a clean batch — one call that
succeeded at its first attempt, its result split without a failure — teaches the cost
model: retries, their delays and failure isolation measure a failure, not what a batch
costs.
Several workers report at once: the state they change is under one lock.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._config import BatchProcessingStrategy, BatchProcessorConfig
from ..core import _backend
from ._policy import WaitPolicy

logger = logging.getLogger("fastbatch")

_ALPHA = 0.2  # EMA weight of the newest observation
_GROW = 1.2
_LOW_LOAD = 0.4


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits a plan is made under: one snapshot, replaced whole by ``reconfigure()``."""

    min_size: int
    max_size: int
    batch_timeout_s: float
    target_s: float | None
    interval_ns: int
    concurrency: int

    @classmethod
    def of(cls, config: BatchProcessorConfig) -> Limits:
        return cls(config.min_batch_size, config.max_batch_size, config.batch_timeout,
                   None if config.target_latency_ms is None else config.target_latency_ms / 1e3,
                   int(config.min_batch_interval * 1e9), config.max_concurrent_batches)


class Plan(NamedTuple):
    """How the next batch is taken from the queue (one per batch: a tuple, cheap to make)."""

    size: int  # samples at most
    linger_s: float  # how long a lone first item waits for company
    until_ns: int  # the batch goes with what it holds at this moment (0: no such moment)
    not_before_s: float  # wait this long first (min_batch_interval), then plan again


class Scheduler:
    """Decides each batch's size and wait; fed by the workers' batch ends."""

    def __init__(self, config: BatchProcessorConfig, clock: Callable[[], int] = _backend.monotonic_ns,
                 name: str = "") -> None:
        self.name = name  # the processor's, for the log
        self.strategy = config.effective_strategy
        self.limits = Limits.of(config)
        self.clock = clock
        self._lock = threading.RLock()  # the size and the measurements; finished() sets the size
        self._size = config.max_batch_size if self.strategy is BatchProcessingStrategy.GREEDY else config.initial_batch_size
        self.ema_processing_s = math.nan  # the usual batch time, every batch
        self.arrival_rate = 0.0  # samples per second, EMA: the one arrival estimate
        self._rate_seen = False
        self._last_end_s = math.nan
        self._last_backlog = 0
        self._last_start_ns = 0  # the last batch's start in this run, any worker's (min_batch_interval)
        # (limits, plan): the last plan made without a policy or a latency target, which
        # holds while the limits and the size stay as they were.
        self._steady: tuple[Limits, Plan] | None = None
        # Plans when each batch is released (ADAPTIVE only): learns the batch cost and
        # how items arrive, across runs.
        self.policy = WaitPolicy(config.batch_timeout) if self.strategy is BatchProcessingStrategy.ADAPTIVE else None

    # -- what others read ---------------------------------------------------------------

    @property
    def size(self) -> int:
        """The batch size (in samples) the next batch is formed with."""
        return self._size

    @property
    def min_size(self) -> int:
        return self.limits.min_size

    @property
    def max_size(self) -> int:
        return self.limits.max_size

    @property
    def load(self) -> float:
        """The classic system load: EMA of processing time over ``batch_timeout``, in [0, 1]."""
        if math.isnan(self.ema_processing_s):
            return 0.0
        return min(1.0, self.ema_processing_s / max(self.limits.batch_timeout_s, 1e-3))

    def max_wait_s(self, limits: Limits | None = None) -> float:
        """The longest a batch may wait for more items: ``batch_timeout``, and with a
        latency target no more than what the target leaves after one batch's time (the
        whole target before the first batch)."""
        limits = self.limits if limits is None else limits
        wait = limits.batch_timeout_s
        batch_s = self.ema_processing_s
        if limits.target_s is not None:
            wait = min(wait, max(0.0, limits.target_s - (0.0 if math.isnan(batch_s) else batch_s)))
        return wait

    def predicted_latency_s(self, queued_samples: int, busy: bool) -> float:
        """About how long a new item would take: the batches queued ahead of it and its
        own, ``concurrency`` of them at a time, plus half a batch when ``busy`` (no worker
        is free), at the usual batch time (0.0 before the first batch)."""
        batch_s = self.ema_processing_s
        if math.isnan(batch_s):
            return 0.0
        batches = -(-(queued_samples + 1) // self._size)
        rounds = -(-batches // self.limits.concurrency)
        return (rounds + (0.5 if busy else 0.0)) * batch_s

    # -- before a batch -------------------------------------------------------------------

    def plan(self, queued_samples: int) -> Plan:
        """The next batch's plan, for ``queued_samples`` waiting now."""
        limits = self.limits  # one read: the whole plan is made under one snapshot
        now_ns = self.clock()
        if limits.interval_ns and self._last_start_ns:
            early_ns = self._last_start_ns + limits.interval_ns - now_ns
            if early_ns > 0:
                return Plan(self._size, 0.0, 0, early_ns / 1e9)
        size = self._size
        policy = self.policy
        steady = self._steady
        if steady is not None and steady[0] is limits and steady[1].size == size and policy is None:
            return steady[1]  # nothing it depends on has changed: no new plan to make
        linger = cap = self.max_wait_s(limits)
        until_ns = 0
        if policy is None and limits.target_s is None:
            # The plan depends on the limits and the size alone: kept until either changes.
            plan = Plan(size, linger, 0, 0.0)
            self._steady = (limits, plan)
            return plan
        if policy is not None and policy.active:
            try:
                linger, until_ns = policy.plan(now_ns, queued_samples, size, self.arrival_rate)
            except Exception:  # noqa: BLE001 - a planning bug must not stop the batches
                self._policy_failed()
                return Plan(size, cap, 0, 0.0)
            linger = min(linger, cap)
            if until_ns:
                until_ns = min(until_ns, now_ns + int(cap * 1e9))
        return Plan(size, linger, until_ns, 0.0)

    def started(self, enqueue_ns: npt.NDArray[np.int64]) -> int:
        """A batch was taken (its items' enqueue times); returns its start time."""
        policy = self.policy
        if policy is not None and policy.active:
            try:
                policy.taken(enqueue_ns)
            except Exception:  # noqa: BLE001 - the items are taken: they must still run
                self._policy_failed()
        start_ns = self._last_start_ns = self.clock()  # after the policy's work: not the batch's cost
        return start_ns

    def new_run(self) -> None:
        """A run starts: its first batch is not spaced from the last run's."""
        self._last_start_ns = 0

    # -- after a batch ----------------------------------------------------------------------

    def finished(self, end_ns: int, seconds: float, samples: int, backlog: int) -> None:
        """A batch of ``samples`` ended at ``end_ns`` after ``seconds``, ``backlog`` samples
        still queued (called before its futures learn their outcome: whoever sees a
        result sees the batch in the statistics)."""
        with self._lock:
            ema = self.ema_processing_s
            self.ema_processing_s = seconds if ema != ema else ema + _ALPHA * (seconds - ema)  # NaN: the first
            self._arrived(end_ns / 1e9, samples, backlog)
            strategy = self.strategy
            if strategy is BatchProcessingStrategy.ADAPTIVE:
                self._adapt(backlog)
            elif strategy is BatchProcessingStrategy.BALANCED:
                self.set(max(samples, backlog))

    def handed_out(self, samples: int, seconds: float, resolved: int) -> None:
        """A clean batch (one call, first attempt, split without a failure) handed out its ``resolved`` results now: the cost model
        learns what it cost, and the arrival model times from now the callers that come
        back (a closed loop's callers send again once they have their result)."""
        policy = self.policy
        if policy is not None:
            try:
                policy.observe(samples, seconds, self.clock(), resolved, self.ema_processing_s)
            except Exception:  # noqa: BLE001 - the batch is out: a learning bug must not stop the worker
                self._policy_failed()

    def _arrived(self, now_s: float, samples: int, backlog: int) -> None:
        last_s = self._last_end_s
        if last_s == last_s and now_s > last_s:  # not NaN: a batch has ended before
            # Samples that arrived since the last batch ended: those taken plus the backlog change.
            arrived = samples + backlog - self._last_backlog
            rate = max(0.0, arrived) / (now_s - self._last_end_s)
            if self._rate_seen:
                self.arrival_rate += _ALPHA * (rate - self.arrival_rate)
            else:
                self.arrival_rate, self._rate_seen = rate, True
        if last_s != last_s or now_s >= last_s:  # ends may come out of order
            self._last_end_s, self._last_backlog = now_s, backlog

    def _adapt(self, backlog: int) -> None:
        load = self.ema_processing_s / max(self.limits.batch_timeout_s, 1e-3)
        size = self._size
        if backlog >= size or load < _LOW_LOAD:
            # A full batch is already waiting (smaller batches would drain it more
            # slowly), or the function is fast: grow.
            size = max(size + 1, int(size * _GROW))
        self._size = max(self.limits.min_size, min(self.limits.max_size, size))

    # -- changes --------------------------------------------------------------------------

    def reconfigure(self, config: BatchProcessorConfig) -> None:
        """New limits (``BatchProcessor.reconfigure``), for the next plan on."""
        with self._lock:
            limits = Limits.of(config)
            size = limits.max_size if self.strategy is BatchProcessingStrategy.GREEDY else self._size
            self._size = max(limits.min_size, min(limits.max_size, size))
            changed_timeout = limits.batch_timeout_s != self.limits.batch_timeout_s
            self.limits = limits
            if self.policy is not None and changed_timeout:
                self.policy.set_timeout(config.batch_timeout)  # what it learnt is measured in the old one

    def set(self, size: int) -> int:
        """Set the size, clamped to ``[min, max]``; returns the size applied."""
        with self._lock:
            limits = self.limits
            self._size = max(limits.min_size, min(limits.max_size, int(size)))
            return self._size

    def grow(self, factor: float) -> int:
        """Raise the size (a growing queue); never above the maximum."""
        with self._lock:
            self._size = max(self.limits.min_size, min(self.limits.max_size, int(self._size * factor) + 1))
            return self._size

    def shrink(self, factor: float = 0.5) -> int:
        """Reduce the size (failures, memory pressure); never below the minimum."""
        with self._lock:
            self._size = max(self.limits.min_size, int(self._size * factor))
            return self._size

    def drop_policy(self) -> None:
        """The policy failed: the classic rule (wait ``batch_timeout``) from now on."""
        self.policy = None

    def _policy_failed(self) -> None:
        logger.exception("fastbatch %s: the batching policy failed; the classic rule (wait "
                         "batch_timeout from the first item) applies from now on", self.name)
        self.drop_policy()

    def reset_after_fork(self) -> None:
        """In a forked child: a parent thread may have held these locks."""
        self._lock = threading.RLock()
        if self.policy is not None:
            self.policy.reset_after_fork()
