"""Histogram bounds and snapshots, and the arrival-rate meter.

The statistics windows answer "what are the last 100 batches like"; a dashboard that
aggregates many processors needs the other kind: counts per bucket that only grow, with a
running sum and count, which sum across replicas and give rates over any interval. The
counting itself is the core's ``Histogram`` (a C loop per batch in the compiled core).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

#: Default upper bounds, in seconds, of the latency, queue-time and processing-time buckets.
DEFAULT_TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0)


def default_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """Powers of two below ``max_batch_size``, then ``max_batch_size`` itself."""
    bounds = []
    size = 1
    while size < max_batch_size:
        bounds.append(float(size))
        size *= 2
    bounds.append(float(max_batch_size))
    return tuple(bounds)


def check_buckets(name: str, bounds: Any) -> tuple[float, ...]:
    """``bounds`` as a tuple of floats, or a ``ValueError``/``TypeError`` naming the rule."""
    prefix = f"BatchProcessorConfig.{name}={bounds!r}"
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
        raise TypeError(f"{prefix}: must be a sequence of numbers (bucket upper bounds)")
    if not bounds:
        raise ValueError(f"{prefix}: must hold at least one bucket bound")
    out = []
    for value in bounds:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{prefix}: {value!r} is not a number")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{prefix}: {value!r} must be finite and > 0 (+Inf is always added)")
        out.append(float(value))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{prefix}: the bounds must increase strictly")
    return tuple(out)


class HistogramSnapshot(NamedTuple):
    """One histogram at one moment: ``counts[i]`` observations were <= ``bounds[i]``
    (cumulative, Prometheus's ``le``); ``observations`` counts them all, those above the
    last bound included."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    observations: int


class ArrivalMeter:
    """Items accepted per second over the last ``window_s`` seconds (or since the start).

    Marks ``(time, items accepted so far)`` at most every ``step_s`` (the worker marks at
    batch ends, readers when they read); the rate is taken against the newest mark at
    least ``window_s`` old, so it falls to 0 once arrivals stop, whoever reads it.
    """

    def __init__(self, window_s: float = 10.0, step_s: float = 0.25) -> None:
        self.window_s = window_s
        self.step_s = step_s
        self._lock = threading.Lock()
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def start(self, now_s: float, accepted: int) -> None:
        with self._lock:
            # A new deque in one assignment: a lock-free due() never sees it empty.
            self._marks = collections.deque([(now_s, accepted)])

    def due(self, now_s: float) -> bool:
        """Whether a mark now would be kept (lock-free, only to skip reading the total)."""
        marks = self._marks
        try:
            return now_s - marks[-1][0] >= self.step_s
        except IndexError:
            return True

    def reset_after_fork(self) -> None:
        """In a forked child the lock may be held by a thread that no longer exists."""
        self._lock = threading.Lock()

    def mark(self, now_s: float, accepted: int) -> None:
        with self._lock:
            marks = self._marks
            if marks and now_s - marks[-1][0] < self.step_s:
                return
            marks.append((now_s, accepted))
            # Keep one mark at least window_s old: the reference of the rate.
            while len(marks) > 2 and now_s - marks[1][0] >= self.window_s:
                marks.popleft()

    def rate(self, now_s: float, accepted: int) -> float:
        self.mark(now_s, accepted)
        with self._lock:
            if not self._marks:
                return 0.0
            ref_s, ref_count = self._marks[0]
            if len(self._marks) > 1 and now_s - self._marks[1][0] >= self.window_s:
                ref_s, ref_count = self._marks[1]
        span = now_s - ref_s
        return max(0, accepted - ref_count) / span if span > 0 else 0.0
