"""A hypothesis state machine over enqueue / take / pause / resume / cancel / stop / start.

The batch function is a ``Stepper``: it holds each batch until the machine's ``take``
rule lets one through, so the machine decides when batches complete; with
``max_concurrent_batches`` of 1, 2 or 4 it may hold as many at once. After every rule the
machine waits until the processor has settled (every worker is holding a batch, or there
is nothing they may take, and the statistics have caught up), then checks the invariants:

- every id is in exactly one state (ledger), results are the item's own (no misrouting),
  a cancelled future is one the machine cancelled and never reached the function;
- the futures not yet finished are exactly those queued or held by the stepper;
- ``total_submitted = processed + failed + cancelled + expired + queue_size + in flight``,
  and processed/failed/cancelled agree with the ledger;
- after ``stop()`` every future is final at once, nothing is left running.
"""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import fastbatch

from fb_reliability import EXTENDED, FIGURES, Ledger, join_threads, poll, processor_threads


class Stepper:
    """Batch function that holds every batch until given a permit (or set free)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.cond = threading.Condition()
        self.holding: dict[int, list[int]] = {}  # ids of each batch being held, by call
        self._calls = 0
        self.permits = 0
        self.free = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        ids = list(dict.fromkeys(int(i) for i in batch[:, 0]))  # one id per item, not per row
        self.ledger.note_seen(ids)
        with self.cond:
            self._calls += 1
            call = self._calls
            self.holding[call] = ids
            self.cond.notify_all()
            ok = self.cond.wait_for(lambda: self.free or self.permits > 0, timeout=30)
            if self.permits:
                self.permits -= 1
            del self.holding[call]
            self.cond.notify_all()
        assert ok, "the state machine never let the batch through"
        return batch * 2 + 1

    def held(self) -> tuple[int, int]:
        """(batches, items) held now."""
        with self.cond:
            return len(self.holding), sum(len(ids) for ids in self.holding.values())

    def release_one(self) -> bool:
        with self.cond:
            if not self.holding:
                return False
            self.permits += 1
            self.cond.notify_all()
            return True

    def set_free(self) -> None:
        with self.cond:
            self.free = True
            self.cond.notify_all()


def oracle(item: np.ndarray) -> np.ndarray:
    return item * 2 + 1


ALL_PHASES = list(Phase)
MAX_EXAMPLES = 500 if EXTENDED else 100
STEPS = 50 if EXTENDED else 30


def test_processor_state_machine(core_name):
    class ProcessorMachine(RuleBasedStateMachine):
        @initialize(queue_size=st.sampled_from([0, 3, 8]), batch=st.sampled_from([1, 2, 4]),
                    prioritized=st.booleans(), concurrent=st.sampled_from([1, 2, 4]))
        def setup(self, queue_size: int, batch: int, prioritized: bool, concurrent: int) -> None:
            self.ledger = Ledger(oracle, (fastbatch.ProcessorStoppedError,))
            self.concurrent = concurrent
            self.processor = fastbatch.BatchProcessor(fastbatch.BatchProcessorConfig(
                max_concurrent_batches=concurrent,
                max_queue_size=queue_size, max_batch_size=batch, initial_batch_size=batch,
                min_batch_size=1, batch_timeout=0.0, processing_strategy="fixed",
                enable_priority_queue=prioritized, enable_health_monitoring=False, retry_delay=0.0,
                # The model below counts one request per item; split items have their tests.
                split_oversized=False))
            self.stepper = Stepper(self.ledger)
            self.processor.start(self.stepper)
            self.running = True
            self.paused = False
            self.log: list[str] = [
                f"setup(queue_size={queue_size}, batch={batch}, prioritized={prioritized}, "
                f"concurrent={concurrent})"]

        def teardown(self) -> None:
            processor = getattr(self, "processor", None)
            if processor is None:
                return
            self.stepper.set_free()
            processor.stop(timeout=5)
            left = join_threads(processor_threads(processor), timeout=10)
            FIGURES["threads_left"] += len(left)
            assert not left, f"threads left: {left}"

        # -- rules ------------------------------------------------------------------

        @rule(rows=st.sampled_from([0, 0, 1, 2]), priority=st.integers(0, 4))
        def enqueue(self, rows: int, priority: int) -> None:
            self.log.append(f"enqueue(rows={rows}, priority={priority})")
            ident = self.ledger.new_id()
            item = (np.array([float(ident), 0.0]) if rows == 0
                    else np.array([[float(ident), float(j)] for j in range(rows)]))
            entry = self.ledger.submit(self.processor, item, ident=ident, timeout=0, priority=priority)
            if not self.running:
                assert isinstance(entry.refused, fastbatch.ProcessorStoppedError), entry.refused
            else:
                assert entry.refused is None, f"refused while running: {entry.refused!r}"
            self.settle()

        @rule()
        def take(self) -> None:
            """Let the batch the stepper holds complete."""
            self.log.append("take()")
            if self.stepper.release_one():
                # Until the worker has taken the permit, the processor still looks settled.
                assert poll(lambda: self.stepper.permits == 0, timeout=5), "the permit was never taken"
            self.settle()

        @rule()
        def pause(self) -> None:
            self.log.append("pause()")
            self.processor.pause()
            self.paused = True
            self.settle()

        @rule()
        def resume(self) -> None:
            self.log.append("resume()")
            self.processor.resume()
            self.paused = False
            self.settle()

        @rule(pick=st.integers(0, 10_000))
        def cancel(self, pick: int) -> None:
            self.log.append(f"cancel(pick={pick})")
            futures = [e for e in self.ledger.entries if e.future is not None]
            if futures:
                entry = futures[pick % len(futures)]
                finished = entry.future.done() and not entry.future.cancelled()
                ok = self.ledger.cancel(entry)
                assert not (finished and ok), "cancel() succeeded on a finished future"
            self.settle()

        @precondition(lambda self: self.running)
        @rule(timeout=st.sampled_from([0, 0.01, None]))
        def stop(self, timeout: float | None) -> None:
            self.log.append(f"stop(timeout={timeout})")
            self.stepper.set_free()  # stop() must not wait on the machine
            self.processor.stop(timeout=timeout)
            self.running = False
            pending = [e.id for e in self.ledger.entries
                       if e.future is not None and e.accepted and not e.future.done()]
            assert not pending, f"futures still pending after stop({timeout}) returned: {pending}"
            left = join_threads(processor_threads(self.processor), timeout=10)
            assert not left, f"threads left after stop: {left}"
            assert self.processor.get_stats()["is_running"] is False

        @precondition(lambda self: not self.running)
        @rule()
        def start(self) -> None:
            self.log.append("start()")
            self.stepper = Stepper(self.ledger)
            self.processor.start(self.stepper)
            self.running = True
            if self.paused:
                self.processor.pause()  # pause() before start() holds the new queue too
            self.settle()

        # -- settling and invariants ----------------------------------------------------

        def inflight(self) -> int:
            return self.stepper.held()[1]

        def settled(self) -> bool:
            if not self.running:
                return True
            s = self.processor.get_stats()
            batches, held = self.stepper.held()
            if s.get("items_in_flight", held) != held:
                # The worker has taken items the function does not hold (yet, or any
                # more): it is between states, and get_stats() reads the queue and the
                # counters one after the other, so its sums are only exact when it rests.
                return False
            inflight = held
            accounted = (s["total_processed"] + s["total_failed"] + s["total_cancelled"]
                         + s.get("total_expired", 0) + s["queue_size"] + inflight)
            # Every worker holds a batch, or none may take one.
            idle = batches == self.concurrent or s["queue_size"] == 0 or s["is_paused"]
            return idle and accounted == s["total_submitted"] and s["active_batches"] == batches

        def settle(self) -> None:
            # Two observations in a row, so that a worker between two states is not
            # mistaken for a settled one.
            assert poll(lambda: self.settled() and self.settled(), timeout=3), (
                f"the processor did not settle: {self.processor.get_stats()}, "
                f"holding={self.stepper.holding}; steps: {self.steps()}")
            FIGURES["state_machine_steps"] += 1

        def steps(self) -> str:
            return " -> ".join(self.log[-15:])

        @invariant()
        def ledger_agrees(self) -> None:
            if not hasattr(self, "ledger"):
                return
            report = self.ledger.check(self.processor, final=not self.running, inflight=self.inflight(),
                                       exact=not self.running)
            assert not report.problems, f"{report}\nsteps: {self.steps()}"
            if self.running:
                s = report.stats
                pending = sum(1 for e in self.ledger.entries
                              if e.future is not None and e.accepted and not e.future.done())
                held = max(self.inflight(), s.get("items_in_flight", 0))
                # Cancelled futures still sit in the queue until the worker reaches them.
                cancelled_waiting = report.states["cancelled"] - s["total_cancelled"]
                assert pending + cancelled_waiting == s["queue_size"] + held, (
                    f"{pending} pending + {cancelled_waiting} cancelled but queued != "
                    f"{s['queue_size']} queued + {held} held; {report}\nsteps: {self.steps()}")
                if "items_in_flight" in s:  # the stats' own count of what the worker holds
                    assert s["items_in_flight"] == held, (
                        f"items_in_flight={s['items_in_flight']} but the function holds {held}; "
                        f"steps: {self.steps()}")
                assert s["total_processed"] == report.states["result"], f"{report}\nsteps: {self.steps()}"
                assert s["total_failed"] == report.states["failed"], f"{report}\nsteps: {self.steps()}"

    run_state_machine_as_test(
        ProcessorMachine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            derandomize=not EXTENDED,
            # A failing example waits for timeouts; shrinking it in CI would take minutes.
            phases=ALL_PHASES if EXTENDED else [Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    FIGURES["state_machine_examples"] += MAX_EXAMPLES
