"""When a batch is released: the measured cost model behind the ADAPTIVE strategy.

A batch of ``n`` samples costs about ``fixed + per_sample * n`` seconds (``CostModel``,
fitted online with the Theil-Sen estimator, so a few slow batches — a GC pause, a page
fault — do not move it). When the model is free and fewer samples wait than a batch
holds, releasing them now wastes the fixed cost on a small batch if more items are about
to arrive. ``Arrivals`` learns how many items arrive within ``d`` seconds of a batch's
results being handed out, per item handed out: callers in a closed loop send their next
item a moment after they get a result, so right after a batch ends its callers come back
together; an open-loop stream arrives at its rate whatever the batches do. Both show up
in the same measurement.

The plan for the next batch picks the wait ``d`` (0 to ``batch_timeout``) that maximises
the throughput of the coming batch, ``N(d) / (d + fixed + per_sample * N(d))`` with
``N(d)`` the samples waiting plus those expected within ``d``, capped at the batch size;
of the waits within 0.5 % of the best it takes the shortest. So the two halves of a closed
loop are merged into one batch (waiting a fraction of a millisecond for the half that is
about to come back doubles the batch), an idle model takes a lone item at once, and a
slow model is never a reason for smaller batches. ``batch_timeout`` stays the longest
wait once the model is free.

Everything here is plain arithmetic on what it is fed (times in ns): tested with scripted
arrivals and costs, no clock of its own. With several batches in flight, batch ends are
reported in whatever order the workers finish them: ``Arrivals`` keeps them sorted.
"""

from __future__ import annotations

import bisect
import math
import threading

import numpy as np

_COST_WINDOW = 64  # batches the cost model remembers
_REFIT_EVERY = 8  # batches between two fits
_GRID = 24  # candidate waits between 0 and batch_timeout
_BINS = 96  # resolution of the arrival-delay histogram over [0, batch_timeout]
_DECAY = 0.95  # per batch end: the arrival model forgets with a memory of ~20 batches
_ENDS = 64  # batch ends an arrival can be measured from
_NEAR_BEST = 0.995
#: Below this measured batch cost (seconds) waiting cannot gain much: the classic rule holds.
MIN_COST_S = 200e-6


class CostModel:
    """``fixed + per_sample * n`` seconds per batch of ``n`` samples, fitted online."""

    def __init__(self) -> None:
        self._n = np.zeros(_COST_WINDOW)
        self._s = np.zeros(_COST_WINDOW)
        self._count = 0
        self._since_fit = 0
        self.fixed = math.nan
        self.per_sample = math.nan

    def observe(self, samples: int, seconds: float) -> None:
        i = self._count % _COST_WINDOW
        self._n[i], self._s[i] = samples, seconds
        self._count += 1
        self._since_fit += 1
        if self._since_fit >= _REFIT_EVERY or self._count <= _REFIT_EVERY:
            self.fit()

    def fit(self) -> None:
        """Theil-Sen: the median of the pairwise slopes, then the median intercept."""
        self._since_fit = 0
        k = min(self._count, _COST_WINDOW)
        if k == 0:
            return
        n, s = self._n[:k], self._s[:k]
        dn = n[:, None] - n[None, :]
        pairs = dn > 0
        if np.count_nonzero(pairs) < 3:
            # One batch size seen so far: the split is unknown, so all of it counts as
            # fixed (which favours waiting for bigger batches, bounded by batch_timeout).
            self.fixed, self.per_sample = float(np.median(s)), 0.0
            return
        slope = max(0.0, float(np.median((s[:, None] - s[None, :])[pairs] / dn[pairs])))
        self.per_sample = slope
        self.fixed = max(0.0, float(np.median(s - slope * n)))

    def cost(self, samples: float) -> float:
        return self.fixed + self.per_sample * samples

    @property
    def fitted(self) -> bool:
        return not math.isnan(self.fixed)


class Arrivals:
    """Items that arrive within ``d`` of a batch's results, per item the batch resolved."""

    def __init__(self, horizon_ns: int) -> None:
        self.horizon_ns = max(1, horizon_ns)
        self._hist = np.zeros(_BINS)
        self._resolved = 0.0
        self._ends: list[int] = []  # sorted, the latest _ENDS
        self.last_end_ns = 0
        self.last_resolved = 0

    def ended(self, end_ns: int, resolved: int) -> None:
        """A batch handed out its ``resolved`` results at ``end_ns`` (ends may come in any
        order: several batches run at once)."""
        self._hist *= _DECAY
        self._resolved = self._resolved * _DECAY + resolved
        ends = self._ends
        if not ends or end_ns >= ends[-1]:
            ends.append(end_ns)
        else:
            bisect.insort(ends, end_ns)
        if len(ends) > _ENDS:
            del ends[0]
        if end_ns >= self.last_end_ns:
            self.last_end_ns, self.last_resolved = end_ns, resolved

    def arrived(self, stamps: np.ndarray) -> None:
        """Enqueue times of items just taken: each is measured from the end before it."""
        if not self._ends or len(stamps) == 0:
            return
        ends = np.array(self._ends, np.int64)
        at = np.searchsorted(ends, stamps, side="right") - 1
        seen = at >= 0
        delay = stamps[seen] - ends[at[seen]]
        delay = delay[delay < self.horizon_ns]
        if len(delay):
            self._hist += np.bincount((delay * _BINS) // self.horizon_ns, minlength=_BINS)[:_BINS]

    def expected(self, resolved: int, waits_ns: np.ndarray) -> np.ndarray:
        """Items expected within each of ``waits_ns`` after an end that resolved ``resolved``."""
        if self._resolved <= 0:
            return np.zeros(len(waits_ns))
        per_item = np.concatenate(([0.0], np.cumsum(self._hist))) / self._resolved
        edges = np.linspace(0, self.horizon_ns, _BINS + 1)
        counts: np.ndarray = resolved * np.interp(np.minimum(waits_ns, self.horizon_ns), edges, per_item)
        return counts


class WaitPolicy:
    """Plans each batch's wait from the cost model and the arrivals; fed by the workers.

    One lock: a worker plans the next batch while others report the ones they finished,
    and ``reconfigure()`` swaps the arrival model; a plan never sees half of either.
    """

    def __init__(self, batch_timeout_s: float) -> None:
        self._lock = threading.Lock()
        self.cost = CostModel()
        self.chosen_wait_s = 0.0
        self.active = False  # False until the model is slow enough for waiting to pay
        self.set_timeout(batch_timeout_s)

    def reset_after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock."""
        self._lock = threading.Lock()

    def set_timeout(self, batch_timeout_s: float) -> None:
        """A new longest wait; what was learnt of arrivals is measured against the old one."""
        timeout_ns = int(batch_timeout_s * 1e9)
        arrivals = Arrivals(timeout_ns)
        grid = np.linspace(0.0, float(timeout_ns), _GRID + 1)
        with self._lock:
            self.timeout_ns, self.arrivals, self._grid = timeout_ns, arrivals, grid

    def observe(self, samples: int, seconds: float, end_ns: int, resolved: int, typical_s: float) -> None:
        """A batch of ``samples`` took ``seconds``; its ``resolved`` results went out at ``end_ns``.

        ``typical_s``: the usual batch time. Below ``MIN_COST_S`` (a function of
        microseconds) the policy stands aside and costs the worker one call per batch.
        """
        with self._lock:
            if not typical_s >= MIN_COST_S or self.timeout_ns <= 0:
                self.active = False
                return
            self.cost.observe(samples, seconds)
            self.arrivals.ended(end_ns, resolved)
            self.active = True

    def taken(self, stamps: np.ndarray) -> None:
        """Enqueue times of a batch just taken (the worker calls it while ``active``)."""
        with self._lock:
            self.arrivals.arrived(stamps)

    def plan(self, now_ns: int, queued: int, size: int, rate: float) -> tuple[float, int]:
        """``(linger_s, until_ns)`` for the next ``take_batch``.

        ``queued``: samples waiting now; ``size``: the batch size; ``rate``: the average
        arrival rate (samples/s), for a first item that finds the model idle.
        """
        with self._lock:
            return self._plan(now_ns, queued, size, rate)

    def _plan(self, now_ns: int, queued: int, size: int, rate: float) -> tuple[float, int]:
        if queued >= size:
            self.chosen_wait_s = 0.0
            return 0.0, 0
        arrivals = self.arrivals
        since_ns = max(0, now_ns - arrivals.last_end_ns)
        grid = self._grid
        # Items still expected from the last end, within each wait from now.
        expected = arrivals.expected(arrivals.last_resolved, since_ns + grid)
        expected -= expected[0]
        wait = self._best(queued + expected, grid, size)
        until_ns = now_ns + int(wait) if wait > 0 else 0
        # A first item that finds nothing waiting: the model was idle, and only the
        # average rate says what may follow it.
        linger_s = 0.0
        if queued == 0:
            linger_s = self._best(1.0 + rate * grid / 1e9, grid, size) / 1e9
        self.chosen_wait_s = max(wait / 1e9, linger_s)
        return linger_s, until_ns

    def _best(self, samples: np.ndarray, grid: np.ndarray, size: int) -> float:
        """The shortest wait within 0.5 % of the best throughput for these expected samples."""
        n = np.minimum(samples, size)
        spent = grid / 1e9 + self.cost.fixed + self.cost.per_sample * n
        score = np.divide(n, spent, out=np.zeros_like(n), where=spent > 0)
        best = float(score.max())
        if best <= 0.0:
            return 0.0
        return float(grid[int(np.argmax(score >= _NEAR_BEST * best))])
