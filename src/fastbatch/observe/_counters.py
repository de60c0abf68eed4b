"""``Counters``: every running total ``get_stats()`` reports, behind one lock.

The rule that keeps the totals honest: an item's outcome is counted by the thread that
makes it final, in the same step, before anybody can see it. For an item with a future
that step is the future's state change (``_future`` calls :meth:`Counters.add` under the
futures' lock, before writing the state); for an item without one it is the worker's
bookkeeping. So at every quiescent point::

    submitted = processed + failed + cancelled + expired + queued + in_flight

where ``submitted`` is what the runs' queues accepted (each queue counts its own puts under
its own lock; :meth:`close_run` adds a finished run's count here), ``queued`` what the queue
still holds minus the expired items it still holds, and ``in_flight`` what the worker has
taken and not yet settled.
"""

from __future__ import annotations

import threading
from typing import Any

#: The totals, in the order ``snapshot`` reports them.
FIELDS = ("submitted_before", "refused", "processed", "failed", "cancelled", "expired",
          "expired_dropped", "in_flight", "samples", "batches", "batch_errors", "external_errors",
          "pad_positions", "real_positions", "shed")


class Counters:
    """The totals since the processor was created; thread-safe, one lock for all."""

    __slots__ = ("_lock",) + FIELDS

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted_before = 0  # accepted by the queues of finished runs
        self.refused = 0  # calls refused for a full queue
        self.processed = 0
        self.failed = 0
        self.cancelled = 0
        self.expired = 0  # deadline passed while queued (the future failed at once)
        self.expired_dropped = 0  # of those, the ones that have left the queue
        self.in_flight = 0
        self.samples = 0
        self.batches = 0
        self.batch_errors = 0  # failed calls of the batch function
        self.external_errors = 0  # counted by the user (BatchStats.record_error)
        # Variable-length batches that ran: padded and real positions (first axis).
        self.pad_positions = 0
        self.real_positions = 0
        self.shed = 0  # of the refused: over target_latency_ms

    def add(self, processed: int = 0, failed: int = 0, cancelled: int = 0, expired: int = 0,
            expired_dropped: int = 0, in_flight: int = 0, samples: int = 0, batches: int = 0,
            batch_errors: int = 0, refused: int = 0, external_errors: int = 0,
            pad_positions: int = 0, real_positions: int = 0, shed: int = 0) -> None:
        """Add to any of the totals at once (negative ``in_flight`` settles taken items)."""
        with self._lock:
            self.processed += processed
            self.failed += failed
            self.cancelled += cancelled
            self.expired += expired
            self.expired_dropped += expired_dropped
            self.in_flight += in_flight
            self.samples += samples
            self.batches += batches
            self.batch_errors += batch_errors
            self.refused += refused
            self.external_errors += external_errors
            self.pad_positions += pad_positions
            self.real_positions += real_positions
            self.shed += shed

    def taken(self, n: int) -> None:
        """``n`` items left the queue for a batch (the worker's one update per take)."""
        with self._lock:
            self.in_flight += n

    def batch_ended(self, batches: int, samples: int, pad_positions: int, real_positions: int,
                    processed: int, failed: int, in_flight: int) -> None:
        """A batch's whole outcome in one update: the worker's one update per batch end
        (``resolve_batch`` adds its results' count to ``processed`` and ``in_flight``)."""
        with self._lock:
            self.batches += batches
            self.samples += samples
            self.pad_positions += pad_positions
            self.real_positions += real_positions
            self.processed += processed
            self.failed += failed
            self.in_flight += in_flight

    def settle(self, outcome: str, taken: bool) -> None:
        """Count one future's final outcome ("processed", "failed", "cancelled", "expired").

        Called under the futures' lock just before the state is written. ``taken``: the
        item had left the queue for a batch (it was counted in flight).
        """
        with self._lock:
            if outcome == "processed":
                self.processed += 1
            elif outcome == "failed":
                self.failed += 1
            elif outcome == "cancelled":
                self.cancelled += 1
            else:
                self.expired += 1
            if taken:
                self.in_flight -= 1

    def close_run(self, accepted: int) -> None:
        """A run ended: keep what its queue accepted (the next run has a new queue)."""
        with self._lock:
            self.submitted_before += accepted

    def snapshot(self) -> dict[str, Any]:
        """Every total, read under the lock at one moment."""
        with self._lock:
            return {name: getattr(self, name) for name in FIELDS}

    def reset_after_fork(self) -> None:
        """In a forked child the lock may be held by a thread that no longer exists."""
        self._lock = threading.Lock()
