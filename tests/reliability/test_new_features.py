"""The two features of issue 5: per-item deadlines and failure isolation.

Written against the agreed API, so that these tests fail until the features exist:

- ``BatchProcessorConfig(default_deadline=None, isolate_failures=True, isolation_budget=...)``;
- ``enqueue_predict(item, timeout=None, priority=..., deadline=None)``: ``deadline`` is the
  seconds the item may wait in the queue (``None``: the config's ``default_deadline``);
- ``fastbatch.ItemExpiredError``, a subclass of ``fastbatch.ItemTimeoutError`` (itself a
  ``TimeoutError``): an item whose deadline passes while it is queued never reaches the
  batch function, and its future fails with it *promptly* — not when the worker would
  have reached the item;
- ``get_stats()["total_expired"]``, part of ``submitted = processed + failed + cancelled +
  expired + queued + in flight``;
- failure isolation: a batch that still fails after its retries is split in halves and
  each half retried, recursively, within ``isolation_budget`` extra calls per failing
  batch, so that one poisonous item fails alone with its original exception and its
  neighbours succeed.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchProcessorConfig

from fb_reliability import Ledger, join_threads, poll, processor_threads, same

PROMPT = 0.5  # seconds an expiry may lag behind its deadline on a loaded CI machine


def oracle(item):
    return item * 2 + 1


def row(i: float) -> np.ndarray:
    return np.array([float(i), 0.5])


def expired_type():
    return fastbatch.ItemExpiredError


class Seen:
    """A batch function recording the ids (column 0) it was given; optionally gated."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.ids: list[int] = []
        self.gate = gate
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.ids.extend(int(i) for i in batch[:, 0])
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        return batch * 2 + 1


# -- the API ------------------------------------------------------------------------------------

def test_item_expired_error_is_a_fastbatch_timeout_error():
    exc = fastbatch.ItemExpiredError
    assert issubclass(exc, fastbatch.ItemTimeoutError)
    assert issubclass(exc, TimeoutError)
    assert issubclass(exc, fastbatch.FastBatchError)
    assert "ItemExpiredError" in fastbatch.__all__


def test_config_defaults():
    config = BatchProcessorConfig()
    assert config.default_deadline is None
    assert config.isolate_failures is True
    budget = config.isolation_budget
    assert isinstance(budget, int) and not isinstance(budget, bool) and budget >= 2


@pytest.mark.parametrize("name, value, error", [
    ("default_deadline", -1.0, ValueError),
    ("default_deadline", float("nan"), ValueError),
    ("default_deadline", "1", TypeError),
    ("default_deadline", True, TypeError),
    ("default_deadline", [1], TypeError),
    ("isolate_failures", 1, TypeError),
    ("isolate_failures", "yes", TypeError),
    ("isolate_failures", None, TypeError),
    ("isolation_budget", -1, ValueError),
    ("isolation_budget", 1.5, TypeError),
    ("isolation_budget", "8", TypeError),
    ("isolation_budget", True, TypeError),
    ("isolation_budget", None, TypeError),
])
def test_bad_new_config_fields_are_refused(name, value, error):
    with pytest.raises(error, match=name):
        BatchProcessorConfig(**{name: value})


@pytest.mark.parametrize("deadline, error", [
    (-1, ValueError), (float("nan"), ValueError), ("1", (TypeError, ValueError)),
    (True, (TypeError, ValueError)), ([1], (TypeError, ValueError)),
])
def test_bad_deadline_refused_at_the_call_good_neighbours_unharmed(make_processor, deadline, error):
    seen = Seen()
    processor = make_processor(seen, max_batch_size=8)
    ledger = Ledger(oracle)
    processor.pause()
    first = ledger.submit(processor, row(0))
    with pytest.raises(error, match="deadline"):
        processor.enqueue_predict(row(1), deadline=deadline)
    last = ledger.submit(processor, row(2))
    processor.resume()
    for e in (first, last):
        assert same(e.future.result(timeout=5), oracle(e.item))
    assert sorted(seen.ids) == [0, 2]
    assert processor.get_stats()["total_submitted"] == 2


# -- deadlines ---------------------------------------------------------------------------------

def _expires_promptly(future, deadline: float, enqueued_at: float) -> float:
    exc = future.exception(timeout=deadline + 5)
    took = time.monotonic() - enqueued_at
    assert isinstance(exc, expired_type()), f"expected ItemExpiredError, got {exc!r}"
    assert took < deadline + PROMPT, f"expired after {took:.3f}s for a {deadline}s deadline"
    return took


def test_item_expires_promptly_while_paused(make_processor):
    seen = Seen()
    processor = make_processor(seen)
    processor.pause()
    t0 = time.monotonic()
    future = processor.enqueue_predict(row(1), deadline=0.05)
    took = _expires_promptly(future, 0.05, t0)
    assert took >= 0.05 - 0.005, f"expired too early: {took:.3f}s"
    assert processor.get_stats()["is_paused"], "expiry must not wait for the worker"
    processor.resume()
    after = processor.enqueue_predict(row(2))
    assert same(after.result(timeout=5), oracle(row(2)))
    assert 1 not in seen.ids, "an expired item reached the batch function"
    stats = processor.get_stats()
    assert stats["total_expired"] == 1 and stats["total_processed"] == 1


def test_item_expires_promptly_while_the_worker_is_busy(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    ledger = Ledger(oracle)
    ledger.submit(processor, row(0))
    assert gate.entered.wait(5)
    t0 = time.monotonic()
    entry = ledger.submit(processor, row(1), deadline=0.05)
    _expires_promptly(entry.future, 0.05, t0)
    gate.release.set()
    assert ledger.wait(5) == 0
    processor.stop()
    report = ledger.check(processor)
    assert not report.problems, str(report)
    assert report.states == {"result": 1, "expired": 1}
    assert all(not np.any(b[:, 0] == 1) for b in gate.batches)


def test_item_within_its_deadline_is_processed(make_processor):
    processor = make_processor(lambda b: b * 2 + 1)
    future = processor.enqueue_predict(row(3), deadline=5.0)
    assert same(future.result(timeout=5), oracle(row(3)))
    assert processor.get_stats()["total_expired"] == 0


def test_deadline_counts_queue_time_only(make_processor):
    """Once its batch has started, an item is not expired: its result is delivered."""
    started = threading.Event()
    release = threading.Event()

    def slow(batch):
        started.set()
        assert release.wait(10)
        return batch * 2 + 1

    processor = make_processor(slow)
    future = processor.enqueue_predict(row(4), deadline=0.05)
    assert started.wait(5)
    assert not poll(future.done, timeout=0.2), "an item in flight was expired"
    release.set()
    assert same(future.result(timeout=5), oracle(row(4)))


def test_config_default_deadline_applies_and_a_call_overrides_it(make_processor):
    seen = Seen()
    processor = make_processor(seen, default_deadline=0.05)
    processor.pause()
    t0 = time.monotonic()
    defaulted = processor.enqueue_predict(row(1))
    overridden = processor.enqueue_predict(row(2), deadline=30.0)
    _expires_promptly(defaulted, 0.05, t0)
    processor.resume()
    assert same(overridden.result(timeout=5), oracle(row(2)))
    assert seen.ids == [2]


def test_expired_items_from_enqueue_are_counted_and_never_run(make_processor):
    seen = Seen()
    processor = make_processor(seen, default_deadline=0.05)
    processor.pause()
    for i in range(5):
        processor.enqueue(row(i))
    assert poll(lambda: processor.get_stats()["total_expired"] == 5, timeout=0.05 + PROMPT + 1)
    processor.resume()
    marker = processor.enqueue_predict(row(9), deadline=5.0)
    marker.result(timeout=5)
    processor.stop()
    stats = processor.get_stats()
    assert seen.ids == [9]
    assert stats["total_submitted"] == 6
    assert stats["total_processed"] + stats["total_failed"] + stats["total_cancelled"] \
        + stats["total_expired"] == 6


def test_cancelled_item_is_not_counted_as_expired(make_processor):
    processor = make_processor(lambda b: b * 2 + 1)
    processor.pause()
    future = processor.enqueue_predict(row(1), deadline=0.05)
    assert future.cancel()
    t0 = time.monotonic()
    marker = processor.enqueue_predict(row(2), deadline=0.05)
    _expires_promptly(marker, 0.05, t0)
    processor.resume()
    processor.stop()
    stats = processor.get_stats()
    assert future.cancelled()
    assert stats["total_expired"] == 1 and stats["total_cancelled"] == 1


def test_low_priority_item_starved_by_high_priority_traffic_expires(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, enable_priority_queue=True)
    ledger = Ledger(oracle)
    ledger.submit(processor, row(0), priority=fastbatch.BatchPriority.CRITICAL)
    assert gate.entered.wait(5)
    t0 = time.monotonic()
    starved = ledger.submit(processor, row(1), priority=fastbatch.BatchPriority.BACKGROUND, deadline=0.1)
    for i in range(2, 6):
        ledger.submit(processor, row(i), priority=fastbatch.BatchPriority.CRITICAL)
    _expires_promptly(starved.future, 0.1, t0)
    gate.release.set()
    assert ledger.wait(5) == 0
    processor.stop()
    report = ledger.check(processor)
    assert not report.problems and report.states == {"result": 5, "expired": 1}, str(report)


@pytest.mark.parametrize("timeout", [0, None])
def test_stop_with_deadlines_pending_leaves_no_thread(make_processor, timeout):
    processor = make_processor(lambda b: b * 2 + 1)
    ledger = Ledger(oracle)
    processor.pause()
    for i in range(20):
        ledger.submit(processor, row(i), deadline=60.0)
    processor.stop(timeout=timeout)
    assert ledger.wait(0) == 0
    assert not join_threads(processor_threads(processor), timeout=5), "a deadline thread was left"
    report = ledger.check(processor)
    assert not report.problems, str(report)


@pytest.mark.parametrize("seed", range(4))
def test_deadlines_under_load_ledger(make_processor, seed):
    """Producers with random deadlines against a slow function: one state per id, stats agree."""
    rng = random.Random(seed)
    expired_at: dict[int, float] = {}
    seen_lock = threading.Lock()
    seen: set[int] = set()

    def slow(batch):
        with seen_lock:
            seen.update(int(i) for i in batch[:, 0])
        threading.Event().wait(0.003)  # a model that takes time: the queue backs up
        return batch * 2 + 1

    processor = make_processor(slow, max_batch_size=4, processing_strategy="fixed",
                               enable_priority_queue=rng.random() < 0.5)
    ledger = Ledger(oracle)

    def producer(k: int) -> None:
        prng = random.Random(seed * 100 + k)
        for _ in range(60):
            ident = ledger.new_id()
            deadline = prng.choice([None, 0.005, 0.02, 0.1, 1.0])
            t0 = time.monotonic()
            entry = ledger.submit(processor, row(ident), ident=ident, deadline=deadline,
                                  priority=prng.randrange(5))
            if deadline is not None and entry.future is not None:
                entry.future.add_done_callback(
                    lambda f, i=ident, t=t0: expired_at.__setitem__(i, time.monotonic() - t))
            if prng.random() < 0.05:
                ledger.cancel(entry)

    producers = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
    for t in producers:
        t.start()
    assert not join_threads(producers, timeout=20)
    assert ledger.wait(10) == 0
    processor.stop()
    report = ledger.check(processor)
    assert not report.problems, str(report)
    assert report.states["expired"] > 0, "the load never made an item expire: the test is too gentle"
    by_id = {e.id: e for e in ledger.entries}
    for e in ledger.entries:
        if e.future is not None and not e.future.cancelled() and isinstance(e.future.exception(),
                                                                            expired_type()):
            assert e.id not in seen, f"expired id {e.id} reached the batch function"
    for ident, took in expired_at.items():
        e = by_id[ident]
        if not e.future.cancelled() and isinstance(e.future.exception(), expired_type()):
            assert took < 1.0 + PROMPT, f"id {ident} expired after {took:.3f}s"


# -- failure isolation -----------------------------------------------------------------------

class Poison(ValueError):
    pass


class Poisoned:
    """Fails any batch that holds a poisonous id; counts its calls."""

    def __init__(self, poison: set[int]) -> None:
        self.poison = poison
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.calls += 1
        bad = sorted(set(int(i) for i in batch[:, 0]) & self.poison)
        if bad:
            raise Poison(f"poisonous item {bad[0]}")
        return batch * 2 + 1


def _one_batch(make_processor, func, items, **fields):
    fields.setdefault("max_batch_size", 64)
    fields.setdefault("processing_strategy", "fixed")
    fields.setdefault("reduce_batch_on_failure", False)
    processor = make_processor(func, **fields)
    ledger = Ledger(oracle, (Poison,))
    processor.pause()
    entries = [ledger.submit(processor, item) for item in items]
    processor.resume()
    assert ledger.wait(10) == 0
    return processor, ledger, entries


@pytest.mark.parametrize("position", [0, 3, 7])
def test_one_poisonous_item_fails_alone(make_processor, position):
    func = Poisoned({position})
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(8)],
                                            max_retries=0, isolation_budget=16)
    for e in entries:
        if e.id == position:
            exc = e.future.exception()
            assert type(exc) is Poison and str(exc) == f"poisonous item {position}"
        else:
            assert same(e.future.result(), oracle(e.item)), f"neighbour {e.id} did not succeed"
    assert func.calls <= 1 + 16
    stats = processor.get_stats()
    assert stats["total_failed"] == 1 and stats["total_processed"] == 7
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_isolation_after_retries_respects_the_budget(make_processor):
    func = Poisoned({5})
    budget = 10
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(16)],
                                            max_retries=2, isolation_budget=budget)
    assert func.calls <= (1 + 2) + budget
    assert type(entries[5].future.exception()) is Poison
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_poisonous_minibatch_fails_alone_and_is_never_split(make_processor):
    items = [np.array([[float(i), 0.0], [float(i), 1.0], [float(i), 2.0]]) if i % 2 else row(i)
             for i in range(8)]
    sizes = []

    def func(batch):
        ids = batch[:, 0]
        for i in set(ids.astype(int)):
            if i % 2:
                sizes.append(int((ids == i).sum()))
        if 3 in ids:
            raise Poison("poisonous item 3")
        return batch * 2 + 1

    processor, ledger, entries = _one_batch(make_processor, func, items, max_retries=0,
                                            isolation_budget=32)
    assert set(sizes) == {3}, "a mini-batch item was split across calls"
    for e in entries:
        if e.id == 3:
            assert type(e.future.exception()) is Poison
        else:
            assert same(e.future.result(), oracle(e.item))


def test_two_poisons_fail_alone(make_processor):
    func = Poisoned({2, 13})
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(16)],
                                            max_retries=0, isolation_budget=64)
    failed = {e.id for e in entries if e.future.exception() is not None}
    assert failed == {2, 13}
    report = ledger.check(processor)
    assert not report.problems, str(report)


def test_small_budget_bounds_the_calls_and_every_future_is_final(make_processor):
    func = Poisoned({9})
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(16)],
                                            max_retries=0, isolation_budget=2)
    assert func.calls <= 1 + 2
    assert type(entries[9].future.exception()) is Poison
    for e in entries:
        exc = e.future.exception()
        assert exc is None or type(exc) is Poison  # a neighbour may share the poison's fate
    report = ledger.check(processor)
    assert not report.problems, str(report)


@pytest.mark.parametrize("fields", [dict(isolate_failures=False), dict(isolation_budget=0)])
def test_isolation_off_fails_the_whole_batch(make_processor, fields):
    func = Poisoned({1})
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(8)],
                                            max_retries=1, **fields)
    assert func.calls == 2  # the first attempt and one retry, nothing more
    assert all(type(e.future.exception()) is Poison for e in entries)


def test_single_item_batch_is_not_split_further(make_processor):
    func = Poisoned({0})
    processor, ledger, entries = _one_batch(make_processor, func, [row(0)], max_retries=1)
    assert func.calls == 2
    assert type(entries[0].future.exception()) is Poison


def test_transient_failure_is_absorbed_by_isolation(make_processor):
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise Poison("the first call fails, whatever it holds")
        return batch * 2 + 1

    processor, ledger, entries = _one_batch(make_processor, flaky, [row(i) for i in range(8)],
                                            max_retries=0)
    assert all(same(e.future.result(), oracle(e.item)) for e in entries)


def test_isolation_of_generic_list_batches(make_processor):
    calls = []

    def func(items):
        calls.append(len(items))
        if "poison" in items:
            raise Poison("poisonous item")
        return [("r", x) for x in items]

    processor = make_processor(func, batch_generic_items=True, max_batch_size=8,
                               processing_strategy="fixed", max_retries=0)
    processor.pause()
    items = ["a", "b", "poison", "c", "d", "e"]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for x, f in zip(items, futures, strict=True):
        if x == "poison":
            assert type(f.exception(timeout=5)) is Poison
        else:
            assert f.result(timeout=5) == ("r", x)


def test_isolation_counts_items_from_enqueue_too(make_processor):
    func = Poisoned({4})
    processor = make_processor(func, max_batch_size=64, processing_strategy="fixed", max_retries=0,
                               reduce_batch_on_failure=False)
    processor.pause()
    for i in range(8):
        processor.enqueue(row(i))
    processor.resume()
    processor.stop()
    stats = processor.get_stats()
    assert stats["total_failed"] == 1 and stats["total_processed"] == 7, stats


def test_stop_during_isolation_leaves_every_future_final(make_processor):
    entered = threading.Event()
    release = threading.Event()
    calls = []

    def func(batch):
        calls.append(len(batch))
        if len(calls) > 1:  # the isolation calls stall
            entered.set()
            release.wait(10)
        if 6 in batch[:, 0]:
            raise Poison("poisonous item 6")
        return batch * 2 + 1

    processor = make_processor(func, max_batch_size=64, processing_strategy="fixed", max_retries=0)
    ledger = Ledger(oracle, (Poison, fastbatch.ProcessorStoppedError))
    processor.pause()
    for i in range(16):
        ledger.submit(processor, row(i))
    processor.resume()
    assert entered.wait(5)
    timer = threading.Timer(0.05, release.set)
    timer.start()
    processor.stop(timeout=0)
    timer.join()
    assert ledger.wait(0) == 0, "stop() returned with futures pending"
    assert not join_threads(processor_threads(processor), timeout=5)
    report = ledger.check(processor)
    assert not report.problems, str(report)


@pytest.mark.parametrize("seed", range(6))
def test_isolation_random_ledger(make_processor, seed):
    """Random poison sets and batch sizes: poisons fail, neighbours succeed, nothing misrouted."""
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    poison = set(rng.sample(range(n), rng.randint(0, min(3, n))))
    func = Poisoned(poison)
    processor, ledger, entries = _one_batch(make_processor, func, [row(i) for i in range(n)],
                                            max_retries=rng.choice([0, 1]), isolation_budget=256,
                                            max_batch_size=rng.choice([4, 16, 64]))
    for e in entries:
        if e.id in poison:
            assert type(e.future.exception()) is Poison
        else:
            assert same(e.future.result(), oracle(e.item)), f"id {e.id} failed: {e.future.exception()!r}"
    report = ledger.check(processor)
    assert not report.problems, str(report)
