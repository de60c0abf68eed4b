"""The pure-Python twin's ``StatsWindow`` (see ``_core.pyi`` for the contract).

A ring of float64 values in a numpy array under one lock; statistics are numpy's own
(``mean``, ``min``, ``max``, ``percentile``), which the compiled core reproduces bit for
bit in ``_numeric.pxd``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _messages as msg
from ._twin_args import as_float, as_int64, as_percentile

__all__ = ["Histogram", "StatsWindow"]


def _as_array(values: npt.ArrayLike, dtype: type[np.float64] | type[np.int64]) -> npt.NDArray[Any]:
    # As the compiled core's PyArray_FROMANY: an array must cast to ``dtype`` safely
    # (complex, strings, datetimes and floats-to-int are refused with numpy's TypeError);
    # anything else is converted as numpy.asarray does (lists of strings are parsed).
    if isinstance(values, np.ndarray):
        return values.astype(dtype, casting="safe", copy=False)
    return np.asarray(values, dtype=dtype)


def _vector(values: npt.ArrayLike, dtype: type[np.float64] | type[np.int64], name: str) -> npt.NDArray[Any]:
    """``values`` as a 1-D array of ``dtype`` (as the compiled core's ``_vector``), or ValueError."""
    data = _as_array(values, dtype)
    if data.ndim != 1:
        raise ValueError(msg.NOT_ONE_DIMENSIONAL.format(name=name, shape=data.shape))
    return data


class StatsWindow:
    """A fixed-size ring of float64 values: the last ``capacity`` values recorded.

    Thread-safe: recording is O(1) per value under a short lock; summaries copy the ring
    under the lock and compute outside it. Percentiles equal ``numpy.percentile``
    (linear interpolation) on ``values()``.

    Args:
        capacity: the number of values kept (``>= 1``).

    Raises:
        TypeError: ``capacity`` is not an integer.
        ValueError: ``capacity < 1``.
    """

    __slots__ = ("_capacity", "_lock", "_pos", "_ring", "_total")

    def __init__(self, capacity: int) -> None:
        capacity = as_int64("capacity", capacity)
        if capacity < 1:
            raise ValueError(msg.WINDOW_CAPACITY.format(value=capacity))
        self._capacity = capacity
        self._ring = np.zeros(capacity, dtype=np.float64)
        self._pos = 0  # where the next value goes; the oldest value once the ring is full
        self._total = 0  # values recorded since the last clear(), overwritten ones included
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Values currently in the window: those recorded, at most ``capacity``."""
        return min(self._total, self._capacity)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self)}/{self._capacity} values>"

    def record(self, value: float) -> None:
        """Record one value."""
        value = as_float("value", value)
        with self._lock:
            pos = self._pos
            self._ring[pos] = value
            self._pos = 0 if pos + 1 == self._capacity else pos + 1
            self._total += 1

    def record_many(self, values: npt.ArrayLike) -> None:
        """Record each value of a 1-D float sequence, in order.

        Raises:
            ValueError: ``values`` is not one-dimensional.
        """
        data = _vector(values, np.float64, "values")
        n, cap = data.shape[0], self._capacity
        with self._lock:
            ring = self._ring
            if n >= cap:
                # Only the last `cap` values survive; store them oldest first from slot 0.
                ring[:] = data[n - cap :]
                self._pos = 0
            else:
                pos = self._pos
                head = min(n, cap - pos)
                ring[pos : pos + head] = data[:head]
                ring[: n - head] = data[head:]
                self._pos = (pos + n) % cap
            self._total += n

    def record_elapsed_ms(self, start_ns: npt.NDArray[np.int64], end_ns: int) -> None:
        """Record ``(end_ns - s) / 1e6`` for each ``s`` of ``start_ns`` (milliseconds)."""
        end = np.int64(as_int64("end_ns", end_ns))  # checked first, as by the compiled core
        starts = _vector(start_ns, np.int64, "start_ns")
        # Subtract in int64 first: nanosecond timestamps lose precision as doubles.
        self.record_many((end - starts) / 1e6)

    def values(self) -> npt.NDArray[np.float64]:
        """A copy of the window, oldest first."""
        with self._lock:
            if self._total < self._capacity:
                return self._ring[: self._total].copy()
            pos = self._pos
            return np.concatenate((self._ring[pos:], self._ring[:pos]))

    @staticmethod
    def summaries(
        windows: Sequence[StatsWindow], percentiles: Sequence[Sequence[float]]
    ) -> list[tuple[int, float, float, float, tuple[float, ...]]]:
        """``(count, mean, min, max, percentiles)`` of each window, in one call.

        ``percentiles[i]`` are the ``q`` (0 to 100) of window i. ``count`` is the number
        of values in the window; mean/min/max and the percentiles are NaN when it is
        empty. Each window is copied under its own lock, then computed outside it.

        Raises:
            ValueError: not one percentile sequence per window, or a ``q`` outside
                ``[0, 100]`` (or NaN).
            TypeError: an element of ``windows`` is not a ``StatsWindow``.
        """
        ws = tuple(windows)
        qss = [tuple(qs) for qs in percentiles]
        if len(ws) != len(qss):
            raise ValueError(
                msg.WINDOWS_AND_PERCENTILES.format(windows=len(ws), sequences=len(qss)))
        for w in ws:
            if not isinstance(w, StatsWindow):
                raise TypeError(msg.NOT_A_WINDOW.format(type=type(w).__name__))
        # Every q checked before any window is read, as the compiled core does.
        checked = [[as_percentile(q) for q in qs] for qs in qss]
        return [_summarize(w.values(), qs) for w, qs in zip(ws, checked)]

    def clear(self) -> None:
        """Forget every value."""
        with self._lock:
            self._pos = self._total = 0


def _summarize(
    data: npt.NDArray[np.float64], qs: list[float]
) -> tuple[int, float, float, float, tuple[float, ...]]:
    n = data.shape[0]
    if n == 0:
        return 0, math.nan, math.nan, math.nan, tuple(math.nan for _ in qs)
    # inf - inf (in the mean or a percentile's interpolation) is NaN and a sum may
    # overflow to inf, without a warning, as in the compiled core: reading never warns.
    with np.errstate(invalid="ignore", over="ignore"):
        pcts = tuple(np.percentile(data, qs).tolist()) if qs else ()
        return n, float(data.mean()), float(data.min()), float(data.max()), pcts


class Histogram:
    """Counts per bucket since creation, with the sum and count of the values observed.

    Bucket ``i`` holds the values ``<= bounds[i]`` and ``> bounds[i - 1]`` (``le``); one
    more holds the values above every bound (NaN among them). Thread-safe (one lock).

    Raises:
        ValueError: ``bounds`` is not a non-empty, strictly increasing sequence of
            finite numbers.
    """

    __slots__ = ("_counts", "_edges", "_lock", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        try:
            values = [float(b) for b in bounds]
        except (TypeError, ValueError):
            raise ValueError(msg.HISTOGRAM_BOUNDS.format(bounds=bounds)) from None
        if (not values or isinstance(bounds, (str, bytes)) or not all(math.isfinite(v) for v in values)
                or any(b <= a for a, b in zip(values, values[1:]))):
            raise ValueError(msg.HISTOGRAM_BOUNDS.format(bounds=bounds))
        self.bounds = tuple(values)
        self._edges = np.asarray(values, dtype=np.float64)
        self._counts = np.zeros(len(values) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Histogram of {len(self._counts)} buckets>"

    def _bucket(self, v: float) -> int:
        # side="left": the first bound >= v; NaN sorts past every bound.
        return int(np.searchsorted(self._edges, v, side="left"))

    def observe(self, value: float) -> None:
        v = as_float("value", value)
        i = self._bucket(v)
        with self._lock:
            self._counts[i] += 1
            self._sum += v

    def observe_elapsed(self, start_ns: npt.ArrayLike, end_ns: int, scale: float) -> None:
        end = as_int64("end_ns", end_ns)
        k = as_float("scale", scale)
        start = _vector(start_ns, np.int64, "start_ns")
        values = (end - start).astype(np.float64) * k
        counts = np.bincount(np.searchsorted(self._edges, values, side="left"),
                             minlength=len(self._counts))
        # Summed in order, as the compiled core's loop does.
        total = 0.0
        for v in values.tolist():
            total += v
        with self._lock:
            self._counts += counts
            self._sum += total

    def snapshot(self) -> tuple[tuple[int, ...], int, float]:
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        cumulative = np.cumsum(counts).tolist()
        return tuple(int(c) for c in cumulative[:-1]), int(cumulative[-1]), total
