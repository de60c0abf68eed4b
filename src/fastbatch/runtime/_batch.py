"""``Batch``: one batch, from the take that formed it to the resolution of its futures.

The worker that takes a batch makes its ``Batch`` and is the only thread that changes it.
Once published (``Worker.current``), others read it without a lock: ``stop()`` reads
``futures`` (published under the worker's ``handoff`` lock, never mutated after) and the
health monitor, the statistics and the intake read ``running_since_ns()`` (two
attributes the worker sets, each read once).
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from ..items._lanes import Lane


class Batch:
    """The items of one lane taken together, and what running them found out."""

    __slots__ = ("attempts", "calls", "clean", "counted", "enqueue_ns", "futures", "items", "lane", "pad_positions",
                 "queue_length", "real_positions", "running", "samples", "start_ns", "wants_results", "without",
                 "worker")

    def __init__(self, lane: Lane, items: list[Any], futures: list[Any], without: int, enqueue_ns: npt.NDArray[Any],
                 start_ns: int, queue_length: int, worker: Any) -> None:
        self.lane = lane
        self.worker = worker  # the Worker running it
        self.items = items
        self.futures = futures  # None for an item queued without a future (enqueue)
        # How many items have no future (counted once: list.count compares every future);
        # whether any item has a future to hand a result to.
        self.without = without
        self.wants_results = without != len(futures)
        self.enqueue_ns = enqueue_ns
        self.start_ns = start_ns
        self.queue_length = queue_length  # items still queued when it was taken
        # Filled in while it runs: samples once assembled (items until then), the
        # padded and real positions of a variable-length batch, and how many calls of
        # the batch function it stands for (one per item for per-item processing).
        self.samples = len(items)
        self.pad_positions = self.real_positions = 0
        self.calls = 1
        # Calls of the whole batch (retries included), and whether its one call succeeded
        # at the first attempt and its result split: only such a batch measures what a
        # batch costs.
        self.attempts = 0
        self.clean = False
        self.counted = False  # its outcome is in the counters (set just before they are added)
        self.running = False  # the batch function is being called for it (written by its worker)

    @property
    def key(self) -> Any:
        return self.lane.key

    @property
    def kind(self) -> str:
        return self.lane.kind

    def running_since_ns(self) -> int:
        """When the batch function was first called for it; 0 when not running now."""
        return self.start_ns if self.running else 0

    def release(self) -> None:
        """Drop the items, futures and worker: the batch is resolved, they are the callers' now."""
        self.items = []
        self.futures = []
        self.worker = None
