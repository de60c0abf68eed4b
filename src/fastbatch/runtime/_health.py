"""The health monitor: stuck batches, process memory and queue growth.

A thread (``fastbatch-health-<name>``) runs ``check(act=True)`` every
``health_check_interval`` seconds and wakes at once on ``stop()``. Each check looks at:

- the running batch: longer than ``stuck_batch_timeout`` → critical ("stuck");
- the process's share of RAM (psutil): above ``memory_warning_threshold`` → warning and a
  garbage collection (when ``enable_memory_optimization``); above
  ``memory_critical_threshold`` → critical, a collection and a halved batch size;
- the queue: above ``queue_warning_threshold`` items → warning and a batch size 25 %
  larger; above ``queue_critical_threshold`` → critical and the maximum batch size.

Batch-size actions are skipped under the FIXED strategy: a fixed size stays fixed.
Every reason is logged through the ``fastbatch`` logger when it appears and when it clears,
not on every check.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Callable

import psutil

from .._config import BatchProcessingStrategy, BatchProcessorConfig
from ..core import _backend
from ._scheduler import Scheduler

logger = logging.getLogger("fastbatch")


@dataclasses.dataclass(frozen=True)
class HealthSnapshot:
    """The outcome of one health check.

    Attributes:
        status: "ok", "warning", "critical", or "stopped" when the processor is not running.
        reasons: one line per problem found, empty when status is "ok".
        memory_percent: the process's resident memory as a percentage of RAM.
        queue_size: items waiting in the queue.
        batch_running_s: how long the batch in flight has been running (0.0 when idle).
        batch_size: the batch size in force after the check's actions.
    """

    status: str
    reasons: tuple[str, ...]
    memory_percent: float
    queue_size: int
    batch_running_s: float
    batch_size: int


class HealthMonitor:
    """Checks the processor's health now (``check``) or periodically (``start``)."""

    def __init__(
        self,
        name: str,
        config: BatchProcessorConfig,
        scheduler: Scheduler,
        queue_size: Callable[[], int],
        running_since_ns: Callable[[], list[int]],
    ) -> None:
        self.name = name
        self.config = config
        self.scheduler = scheduler
        self._queue_size = queue_size
        self._running_since_ns = running_since_ns
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: dict[str, str] = {}  # reason kind -> level reported; monitor thread only

    def start(self) -> threading.Thread:
        """Start the periodic checks on their own thread; returns the thread."""
        self._thread = threading.Thread(target=self._run, name=f"fastbatch-health-{self.name}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Stop the periodic checks and join the thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.config.health_check_interval):
            try:
                self.check(act=True)
            except Exception:  # noqa: BLE001 - a failed check must not end monitoring
                logger.exception("fastbatch: health check of %s failed", self.name)

    def check(self, act: bool = False) -> HealthSnapshot:
        """Measure now; with ``act``, also collect garbage, resize batches and log changes."""
        cfg = self.config
        reasons: dict[str, tuple[str, str]] = {}  # kind -> (level, text)
        now_ns = _backend.monotonic_ns()
        running = sorted(((now_ns - started) / 1e9 for started in self._running_since_ns()), reverse=True)
        running_s = running[0] if running else 0.0  # the longest-running batch
        stuck = [s for s in running if s > cfg.stuck_batch_timeout]
        if len(stuck) == 1:
            reasons["stuck"] = ("critical", f"a batch has been running for {stuck[0]:.1f}s "
                                            f"(stuck_batch_timeout={cfg.stuck_batch_timeout}s)")
        elif stuck:
            reasons["stuck"] = ("critical", f"{len(stuck)} batches have been running for "
                                            f"{', '.join(f'{s:.1f}s' for s in stuck)} "
                                            f"(stuck_batch_timeout={cfg.stuck_batch_timeout}s)")
        memory = self._process.memory_percent()
        if memory >= cfg.memory_critical_threshold:
            reasons["memory"] = ("critical", f"process memory {memory:.1f}% >= "
                                             f"memory_critical_threshold={cfg.memory_critical_threshold}%")
        elif memory >= cfg.memory_warning_threshold:
            reasons["memory"] = ("warning", f"process memory {memory:.1f}% >= "
                                            f"memory_warning_threshold={cfg.memory_warning_threshold}%")
        queued = self._queue_size()
        if queued >= cfg.queue_critical_threshold:
            reasons["queue"] = ("critical", f"{queued} items queued >= "
                                            f"queue_critical_threshold={cfg.queue_critical_threshold}")
        elif queued >= cfg.queue_warning_threshold:
            reasons["queue"] = ("warning", f"{queued} items queued >= "
                                           f"queue_warning_threshold={cfg.queue_warning_threshold}")
        if act:
            self._act(reasons)
        levels = {level for level, _ in reasons.values()}
        status = "critical" if "critical" in levels else "warning" if levels else "ok"
        return HealthSnapshot(status, tuple(text for _, text in reasons.values()), memory,
                              queued, running_s, self.scheduler.size)

    def _act(self, reasons: dict[str, tuple[str, str]]) -> None:
        cfg = self.config
        resizable = self.scheduler.strategy is not BatchProcessingStrategy.FIXED
        memory = reasons.get("memory")
        if memory is not None:
            if cfg.enable_memory_optimization:
                gc.collect()
            if memory[0] == "critical" and resizable:
                self.scheduler.shrink(0.5)
        queue = reasons.get("queue")
        if queue is not None and resizable and memory is None:
            if queue[0] == "critical":
                self.scheduler.set(self.scheduler.max_size)
            else:
                self.scheduler.grow(1.25)
        for kind, (level, text) in reasons.items():
            if self._active.get(kind) != level:
                log = logger.error if level == "critical" else logger.warning
                log("fastbatch %s: %s (batch size now %d)", self.name, text, self.scheduler.size)
        for kind in self._active - reasons.keys():
            logger.info("fastbatch %s: %s back to normal", self.name, kind)
        self._active = {kind: level for kind, (level, _) in reasons.items()}
