"""The compiled core and the pure-Python twin, driven by the same random operations.

Each state machine holds one object of each core and applies every generated operation
to both, then compares everything a caller can observe: return values (the very item
and future objects, in order; batches by dtype, shape, contiguity and contents; the
buffer a batch lives in), exception types, messages and causes, and the state read
back (``len``, ``queued_samples``, ``total_puts``, ``closed``, ``repr``, the windows'
values and summaries). Invalid arguments are generated on purpose: both cores must
refuse them with the same exception and the same words.

Nothing waits: every timeout and linger is 0 (or invalid, refused before any wait), so
the runs are deterministic (``derandomize``) and take no sleeps. 150 examples per
machine in the fast tier, 3000 with ``FASTBATCH_EXTENDED=1``.
"""

from __future__ import annotations

import importlib
import math
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from fb_fixtures import EXTENDED

compiled = pytest.importorskip(
    "fastbatch.core._core", reason="the compiled core is not built: nothing to compare the twin with")
twin = importlib.import_module("fastbatch.core._core_py")
CORES = (compiled, twin)

SETTINGS = settings(
    max_examples=3000 if EXTENDED else 150,
    stateful_step_count=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------- outcomes


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple:
    """``("ok", value)`` or ``("raised", type, message, type of the cause)``."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - compared between the cores
        cause = None if exc.__cause__ is None else type(exc.__cause__)
        return ("raised", type(exc), str(exc), cause)


def assert_same(c: Any, p: Any, where: str = "result") -> None:
    """``c`` (compiled) and ``p`` (twin) are the same observable value."""
    if isinstance(c, np.ndarray) or isinstance(p, np.ndarray):
        assert type(c) is type(p), f"{where}: {type(c)} vs {type(p)}"
        assert (c.dtype, c.shape) == (p.dtype, p.shape), f"{where}: {c.dtype}{c.shape} vs {p.dtype}{p.shape}"
        assert c.flags.c_contiguous == p.flags.c_contiguous, f"{where}: contiguity"
        assert np.array_equal(c, p, equal_nan=c.dtype.kind in "fc"), f"{where}: {c!r} vs {p!r}"
    elif isinstance(c, (list, tuple)):
        assert type(c) is type(p) and len(c) == len(p), f"{where}: {c!r} vs {p!r}"
        for i, (a, b) in enumerate(zip(c, p)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(c, float) and isinstance(p, float) and math.isnan(c):
        assert math.isnan(p), f"{where}: NaN vs {p!r}"
    else:
        assert type(c) is type(p) and (c is p or c == p), f"{where}: {c!r} vs {p!r}"


def assert_same_outcome(c: tuple, p: tuple, what: str) -> None:
    assert c[0] == p[0], f"{what}: compiled {c!r}, twin {p!r}"
    if c[0] == "raised":
        assert c[1:] == p[1:], f"{what}: compiled raised {c[1:]!r}, twin {p[1:]!r}"
    else:
        assert_same(c[1], p[1], what)


def both(what: str, call: Any) -> tuple[tuple, tuple]:
    """``call(core_index)`` on each core; asserts the outcomes agree and returns them."""
    c, p = outcome(call, 0), outcome(call, 1)
    assert_same_outcome(c, p, what)
    return c, p


class Token:
    """An opaque item or future: the queue must hand back this very object."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"Token({self.n})"


def mostly(valid: Any, invalid: list, weight: int = 8) -> Any:
    """``valid``, or now and then (about 1 in ``weight + 1``) one of the ``invalid`` values."""
    return st.sampled_from(range(weight + 1)).flatmap(
        lambda k: st.sampled_from(invalid) if k == weight else valid)


# ---------------------------------------------------------------- RequestQueue

SAMPLES = mostly(st.integers(1, 4), [0, -1, 1.5, "2", None, 2**63, np.int64(3), True])
# Sizes that add up to the budgets below, so that a request exactly filling the room is common.
NBYTES = mostly(st.one_of(st.sampled_from([0, 5, 10, 15, 20, 30, 60]), st.integers(0, 60)),
                [-1, 2.0, 2**64])
PRIORITIES = mostly(st.integers(-2, 3), [2**63, -(2**63) - 1, "0", np.int8(1)])
# Never None or inf: a full queue would wait for ever. Invalid ones are refused first.
PUT_TIMEOUTS = mostly(st.sampled_from([0, 0.0, np.float64(0.0)]), [-1, -0.001, math.nan, "0"])
MAX_SAMPLES = mostly(st.integers(1, 8), [0, -1, 1.5, 10**6, 2**63])
MAX_BYTES = mostly(st.sampled_from([0, 0, 10, 20, 30, 45, 60, 120]), [-1, "0", 2**63])
LINGERS = mostly(st.sampled_from([0, 0.0]), [-1.0, math.nan, None, "0"])
TAKE_TIMEOUTS = mostly(st.sampled_from([0, 0.0]), [-1, math.nan, "0"])
SCHEMA_DTYPES = mostly(st.sampled_from([np.float64, np.float32, "<f8", ">f4", np.int32]),
                       ["not a dtype"], weight=4)
SCHEMA_SHAPES = mostly(st.sampled_from([(0,), (2,), (3,)]),
                       [(2, 3), (), [3], (-1,), (2.0,), (np.int64(2),)], weight=4)
ROW_KINDS = st.sampled_from(["row", "row", "strided", "other-dtype", "swapped-bytes", "other-length",
                             "2-d", "subclass", "list", "none", "scalar"])


class RowSubclass(np.ndarray):
    pass


class QueueMachine(RuleBasedStateMachine):
    """RequestQueue: puts, rows, takes, drains, pause/resume/close, with bad arguments."""

    @initialize(capacity=st.sampled_from([0, 0, 1, 2, 3, 5, 8, 16]), prioritized=st.booleans(),
                schema=st.booleans(), lanes=st.sampled_from([1, 1, 2, 3]))
    def setup(self, capacity: int, prioritized: bool, schema: bool, lanes: int) -> None:
        self.queues = [core.RequestQueue(capacity, prioritized, lanes) for core in CORES]
        self.lanes = lanes
        self.tokens = 0
        self.schema: tuple[np.dtype, int] | None = None
        self.put_order: dict[int, int] = {}  # id(item) -> put number, for the stamps' order
        if schema:
            self.set_row_schema(np.float64, (3,))

    def _token(self) -> Token:
        self.tokens += 1
        return Token(self.tokens)

    @rule(capacity=st.sampled_from([-1, 1.5, "3", None, True, 2**63, np.uint8(4)]),
          prioritized=st.sampled_from([True, 0, "", None]))
    def construct(self, capacity: Any, prioritized: Any) -> None:
        both(f"RequestQueue({capacity!r}, {prioritized!r})",
             lambda i: repr(CORES[i].RequestQueue(capacity, prioritized)))

    @rule(samples=SAMPLES, nbytes=NBYTES, priority=PRIORITIES, with_future=st.booleans(),
          timeout=PUT_TIMEOUTS, lane=mostly(st.integers(0, 2), [-1, 3, 1.5]),
          stale=st.sampled_from([False] * 6 + [True]))
    def put(self, samples: Any, nbytes: Any, priority: Any, with_future: bool, timeout: Any,
            lane: Any = 0, stale: bool = False) -> None:
        item, future = self._token(), self._token() if with_future else None
        # The lane's tag (the same object in both queues), or one it does not have.
        tag = self._token() if stale or not (isinstance(lane, int) and 0 <= lane < self.lanes) \
            else self.queues[0].lane_tag(lane)
        c, _ = both(f"put(samples={samples!r}, nbytes={nbytes!r}, priority={priority!r}, "
                    f"timeout={timeout!r}, lane={lane!r}, stale={stale})",
                    lambda i: self.queues[i].put(item, future, samples, nbytes, priority, timeout,
                                                 lane, tag))
        if c[0] == "ok":
            self.put_order[id(item)] = self.tokens

    @rule()
    def open_lane(self) -> None:
        tag = self._token()
        both("open_lane()", lambda i: self.queues[i].open_lane(tag))

    @rule(count=st.integers(2, 8), samples=st.integers(1, 3), nbytes=st.sampled_from([0, 5, 10, 15, 30]),
          priorities=st.lists(st.integers(0, 2), min_size=1, max_size=3))
    def put_several(self, count: int, samples: int, nbytes: int, priorities: list) -> None:
        for k in range(count):
            self.put(samples, nbytes, priorities[k % len(priorities)], k % 2 == 0, 0,
                     k % self.lanes)

    @rule(dtype=SCHEMA_DTYPES, shape=SCHEMA_SHAPES)
    def set_row_schema(self, dtype: Any, shape: Any) -> None:
        c, _ = both(f"set_row_schema({dtype!r}, {shape!r})",
                    lambda i: self.queues[i].set_row_schema(dtype, shape))
        if c[0] == "ok":
            self.schema = (np.dtype(dtype), int(shape[0]))

    def _row(self, kind: str) -> Any:
        dtype, n = self.schema if self.schema is not None else (np.dtype(np.float64), 3)
        row = np.arange(n).astype(dtype)
        if kind == "strided":
            return np.arange(2 * n).astype(dtype)[::2]
        if kind == "other-dtype":
            return row.astype(np.int8 if dtype != np.int8 else np.int16)
        if kind == "swapped-bytes":
            return row.astype(dtype.newbyteorder())
        if kind == "other-length":
            return np.arange(n + 1).astype(dtype)
        if kind == "2-d":
            return row[np.newaxis]
        if kind == "subclass":
            return row.view(RowSubclass)
        if kind == "list":
            return row.tolist()
        if kind == "none":
            return None
        if kind == "scalar":
            return dtype.type(1)
        return row

    @rule(kind=ROW_KINDS, with_future=st.booleans(), timeout=PUT_TIMEOUTS)
    def put_row(self, kind: str, with_future: bool, timeout: Any) -> None:
        item, future = self._row(kind), self._token() if with_future else None
        c, _ = both(f"put_row({kind}: {item!r}, timeout={timeout!r}) with schema {self.schema}",
                    lambda i: self.queues[i].put_row(item, future, timeout))
        if c[0] == "ok" and c[1]:
            self.tokens += 1
            self.put_order[id(item)] = self.tokens

    def _check_stamps(self, batch: tuple) -> None:
        # Stamps are read from each core's own clock at put time: they cannot be compared
        # between the cores, but in each they follow the put order.
        for items, _, stamps in batch:
            order = np.argsort([self.put_order[id(x)] for x in items], kind="stable")
            assert np.all(np.diff(np.asarray(stamps)[order]) >= 0), "stamps against the put order"

    def _compare_batches(self, what: str, call: Any) -> None:
        c, p = outcome(call, 0), outcome(call, 1)
        if c[0] == p[0] == "ok" and c[1] is not None and p[1] is not None and len(c[1]) == 4:
            assert c[1][3] is p[1][3], f"{what}: the tags differ"
            c, p = ("ok", c[1][:3]), ("ok", p[1][:3])
        if c[0] == p[0] == "ok" and c[1] is not None and p[1] is not None:
            # Items and futures by identity; stamps by dtype and shape, then by order.
            assert_same(c[1][:2], p[1][:2], what)
            for mine, theirs in zip(c[1][0] + c[1][1], p[1][0] + p[1][1]):
                assert mine is theirs, f"{what}: {mine!r} is not the object put"
            for stamps in (c[1][2], p[1][2]):
                assert type(stamps) is np.ndarray and stamps.dtype == np.int64
                assert stamps.shape == (len(c[1][0]),)
            self._check_stamps((c[1], p[1]))
            for x in c[1][0]:
                self.put_order.pop(id(x), None)
        else:
            assert_same_outcome(c, p, what)

    @rule(max_samples=MAX_SAMPLES, max_bytes=MAX_BYTES, linger=LINGERS, timeout=TAKE_TIMEOUTS,
          tagged=st.booleans(), bucket=st.booleans())
    def take_batch(self, max_samples: Any, max_bytes: Any, linger: Any, timeout: Any,
                   tagged: bool, bucket: bool) -> None:
        self._compare_batches(
            f"take_batch({max_samples!r}, max_bytes={max_bytes!r}, linger={linger!r}, "
            f"timeout={timeout!r}, tagged={tagged}, bucket={bucket})",
            lambda i: self.queues[i].take_batch(max_samples, max_bytes, linger, timeout, tagged, bucket))

    @rule()
    def drain(self) -> None:
        self._compare_batches("drain()", lambda i: self.queues[i].drain())

    @rule()
    def pause(self) -> None:
        both("pause()", lambda i: self.queues[i].pause())

    @rule()
    def resume(self) -> None:
        both("resume()", lambda i: self.queues[i].resume())

    @rule(really=st.integers(0, 4))
    def close(self, really: int) -> None:
        if really == 0:  # closing ends most of the interesting part: do it rarely
            both("close()", lambda i: self.queues[i].close())

    @invariant()
    def same_state(self) -> None:
        def state(q: Any) -> tuple:
            return (len(q), q.queued_samples, q.total_puts, q.closed, q.capacity, repr(q), q.lanes,
                    [q.lane_tag(k) for k in range(q.lanes)])

        assert_same(state(self.queues[0]), state(self.queues[1]), "state")


# ---------------------------------------------------------------- BatchAssembler

DTYPES = [np.float64, np.float32, np.int16, np.uint8, np.complex64, np.bool_, ">i4", "U2",
          "datetime64[ms]", [("a", "<i2"), ("b", "<f4")]]
LAYOUTS = ["c", "c", "fortran", "strided", "reversed", "broadcast", "read-only"]
FLAWS = [None] * 15 + ["dtype", "byte-order", "sample-shape", "row-length", "0-d",
                       "zero-samples", "list", "scalar", "none", "object", "no-items"]


@st.composite
def batch_specs(draw: Any) -> tuple:
    """What to build: dtype, sample shape, items (row?, samples, layout), a flaw, a seed."""
    dtype = draw(st.sampled_from(range(len(DTYPES))))
    sample_shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    items = []
    for _ in range(draw(st.integers(1, 5))):
        row = len(sample_shape) == 1 and draw(st.booleans())
        items.append((row, 1 if row else draw(st.integers(1, 3)), draw(st.sampled_from(LAYOUTS))))
    flaw = draw(st.sampled_from(FLAWS))
    where = draw(st.integers(0, len(items)))
    container = draw(st.sampled_from(["list", "list", "tuple", "iterator"]))
    return dtype, sample_shape, items, flaw, where, container, draw(st.integers(0, 2**16))


def _values(rng: np.random.Generator, shape: tuple, dtype: Any) -> np.ndarray:
    return rng.integers(0, 100, shape).astype(dtype)


def _laid_out(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":  # every other row (or element) of a bigger array
        big = np.empty((2 * a.shape[0], *a.shape[1:]), dtype=a.dtype)
        big[::2] = big[1::2] = a
        return big[::2]
    if layout == "reversed":  # negative strides, same values
        return a[::-1].copy()[::-1]
    if layout == "broadcast":  # zero strides (read-only)
        return np.broadcast_to(a[:1], a.shape)
    if layout == "read-only":
        a.flags.writeable = False
    return a


def build_items(spec: tuple) -> list:
    dtype_index, sample_shape, layout, flaw, where, _, seed = spec
    rng = np.random.default_rng(seed)
    dtype = np.dtype(DTYPES[dtype_index])
    items: list[Any] = []
    for row, k, how in layout:
        shape = sample_shape if row else (k, *sample_shape)
        items.append(_laid_out(_values(rng, shape, dtype), how))
    if flaw is None:
        return items
    if flaw == "no-items":
        return []
    shape = (2, *sample_shape)
    other = np.int8 if dtype != np.int8 else np.int16
    bad = {
        "dtype": lambda: _values(rng, shape, other),
        "byte-order": lambda: _values(rng, shape, dtype.newbyteorder()),
        "sample-shape": lambda: _values(rng, (2, *sample_shape[:-1], sample_shape[-1] + 1), dtype),
        "row-length": lambda: _values(rng, (sample_shape[0] + 1,), dtype),
        "0-d": lambda: _values(rng, (), dtype),
        "zero-samples": lambda: _values(rng, (0, *sample_shape), dtype),
        "list": lambda: _values(rng, shape, dtype).tolist(),
        "scalar": lambda: np.zeros((), dtype)[()],  # a numpy scalar of the dtype
        "none": lambda: None,
        "object": lambda: np.zeros(shape, dtype=object),
    }[flaw]()
    items.insert(min(where, len(items)), bad)
    return items


class LyingLength:
    """Claims ``n`` results and holds none."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Any:
        raise IndexError("nothing here")


RESULT_KINDS = ["array", "array", "list", "tuple", "short", "long", "int", "none", "0-d", "set",
                "dict", "dict-of-str", "lying", "str"]
KEEPERS = [None, None, None, "batch", "slice", "transpose", "piece"]


class AssemblerMachine(RuleBasedStateMachine):
    """BatchAssembler: batches of every layout and flaw, buffer reuse, split of any result."""

    def __init__(self) -> None:
        super().__init__()
        self.assemblers = [core.BatchAssembler() for core in CORES]
        self.buffers: list[Any] = [None, None]  # weak references to the last buffers
        self.kept: list[tuple[Any, Any, np.ndarray]] = []  # (compiled, twin, snapshot)
        self.total = 0  # samples of the last batch

    @rule(spec=batch_specs(), keep=st.sampled_from(KEEPERS))
    def assemble(self, spec: tuple, keep: str | None) -> None:
        items = build_items(spec)
        container = spec[5]

        def call(i: int) -> Any:
            arg = {"list": list, "tuple": tuple, "iterator": iter}[container](items)
            return self.assemblers[i].assemble(arg)

        c, p = both(f"assemble({container} of {[getattr(x, 'shape', x) for x in items]})", call)
        if c[0] != "ok":
            return
        batches = [c[1], p[1]]
        del c, p
        reused = []
        for i, batch in enumerate(batches):
            buffer = batch.base
            assert type(buffer) is np.ndarray and buffer.dtype == np.uint8 and buffer.ndim == 1
            reused.append(self.buffers[i] is not None and self.buffers[i]() is buffer)
            self.buffers[i] = weakref.ref(buffer)
        assert reused[0] == reused[1], f"buffer reused: compiled {reused[0]}, twin {reused[1]}"
        assert batches[0].base.nbytes == batches[1].base.nbytes, "buffer capacities differ"
        self.total = len(batches[0])
        if keep is not None:
            views = [self._keep(i, batch, keep) for i, batch in enumerate(batches)]
            self.kept.append((views[0], views[1], np.array(views[0], copy=True)))

    def _keep(self, i: int, batch: np.ndarray, how: str) -> Any:
        if how == "slice":
            return batch[1:]
        if how == "transpose":
            return batch.T
        if how == "piece":
            return self.assemblers[i].split(batch)[0]
        return batch

    @rule()
    def release(self) -> None:
        self.kept.clear()

    def _result(self, kind: str) -> Any:
        n = self.total
        return {
            "array": lambda: np.arange(2 * n).reshape(n, 2),
            "list": lambda: list(range(n)),
            "tuple": lambda: tuple(range(n)),
            "short": lambda: np.zeros(max(n - 1, 1) if n != 1 else 0),
            "long": lambda: list(range(n + 1)),
            "int": lambda: 5,
            "none": lambda: None,
            "0-d": lambda: np.array(3.0),
            "set": lambda: set(range(n)),
            "dict": lambda: dict.fromkeys(range(n), "v"),
            "dict-of-str": lambda: {str(i): i for i in range(n)},
            "lying": lambda: LyingLength(n),
            "str": lambda: "x" * n,
        }[kind]()

    @rule(kind=st.sampled_from(RESULT_KINDS))
    def split(self, kind: str) -> None:
        result = self._result(kind)
        both(f"split({kind}) of a batch of {self.total} samples",
             lambda i: self.assemblers[i].split(result))

    @invariant()
    def kept_batches_never_change(self) -> None:
        for c, p, snapshot in self.kept:
            assert_same(np.asarray(c), np.asarray(p), "a kept batch")
            assert np.array_equal(np.asarray(c), snapshot, equal_nan=snapshot.dtype.kind in "fc")

    @invariant()
    def same_repr(self) -> None:
        assert repr(self.assemblers[0]) == repr(self.assemblers[1])


# ---------------------------------------------------------------- StatsWindow

FLOATS = st.floats(allow_nan=True, allow_infinity=True)
VALUES = mostly(st.one_of(FLOATS, st.integers(-(10**6), 10**6),
                          st.sampled_from([np.float32(1.5), np.int64(7), True])),
                [None, "1.0", b"1", [1.0], 10**400, complex(1, 0)])
MANY_KINDS = ["list", "float64"] * 3 + ["float32", "int64", "strided", "empty", "big", "2-d",
                                        "0-d", "complex", "strings", "string-array", "objects"]
QS = st.one_of(st.floats(0, 100), st.sampled_from([0, 100, 50, 99.9, 0.5, np.float32(25)]))
FINE = object()  # no bad q in this call
BAD_QS = mostly(st.just(FINE), [-1, 100.5, math.nan, math.inf, "50", None], weight=5)


@st.composite
def many_values(draw: Any) -> Any:
    kind = draw(st.sampled_from(MANY_KINDS))
    if kind in ("list", "float64", "strided"):
        floats = draw(st.lists(FLOATS, max_size=20))
    if kind == "list":
        return floats
    if kind == "float64":
        return np.array(floats, dtype=np.float64)
    if kind == "float32":
        return np.array(draw(st.lists(st.floats(width=32), max_size=20)), dtype=np.float32)
    if kind == "int64":
        return np.array(draw(st.lists(st.integers(-(2**53), 2**53), max_size=20)), dtype=np.int64)
    if kind == "strided":
        return np.array(floats + floats, dtype=np.float64)[::2]
    if kind == "empty":
        return []
    if kind == "big":  # enough values for the compiled core's path without the GIL
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        return rng.lognormal(0.0, 2.0, draw(st.integers(4096, 6000)))
    if kind == "2-d":
        return np.zeros((2, 3))
    if kind == "0-d":
        return np.float64(1.0)
    if kind == "complex":
        return np.array([1 + 1j])
    if kind == "strings":
        return ["1.5", "-2"]
    if kind == "string-array":
        return np.array(["1.5"])
    return np.array([1.0, None], dtype=object)


def assert_same_summaries(c: list, p: list) -> None:
    assert len(c) == len(p)
    for k, (a, b) in enumerate(zip(c, p)):
        assert type(a) is type(b) is tuple and len(a) == len(b) == 5, f"summary {k}"
        assert a[0] == b[0], f"summary {k}: count {a[0]} vs {b[0]}"
        assert len(a[4]) == len(b[4]), f"summary {k}: percentiles"
        np.testing.assert_allclose([*a[1:4], *a[4]], [*b[1:4], *b[4]], rtol=1e-12, atol=0,
                                   equal_nan=True, err_msg=f"summary {k}")


class StatsMachine(RuleBasedStateMachine):
    """StatsWindow: record, record_many, record_elapsed_ms, values, summaries, clear."""

    @initialize(small=st.sampled_from([1, 2, 3, 5, 8, 16]), large=st.sampled_from([7, 64, 5000]))
    def setup(self, small: int, large: int) -> None:
        self.windows = [[core.StatsWindow(small), core.StatsWindow(large)] for core in CORES]

    @rule(capacity=st.sampled_from([0, -1, 2.5, "4", None, 2**63, np.int64(3)]))
    def construct(self, capacity: Any) -> None:
        both(f"StatsWindow({capacity!r})", lambda i: repr(CORES[i].StatsWindow(capacity)))

    @rule(which=st.integers(0, 1), value=VALUES)
    def record(self, which: int, value: Any) -> None:
        both(f"record({value!r})", lambda i: self.windows[i][which].record(value))

    @rule(which=st.integers(0, 1), values=many_values())
    def record_many(self, which: int, values: Any) -> None:
        both(f"record_many({type(values).__name__} of {np.shape(values)})",
             lambda i: self.windows[i][which].record_many(values))

    @rule(which=st.integers(0, 1),
          kind=mostly(st.sampled_from(["int64", "list"]), ["2-d", "float", "uint64"], weight=4),
          starts=st.lists(st.integers(-(2**62), 2**62), max_size=10),
          end=mostly(st.integers(-(2**62), 2**62), ["x", 1.5, 2**63], weight=4))
    def record_elapsed_ms(self, which: int, kind: str, starts: list, end: Any) -> None:
        arg: Any = {
            "int64": lambda: np.array(starts, dtype=np.int64),
            "list": lambda: starts,
            "2-d": lambda: np.array(starts, dtype=np.int64).reshape(1, -1),
            "float": lambda: np.array(starts, dtype=np.float64),
            "uint64": lambda: np.abs(np.array(starts, dtype=np.int64)).astype(np.uint64),
        }[kind]()
        both(f"record_elapsed_ms({kind} {starts}, {end!r})",
             lambda i: self.windows[i][which].record_elapsed_ms(arg, end))

    @rule(which=st.integers(0, 1))
    def clear(self, which: int) -> None:
        both("clear()", lambda i: self.windows[i][which].clear())

    @rule(q0=st.lists(QS, max_size=10), q1=st.lists(QS, max_size=10), bad=BAD_QS,
          at=st.integers(0, 20),
          shape=mostly(st.sampled_from(["both", "both", "reversed", "one", "none"]),
                       ["fewer-qs", "not-a-window", "other-core"], weight=6))
    def summaries(self, q0: list, q1: list, bad: Any, at: int, shape: str) -> None:
        if bad is not FINE:
            (q0 if at % 2 else q1).insert(at // 2, bad)

        def call(i: int) -> Any:
            w0, w1 = self.windows[i]
            windows, qss = {
                "both": ([w0, w1], [q0, q1]),
                "reversed": ([w1, w0], (tuple(q0), q1)),
                "one": ((w1,), [q1]),
                "none": ([], []),
                "fewer-qs": ([w0, w1], [q0]),
                "not-a-window": ([w0, "w1"], [q0, q1]),
                "other-core": ([w0, self.windows[1 - i][1]], [q0, q1]),
            }[shape]
            return CORES[i].StatsWindow.summaries(windows, qss)

        c, p = outcome(call, 0), outcome(call, 1)
        if c[0] == p[0] == "ok":
            assert_same_summaries(c[1], p[1])
        else:
            assert_same_outcome(c, p, f"summaries({shape}, {q0!r}, {q1!r})")

    @invariant()
    def same_windows(self) -> None:
        for k in (0, 1):
            c, p = self.windows[0][k], self.windows[1][k]
            assert (len(c), repr(c)) == (len(p), repr(p))
            assert_same(c.values(), p.values(), f"window {k} values")


# ---------------------------------------------------------------- the tests


# The extended tier's 3000 examples take about a minute per machine: more than the
# suite's per-test timeout, less than the faulthandler's.
@pytest.mark.timeout(600 if EXTENDED else 60)
@pytest.mark.parametrize("machine", [QueueMachine, AssemblerMachine, StatsMachine],
                         ids=["queue", "assembler", "stats"])
def test_compiled_core_and_twin_agree(machine: type[RuleBasedStateMachine]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)
