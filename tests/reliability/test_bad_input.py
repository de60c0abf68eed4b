"""Bad input matrix: every config field, every way to hand in a bad item or argument.

Rules under test (README "Configuration" and "How batching is decided"):

- a bad config is refused at construction with ``TypeError``/``ValueError`` naming the
  field; no thread starts; extreme values are refused there or honoured — never a worker
  that crashes later;
- a bad item or argument is refused *at the call* with a message naming the problem, and
  never harms the good items it would have been batched with; a refused call leaves no
  trace (no schema fixed, no counters moved);
- NaN and inf are data: rows holding them are processed like any other.
"""

from __future__ import annotations

import logging
import math
import re
import threading

import numpy as np
import pytest

import fastbatch
from fastbatch import BatchProcessor, BatchProcessorConfig

from fb_reliability import Ledger, fastbatch_threads, join_threads, poll, same

# -- config ------------------------------------------------------------------------------------

INT_FIELDS = {
    "initial_batch_size": 1, "min_batch_size": 1, "max_batch_size": 1, "max_queue_size": 0,
    "max_retries": 0, "monitoring_window": 1, "queue_warning_threshold": 1,
    "queue_critical_threshold": 1, "gc_batch_threshold": 1, "max_workers": 1,
}
NONNEG_FLOATS = ("batch_timeout", "min_batch_interval", "retry_delay")
POSITIVE_FLOATS = ("health_check_interval", "stuck_batch_timeout")
OPTIONAL_POSITIVE = ("item_timeout", "max_batch_memory_mb")
PERCENTS = ("memory_warning_threshold", "memory_critical_threshold")
BOOLS = ("enable_priority_queue", "enable_monitoring", "enable_health_monitoring",
         "enable_memory_optimization", "enable_adaptive_batching", "reduce_batch_on_failure",
         "debug_mode", "batch_generic_items", "raise_on_queue_full")


def _cases():
    for name, minimum in INT_FIELDS.items():
        for bad in ("8", 8.0, None, True, [8], 8 + 0j):
            yield name, bad, TypeError
        for bad in (minimum - 1, -(2**70)):
            yield name, bad, ValueError
    for name in NONNEG_FLOATS + POSITIVE_FLOATS + OPTIONAL_POSITIVE + PERCENTS:
        for bad in ("0.1", True, [0.1], 1j, b"1"):
            yield name, bad, TypeError
        for bad in (-1, -1e-9, math.nan, math.inf, -math.inf):
            yield name, bad, ValueError
        if name not in OPTIONAL_POSITIVE:
            yield name, None, TypeError
        if name not in NONNEG_FLOATS:
            yield name, 0, ValueError
    for name in PERCENTS:
        yield name, 100.5, ValueError
    for name in BOOLS:
        for bad in (1, 0, "yes", None, np.bool_(True)):
            yield name, bad, TypeError
    yield "processing_strategy", "nope", ValueError
    for bad in (3, None, ["fixed"]):
        yield "processing_strategy", bad, TypeError


@pytest.mark.parametrize("name, value, error", list(_cases()))
def test_bad_config_field_is_refused_naming_the_field(name, value, error):
    before = set(threading.enumerate())
    with pytest.raises(error) as info:
        BatchProcessorConfig(**{name: value})
    assert name in str(info.value), f"the message does not name {name}: {info.value}"
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("fields, named", [
    (dict(min_batch_size=10, max_batch_size=5, initial_batch_size=7), "min_batch_size"),
    (dict(initial_batch_size=300, max_batch_size=200), "initial_batch_size"),
    (dict(queue_warning_threshold=500, queue_critical_threshold=500), "queue_warning_threshold"),
    (dict(memory_warning_threshold=90.0), "memory_warning_threshold"),
    (dict(memory_critical_threshold=60.0), "memory_critical_threshold"),
])
def test_inconsistent_fields_are_refused(fields, named):
    with pytest.raises(ValueError) as info:
        BatchProcessorConfig(**fields)
    assert named in str(info.value)


def test_unknown_field_is_refused():
    with pytest.raises(TypeError, match="max_batchsize"):
        BatchProcessorConfig(max_batchsize=4)


def test_config_broken_after_construction_is_refused_by_the_processor():
    config = BatchProcessorConfig()
    config.max_retries = -3
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="max_retries"):
        BatchProcessor(config)
    with pytest.raises(TypeError, match="BatchProcessorConfig"):
        BatchProcessor({"max_retries": 3})  # type: ignore[arg-type]
    assert set(threading.enumerate()) <= before


@pytest.mark.parametrize("func", [None, 5, "lambda b: b"])
def test_start_with_a_non_callable_is_refused(make_processor, func):
    processor = make_processor()
    with pytest.raises(TypeError, match="callable"):
        processor.start(func)
    assert not fastbatch_threads()


def test_start_twice_is_refused(make_processor):
    processor = make_processor(lambda b: b)
    with pytest.raises(RuntimeError, match="already running"):
        processor.start(lambda b: b)


@pytest.mark.parametrize("timeout", [-1, -0.001, math.nan, "1"])
def test_bad_stop_timeout_is_refused_and_the_processor_keeps_running(make_processor, timeout):
    processor = make_processor(lambda b: b * 2 + 1)
    with pytest.raises((TypeError, ValueError)):
        processor.stop(timeout=timeout)
    assert processor.is_running
    assert same(processor.enqueue_predict(np.ones(2)).result(timeout=5), np.full(2, 3.0))


# Extreme values: refused at construction, or honoured (with a processor that works and a
# stop that ends it) -- never a worker or monitor thread that crashes on them later.

def _crashes(caplog):
    return [r.getMessage() for r in caplog.records if "crash" in r.getMessage()
            or (r.exc_info and r.levelno >= logging.ERROR)]


def _construct_or_skip_check(fields):
    try:
        return BatchProcessorConfig(**fields)
    except (TypeError, ValueError) as exc:
        assert any(name in str(exc) for name in fields), exc
        return None


@pytest.mark.parametrize("fields", [
    dict(max_queue_size=2**63),
    dict(max_queue_size=2**64 + 1),
    dict(max_batch_size=2**63, processing_strategy="greedy"),
    dict(max_batch_size=2**63, initial_batch_size=2**62, processing_strategy="fixed"),
    dict(max_batch_memory_mb=1e300),
    dict(batch_timeout=1e12),
])
def test_extreme_sizes_are_refused_or_honoured(make_processor, caplog, fields):
    config = _construct_or_skip_check(fields)
    if config is None:
        return
    fields = {"enable_health_monitoring": False, "min_batch_size": 1, **fields}
    fields.setdefault("initial_batch_size", 1)
    processor = BatchProcessor(BatchProcessorConfig(**fields))
    processor.start(lambda b: b * 2 + 1)  # must not raise OverflowError here either
    ledger = Ledger(lambda x: x * 2 + 1)
    for i in range(5):
        ledger.submit(processor, np.array([float(i), 1.0]))
    processor.stop(timeout=5)  # closing ends the linger of a huge batch_timeout
    report = ledger.check(processor)
    assert not _crashes(caplog), _crashes(caplog)
    assert report.states["result"] == 5, str(report)


def test_huge_min_batch_interval_is_honoured_not_a_crash(make_processor, caplog):
    if _construct_or_skip_check(dict(min_batch_interval=1e12)) is None:
        return
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=1, min_batch_interval=1e12)
    first = processor.enqueue_predict(np.ones(2))
    assert same(first.result(timeout=5), np.full(2, 3.0))
    second = processor.enqueue_predict(np.ones(2))  # waits for the next batch slot, "forever"
    assert not poll(second.done, timeout=0.2), "the interval was not honoured"
    processor.stop(timeout=0.1)
    assert isinstance(second.exception(timeout=0), fastbatch.ProcessorStoppedError)
    assert not _crashes(caplog), _crashes(caplog)


def test_huge_retry_delay_is_cut_short_by_stop(make_processor, caplog):
    if _construct_or_skip_check(dict(retry_delay=1e12)) is None:
        return
    calls = []

    def func(batch):
        calls.append(1)
        raise KeyError("first attempt fails")

    processor = make_processor(func, max_retries=1, retry_delay=1e12)
    future = processor.enqueue_predict(np.ones(2))
    assert poll(lambda: calls, timeout=5)
    assert not poll(future.done, timeout=0.2), "the retry delay was not honoured"
    processor.stop(timeout=0.1)
    exc = future.exception(timeout=5)
    assert isinstance(exc, (KeyError, fastbatch.ProcessorStoppedError)), repr(exc)


def test_huge_health_check_interval_is_honoured_not_a_crash(make_processor):
    # A monitor thread dying of OverflowError surfaces as an unhandled thread exception,
    # which pytest turns into an error under filterwarnings=error.
    if _construct_or_skip_check(dict(health_check_interval=1e12)) is None:
        return
    processor = make_processor(lambda b: b, enable_health_monitoring=True, health_check_interval=1e12)
    assert same(processor.enqueue_predict(np.ones(2)).result(timeout=5), np.ones(2))
    processor.stop(timeout=5)
    assert not join_threads(fastbatch_threads(), timeout=5)


def test_huge_item_timeout_is_honoured(make_processor):
    if _construct_or_skip_check(dict(item_timeout=1e12)) is None:
        return
    processor = make_processor(lambda x: ("r", x), item_timeout=1e12)
    assert processor.enqueue_predict("a").result(timeout=5) == ("r", "a")


# -- items ---------------------------------------------------------------------------------------

ROW = np.arange(10.0)

BAD_ITEMS = [
    pytest.param(None, TypeError, r"None", id="None"),
    pytest.param(np.array(3.0), ValueError, r"0-d", id="0-d"),
    pytest.param(np.array([None] * 10, dtype=object), fastbatch.BatchDtypeError, r"object", id="object"),
    pytest.param(np.zeros((0, 10)), ValueError, r"0 samples", id="empty-minibatch"),
    pytest.param(np.zeros((200, 10)), ValueError, r"bytes exceeds the batch byte budget", id="over-budget"),
    # Several inputs (a tuple or dict of arrays): each refusal names the field.
    pytest.param((), ValueError, r"empty tuple", id="empty-tuple"),
    pytest.param((np.zeros(10), 1.0), TypeError, r"only numpy arrays: field 1 is float", id="tuple-mixed"),
    pytest.param({"a": np.zeros(10), "b": np.zeros((2, 10))}, ValueError,
                 r"same number of samples .*field 'a' has 1, field 'b' has 2", id="dict-unequal"),
    pytest.param({"a": np.array(1.0)}, ValueError, r"field 'a' is a 0-d array", id="dict-0-d"),
    pytest.param((np.zeros((100, 10)), np.zeros((100, 10))), ValueError, r"bytes exceeds the batch byte budget",
                 id="tuple-over-budget"),
]


def oracle(item):
    return item * 2 + 1


def _one_batch_around(make_processor, call):
    """Good item, ``call()`` (which must raise), good item — queued for one batch.

    Returns the exception and the batches the function saw.
    """
    batches = []

    def func(batch):
        batches.append(batch.copy())
        return batch * 2 + 1

    processor = make_processor(func, max_batch_size=8, max_batch_memory_mb=0.01)
    ledger = Ledger(oracle)
    processor.pause()
    first = ledger.submit(processor, ROW)
    try:
        call(processor)
    except Exception as exc:  # noqa: BLE001 - returned for the assertions
        error = exc
    else:
        error = None
    last = ledger.submit(processor, ROW + 100)
    stats = processor.get_stats()
    processor.resume()
    for e in (first, last):
        assert same(e.future.result(timeout=5), oracle(e.item)), "a good item was harmed"
    assert len(batches) == 1 and len(batches[0]) == 2, "the good items were not batched together"
    assert stats["total_submitted"] == 2 and stats["total_refused"] == 0
    return error


# Items of another shape, dtype or kind than their neighbours are no error: each goes
# into the lane of its signature, and batches never mix lanes.
OTHER_LANE_ITEMS = [
    pytest.param(np.zeros(4), id="short-row"),
    pytest.param(np.zeros((2, 4)), id="minibatch-shape"),
    pytest.param(np.zeros((2, 10, 1)), id="3-d"),
    pytest.param(np.zeros(10, np.float32), id="float32"),
    pytest.param(np.zeros(10, np.int64), id="int64"),
    pytest.param(np.zeros(10, np.complex128), id="complex"),
    pytest.param(np.zeros(10, ">f8"), id="byteswapped"),
    pytest.param("text", id="str"),
    pytest.param([0.0] * 10, id="list"),
    pytest.param(np.float64(1.0), id="numpy-scalar"),
]


@pytest.mark.parametrize("item", OTHER_LANE_ITEMS)
def test_an_item_unlike_its_neighbours_runs_in_its_own_batch(make_processor, item):
    batches = []

    def func(batch):
        batches.append(batch)
        return batch if isinstance(batch, np.ndarray) else "own call"

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    first = processor.enqueue_predict(ROW)
    other = processor.enqueue_predict(item)
    last = processor.enqueue_predict(ROW + 100)
    processor.resume()
    assert same(first.result(timeout=5), ROW) and same(last.result(timeout=5), ROW + 100)
    got = other.result(timeout=5)
    if isinstance(item, np.ndarray):
        assert same(got, item) and got.dtype == item.dtype
    else:
        assert got == "own call"
    rows = [b for b in batches if isinstance(b, np.ndarray) and b.shape == (2, 10) and b.dtype == ROW.dtype]
    assert len(rows) == 1, f"the good items were not batched together: {batches}"
    assert len(batches) == 2
    assert processor.get_stats()["total_submitted"] == 3


@pytest.mark.parametrize("method", ["enqueue", "enqueue_predict"])
@pytest.mark.parametrize("item, error, message", BAD_ITEMS)
def test_bad_item_refused_at_the_call_good_neighbours_unharmed(make_processor, method, item, error, message):
    exc = _one_batch_around(make_processor, lambda p: getattr(p, method)(item))
    assert isinstance(exc, error), f"expected {error.__name__}, got {exc!r}"
    assert exc is not None and re.search(message, str(exc)), str(exc)


BAD_ARGS = [
    pytest.param(dict(timeout=-1), ValueError, r"timeout", id="timeout-negative"),
    pytest.param(dict(timeout=math.nan), ValueError, r"timeout", id="timeout-nan"),
    pytest.param(dict(timeout="1"), TypeError, r"timeout", id="timeout-str"),
    pytest.param(dict(timeout=[1]), TypeError, r"timeout", id="timeout-list"),
    pytest.param(dict(priority=5), ValueError, r"priority", id="priority-5"),
    pytest.param(dict(priority=-1), ValueError, r"priority", id="priority-negative"),
    pytest.param(dict(priority=True), (TypeError, ValueError), r"priority", id="priority-bool"),
    pytest.param(dict(priority="HIGH"), (TypeError, ValueError), r"priority", id="priority-str"),
    pytest.param(dict(priority=1.0), (TypeError, ValueError), r"priority", id="priority-float"),
    pytest.param(dict(priority=None), (TypeError, ValueError), r"priority", id="priority-None"),
    pytest.param(dict(priority=np.bool_(True)), (TypeError, ValueError), r"priority", id="priority-np-bool"),
]


@pytest.mark.parametrize("method", ["enqueue", "enqueue_predict"])
@pytest.mark.parametrize("kwargs, error, message", BAD_ARGS)
def test_bad_argument_refused_at_the_call_good_neighbours_unharmed(make_processor, method, kwargs,
                                                                   error, message):
    exc = _one_batch_around(make_processor, lambda p: getattr(p, method)(ROW + 50, **kwargs))
    assert isinstance(exc, error), f"expected {error}, got {exc!r}"
    assert re.search(message, str(exc)), str(exc)


@pytest.mark.parametrize("kwargs", [dict(priority=99), dict(timeout=-1), dict(timeout="soon")],
                         ids=["priority", "timeout", "timeout-type"])
@pytest.mark.parametrize("first", [np.zeros(4), "generic"], ids=["array", "generic"])
def test_a_refused_first_call_fixes_no_schema(make_processor, kwargs, first):
    """The first item fixes the schema -- but only if it is accepted."""
    processor = make_processor(lambda b: b * 2 + 1)
    with pytest.raises((TypeError, ValueError)):
        processor.enqueue_predict(first, **kwargs)
    future = processor.enqueue_predict(ROW)  # a different schema than the refused item's
    assert same(future.result(timeout=5), oracle(ROW))
    assert processor.get_stats()["total_submitted"] == 1


def test_nan_and_inf_rows_are_data(make_processor):
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=8)
    ledger = Ledger(oracle)
    processor.pause()
    items = [np.full(10, np.nan), np.full(10, np.inf), np.full(10, -np.inf), ROW,
             np.array([[np.nan] * 10, [1.0] * 10]), np.where(ROW > 4, np.nan, ROW)]
    for item in items:
        ledger.submit(processor, item)
    processor.resume()
    assert ledger.wait(5) == 0
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == len(items), str(report)


def test_unusual_memory_layouts_are_accepted_and_copied_right(make_processor):
    buf = np.arange(30.0)
    unaligned = np.frombuffer(b"\0" + np.arange(10.0).tobytes(), dtype=np.float64, offset=1)
    readonly = np.arange(10.0) + 7
    readonly.flags.writeable = False

    class Sub(np.ndarray):
        pass

    items = [
        buf[::3][:10],  # strided view
        np.asfortranarray(np.arange(30.0).reshape(3, 10)),  # Fortran-ordered mini-batch
        np.arange(30.0).reshape(10, 3).T,  # transposed view
        unaligned,  # unaligned and read-only
        readonly,
        np.arange(10.0).view(Sub),  # subclass
        np.broadcast_to(np.arange(10.0), (4, 10)),  # zero strides
    ]
    processor = make_processor(lambda b: b * 2 + 1, max_batch_size=16)
    ledger = Ledger(lambda x: np.asarray(x) * 2 + 1)
    processor.pause()
    for item in items:
        ledger.submit(processor, item)
    processor.resume()
    assert ledger.wait(5) == 0
    report = ledger.check(processor)
    assert not report.problems and report.states["result"] == len(items), str(report)


def test_item_at_the_byte_budget_is_accepted_one_byte_over_is_refused(make_processor):
    budget_mb = 800 / (1024 * 1024)  # exactly 800 bytes: ten rows of ten float64
    processor = make_processor(lambda b: b * 2 + 1, max_batch_memory_mb=budget_mb)
    fits = np.ones((10, 10))
    assert same(processor.enqueue_predict(fits).result(timeout=5), oracle(fits))
    with pytest.raises(ValueError, match="byte budget"):
        processor.enqueue_predict(np.ones((11, 10)))


def test_a_processor_of_objects_batches_arrays_apart_and_refuses_none(make_processor):
    processor = make_processor(lambda x: x * 2 if isinstance(x, np.ndarray) else ("r", x))
    assert processor.enqueue_predict({"k": 1}).result(timeout=5) == ("r", {"k": 1})
    assert same(processor.enqueue_predict(ROW).result(timeout=5), ROW * 2)
    with pytest.raises(TypeError, match="None"):
        processor.enqueue_predict(None)
    assert processor.enqueue_predict(3).result(timeout=5) == ("r", 3)


@pytest.mark.parametrize("size", [2.5, True, "10", None])
def test_update_batch_size_refuses_bad_sizes(make_processor, size):
    processor = make_processor(lambda b: b)
    before = processor.get_stats()["current_batch_size"]
    with pytest.raises((TypeError, ValueError)):
        processor.update_batch_size(size)
    assert processor.get_stats()["current_batch_size"] == before
