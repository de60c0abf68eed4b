"""assemble_padded: layout, lengths and mask, dtypes, strides, pad values, errors, GIL.

Every test runs against both cores (the ``core`` fixture), except the property test
that compares the two and the GIL test of the compiled core; the contract is
``src/fastbatch/core/_core.pyi``.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fastbatch.core import _messages as msg
from fastbatch._errors import BatchDtypeError, BatchShapeError

PACKED = np.dtype([("id", "<i2"), ("score", "<f4")])  # 6 bytes, no padding bytes inside


def reference(items: list[np.ndarray], pad_value) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the result must equal, built another way: each item extended, then stacked."""
    dtype = items[0].dtype
    pad = np.array(pad_value, dtype=dtype)
    longest = max(len(a) for a in items)
    rows = [
        np.concatenate([a, np.full((longest - len(a), *a.shape[1:]), pad, dtype=dtype)])
        for a in items
    ]
    lengths = np.array([len(a) for a in items], dtype=np.int64)
    mask = np.array([[j < len(a) for j in range(longest)] for a in items], dtype=bool)
    return np.stack(rows), lengths, mask.reshape(len(items), longest)


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (NaN payloads and -0.0 included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Random bytes as ``dtype``, NaNs replaced (they never compare equal)."""
    dtype = np.dtype(dtype)
    raw = rng.integers(0, 256, size=(*shape, dtype.itemsize), dtype=np.uint8)
    a = raw.view(dtype)[..., 0]
    for name in dtype.names or ():
        if dtype[name].kind == "f":
            a[name] = np.nan_to_num(a[name])
    return np.nan_to_num(a) if dtype.kind == "f" else a


def check(core, items, pad_value=0):
    data, lengths, mask = core.assemble_padded(items, pad_value)
    want_data, want_lengths, want_mask = reference(items, pad_value)
    assert data.dtype == items[0].dtype
    assert data.shape == want_data.shape
    assert data.flags.c_contiguous and data.flags.owndata and data.flags.writeable
    np.testing.assert_array_equal(data, want_data)
    assert lengths.dtype == np.int64 and lengths.shape == (len(items),)
    np.testing.assert_array_equal(lengths, want_lengths)
    assert mask.dtype == np.bool_ and mask.shape == want_data.shape[:2]
    np.testing.assert_array_equal(mask, want_mask)
    for a in items:
        assert not np.shares_memory(data, a)
    return data, lengths, mask


# ---------------------------------------------------------------- layout


def test_token_sequences(core):
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 50_000, size=n) for n in (5, 1, 9, 3)]
    data, lengths, mask = check(core, items)
    assert data.shape == (4, 9)
    assert lengths.tolist() == [5, 1, 9, 3]
    assert data[1].tolist() == [items[1][0]] + [0] * 8
    assert mask.sum(axis=1).tolist() == [5, 1, 9, 3]


def test_single_item_and_equal_lengths_need_no_padding(core):
    item = np.arange(6.0)
    data, lengths, mask = check(core, [item])
    assert data.shape == (1, 6) and mask.all()
    data, _, mask = check(core, [item, item + 1, item + 2], pad_value=-1)
    assert mask.all() and (data != -1).all()


def test_tuple_and_iterable_items(core):
    items = [np.arange(3), np.arange(5)]
    np.testing.assert_array_equal(core.assemble_padded(tuple(items))[0], reference(items, 0)[0])
    np.testing.assert_array_equal(core.assemble_padded(iter(items))[0], reference(items, 0)[0])


def test_outputs_are_fresh_on_every_call(core):
    items = [np.arange(3), np.arange(4)]
    first = core.assemble_padded(items)
    second = core.assemble_padded(items)
    for a, b in zip(first, second):
        assert not np.shares_memory(a, b)
    first[0][:] = 99
    np.testing.assert_array_equal(second[0], reference(items, 0)[0])


@pytest.mark.parametrize(
    ("dtype", "pad_value"),
    [
        (np.int64, -100),
        (np.int32, 7),
        (np.uint8, 255),
        (np.int16, 0),
        (np.float32, -1.5),
        (np.float16, 0.25),
        (np.float64, float("-inf")),
        (np.bool_, True),
        (np.complex128, 1 - 2j),
        (np.dtype(">i4"), 258),  # not the machine's byte order
        (PACKED, (7, 2.5)),
        (np.dtype([("a", "u1"), ("b", "<f8")], align=True), 0),  # padding bytes inside
        (np.dtype("S3"), b"ab"),
        (np.dtype("datetime64[s]"), 0),
    ],
    ids=lambda v: str(np.dtype(v)) if isinstance(v, (type, np.dtype)) else None,
)
def test_dtypes(core, dtype, pad_value):
    rng = np.random.default_rng(1)
    items = [random_array(rng, (n,), dtype) for n in (3, 6, 1)]
    data, _, _ = check(core, items, pad_value)
    assert data.dtype == np.dtype(dtype)
    assert data[2, 1:].tobytes() == np.array(pad_value, dtype=dtype).tobytes() * 5


def test_multi_dimensional_samples(core):
    rng = np.random.default_rng(2)
    items = [rng.random((n, 3, 2)).astype(np.float32) for n in (4, 2, 7)]
    data, _, mask = check(core, items, pad_value=9.0)
    assert data.shape == (3, 7, 3, 2)
    assert (data[1, 2:] == 9.0).all() and mask[1].tolist() == [True] * 2 + [False] * 5


def test_equivalent_dtypes_are_accepted(core):
    # 'l' and 'q' are distinct dtype objects for the same 8-byte integer on LP64
    # platforms (equal under ==); elsewhere they are the same, and the test still holds.
    items = [np.arange(3, dtype="l"), np.arange(5, dtype="q")]
    data, _, _ = check(core, items)
    assert data.dtype == np.dtype("l")


def test_empty_trailing_axis(core):
    items = [np.zeros((2, 0), np.float32), np.zeros((5, 0), np.float32)]
    data, lengths, mask = core.assemble_padded(items, pad_value=1.0)
    assert data.shape == (2, 5, 0) and data.dtype == np.float32
    assert lengths.tolist() == [2, 5]
    assert mask.tolist() == [[True] * 2 + [False] * 3, [True] * 5]


# ---------------------------------------------------------------- strides


def _strided_items() -> list[np.ndarray]:
    base = np.arange(2 * 9 * 8, dtype=np.int64).reshape(2, 9, 8)
    return [
        base[0, ::2, :4],  # steps along the first axis (rows of 4 contiguous)
        base[1, 1:4, ::2],  # steps along the last axis
        base[0, :4, :6].T[:, :4],  # transposed: (6, 4), first axis of stride 8 bytes
        base[1, ::-1, 3:7],  # negative steps
        np.asfortranarray(base[0, :8, :4]),  # Fortran order
        np.broadcast_to(np.arange(4, dtype=np.int64), (3, 4)),  # zero strides
        base[0, 2:3, ::-1][:, :4],  # one row, reversed
    ]


def test_non_contiguous_items(core):
    items = _strided_items()
    assert not all(a.flags.c_contiguous for a in items)
    check(core, items, pad_value=-7)


@pytest.mark.parametrize("dtype", [np.uint8, np.float16, np.float32, np.complex128, PACKED])
def test_non_contiguous_items_of_every_item_size(core, dtype):
    raw = random_array(np.random.default_rng(3), (10, 6), dtype)
    items = [raw[::3], raw.T[:, :4].T.T[:5, ::2], raw[::-2, 1:5], raw[:1, ::-1][:, :5]]
    items = [a[:, :2] for a in items]
    check(core, items, pad_value=np.zeros((), dtype)[()])


def test_read_only_items(core):
    item = np.arange(5)
    item.flags.writeable = False
    check(core, [item, np.arange(2)])


# ---------------------------------------------------------------- pad values


@pytest.mark.parametrize(
    ("pad_value", "dtype", "element"),
    [
        (3, np.float32, 3.0),
        (0.1, np.float16, np.float16(0.1)),  # rounded
        (True, np.int64, 1),
        (np.int8(-3), np.int64, -3),
        (np.array(2.0), np.int32, 2),  # a 0-d array, exact
        (2.0, np.uint16, 2),
        (1 + 0j, np.int64, 1),  # no imaginary part: exact
        (float("nan"), np.float32, np.float32("nan")),
        (float("-inf"), np.float16, -np.inf),
        (2**64 - 1, np.uint64, np.uint64(2**64 - 1)),
        (-(2**63), np.int64, -(2**63)),
        (2**70, np.float64, float(2**70)),
        (1, np.bool_, True),
        (0, np.complex64, 0),
        (0, PACKED, np.zeros((), PACKED)[()]),
        (-0.0, np.float64, -0.0),
    ],
)
def test_pad_value_is_cast_to_the_dtype(core, pad_value, dtype, element):
    items = [np.ones(1, dtype), np.ones(3, dtype)]
    data, _, _ = core.assemble_padded(items, pad_value)
    want = np.array(element, dtype=dtype)
    assert data[0, 1:].tobytes() == want.tobytes() * 2


@pytest.mark.parametrize(
    ("pad_value", "dtype"),
    [
        (300, np.int8),
        (-1, np.uint8),
        (-1, np.uint64),
        (2**64, np.uint64),
        (2**63, np.int64),
        (np.int64(-1), np.uint32),  # numpy would wrap it around
        (1.5, np.int64),
        (float("nan"), np.int32),
        (float("inf"), np.int64),
        (2, np.bool_),
        (0.5, np.bool_),
        (1e300, np.float32),
        (70000, np.float16),
        (1 + 2j, np.float64),
        (1 + 2j, np.int64),
        ("1", np.float64),
        (None, np.int64),
        ([1, 2], np.int64),
        (np.zeros(2), np.float64),
        ("not a date", np.dtype("datetime64[s]")),
        ((1, 2, 3), PACKED),
    ],
)
def test_unrepresentable_pad_value(core, pad_value, dtype):
    items = [np.ones(1, dtype), np.ones(3, dtype)]
    with pytest.raises(ValueError) as info:
        core.assemble_padded(items, pad_value)
    assert str(info.value) == msg.PAD_VALUE.format(value=pad_value, dtype=np.dtype(dtype))
    assert type(info.value) is ValueError


def test_pad_value_is_checked_even_without_padding(core):
    with pytest.raises(ValueError, match="cannot be represented"):
        core.assemble_padded([np.arange(3, dtype=np.int8)], 300)


# ---------------------------------------------------------------- errors


class Strange:
    pass


@pytest.mark.parametrize(
    ("items", "error", "message"),
    [
        ([], ValueError, msg.NO_ITEMS),
        ((), ValueError, msg.NO_ITEMS),
        ([np.arange(2), [1, 2]], TypeError, msg.NOT_AN_ARRAY.format(i=1, type="list")),
        ([Strange()], TypeError, msg.NOT_AN_ARRAY.format(i=0, type="Strange")),
        ([np.arange(2), np.array(5)], ValueError, msg.ZERO_DIMENSIONAL.format(i=1)),
        ([np.array(5)], ValueError, msg.ZERO_DIMENSIONAL.format(i=0)),
        ([np.arange(2), np.arange(3, dtype=np.int32)], BatchDtypeError,
         msg.DTYPE_MISMATCH.format(i=1, dtype="int32", batch_dtype="int64")),
        ([np.arange(2.0), np.arange(2.0), np.arange(3, dtype=">f8")], BatchDtypeError,
         msg.DTYPE_MISMATCH.format(i=2, dtype=">f8", batch_dtype="float64")),
        ([np.zeros((2, 3)), np.zeros((4, 2))], BatchShapeError,
         msg.PADDED_SHAPE_MISMATCH.format(i=1, shape=(4, 2), batch_shape=(2, 3))),
        ([np.zeros((2, 3)), np.zeros(4)], BatchShapeError,
         msg.PADDED_SHAPE_MISMATCH.format(i=1, shape=(4,), batch_shape=(2, 3))),
        ([np.zeros(2), np.zeros((4, 1))], BatchShapeError,
         msg.PADDED_SHAPE_MISMATCH.format(i=1, shape=(4, 1), batch_shape=(2,))),
        ([np.array([1, "a"], dtype=object)], BatchDtypeError,
         msg.OBJECT_DTYPE.format(i=0, dtype="object")),
        ([np.zeros(2, dtype=[("a", "f8"), ("o", "O")])], BatchDtypeError,
         msg.OBJECT_DTYPE.format(i=0, dtype=np.dtype([("a", "f8"), ("o", "O")]))),
        ([np.arange(2.0), np.array([None], dtype=object)], BatchDtypeError,
         msg.DTYPE_MISMATCH.format(i=1, dtype="object", batch_dtype="float64")),
        ([np.arange(3), np.arange(0)], ValueError, msg.ZERO_LENGTH.format(i=1, shape=(0,))),
        ([np.zeros((0, 4))], ValueError, msg.ZERO_LENGTH.format(i=0, shape=(0, 4))),
    ],
)
def test_invalid_items(core, items, error, message):
    with pytest.raises(error) as info:
        core.assemble_padded(items)
    assert str(info.value) == message


def test_the_first_bad_item_is_reported_and_the_pad_value_last(core):
    good, empty = np.arange(3), np.arange(0)
    with pytest.raises(ValueError, match="item 1 has length 0"):
        core.assemble_padded([good, empty, [1]], pad_value=1.5)
    with pytest.raises(BatchDtypeError, match="item 1 has dtype int8"):
        core.assemble_padded([good, np.arange(2, dtype=np.int8), empty], pad_value=1.5)
    with pytest.raises(BatchShapeError, match="item 1 has shape"):
        core.assemble_padded([good, np.zeros((2, 2), np.int64), empty], pad_value=1.5)
    with pytest.raises(TypeError, match="item 1 is list"):
        core.assemble_padded([good, [1]], pad_value=1.5)
    with pytest.raises(ValueError, match="pad_value 1.5"):
        core.assemble_padded([good, good[:1]], pad_value=1.5)


def test_both_cores_raise_the_same_words(compiled_core, py_core):
    cases = [
        ([np.arange(2), "x"], 0),
        ([np.zeros((2, 2)), np.zeros((2, 3))], 0),
        ([np.zeros(2, np.float16), np.zeros(1, np.float16)], 1e9),
        ([np.zeros(2, np.uint16), np.zeros(1, np.uint16)], -2),
    ]
    for items, pad_value in cases:
        outcomes = []
        for core in (compiled_core, py_core):
            with pytest.raises(Exception) as info:
                core.assemble_padded(items, pad_value)
            outcomes.append((type(info.value), str(info.value)))
        assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------- both cores, random


DTYPES = [np.int64, np.int32, np.int8, np.uint16, np.uint64, np.float32, np.float16,
          np.float64, np.bool_, np.complex64, np.dtype(">i2"), np.dtype("<f8"), PACKED]

PAD_VALUES = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.booleans(),
    st.complex_numbers(max_magnitude=1e5),
    st.sampled_from([0, -1, 1, 255, 256, 2**31, -(2**31) - 1, 65504.0, 65520.0, 3.4e38,
                     3.5e38, (1, 0.5), np.int8(-3), np.uint64(2**64 - 1)]),
)


@st.composite
def padded_inputs(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rest = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    n_items = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n_items):
        length = draw(st.integers(1, 9))
        # Drawn larger, then cut down by a view with steps (negative ones reverse).
        steps = [draw(st.sampled_from([1, 1, 2, -1, -2])) for _ in range(1 + len(rest))]
        big = [size * abs(k) for size, k in zip((length, *rest), steps)]
        raw = rng.integers(0, 256, size=(*big, dtype.itemsize), dtype=np.uint8)
        # Raw bytes, NaNs included: the cores are compared byte for byte.
        a = raw.view(dtype)[..., 0][tuple(slice(None, None, k) for k in steps)]
        layout = draw(st.sampled_from(["view", "view", "fortran", "broadcast"]))
        if layout == "fortran":  # the layout of a transposed C array
            a = np.asfortranarray(a)
        elif layout == "broadcast":  # zero strides along the first axis
            a = np.broadcast_to(a[:1], a.shape)
        assert a.shape == (length, *rest)
        items.append(a)
    return items, draw(PAD_VALUES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(padded_inputs())
def test_both_cores_agree_on_random_inputs(compiled_core, py_core, case):
    items, pad_value = case
    outcomes = []
    for core in (compiled_core, py_core):
        try:
            outcomes.append(core.assemble_padded(items, pad_value))
        except ValueError as exc:
            outcomes.append((type(exc), str(exc)))
    compiled, python = outcomes
    if isinstance(compiled[0], type):
        event("pad value refused")
        assert compiled == python
        return
    event("padded")
    assert not isinstance(python[0], type), python
    for a, b in zip(compiled, python):
        assert same_bytes(a, b)
    data, lengths, mask = compiled
    for i, a in enumerate(items):
        assert same_bytes(np.ascontiguousarray(data[i, : len(a)]), np.ascontiguousarray(a))
    assert lengths.tolist() == [len(a) for a in items]
    np.testing.assert_array_equal(mask, np.arange(data.shape[1]) < lengths[:, None])


# ---------------------------------------------------------------- the GIL


def _other_thread_steps_during(call) -> int:
    """How often another thread ran Python code while ``call()`` ran in this one.

    The switch interval is raised far above the length of the call, so this thread is
    never made to hand over the GIL; the other thread hands it back after each step.
    So the other thread runs during the call only if the call releases the GIL itself:
    0 means the call kept it (a certainty), > 0 that it released it.
    """
    steps = [0]
    started, stop = threading.Event(), threading.Event()

    def other() -> None:
        started.set()
        while not stop.is_set():
            steps[0] += 1
            time.sleep(0)  # releases the GIL

    interval = sys.getswitchinterval()
    thread = threading.Thread(target=other, name="test-gil-stepper")
    sys.setswitchinterval(10.0)
    try:
        thread.start()
        assert started.wait(5.0)
        before = steps[0]
        call()
        during = steps[0] - before
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    return during


def test_compiled_core_pads_a_large_batch_without_the_gil(compiled_core):
    # About 30 MB to write, some 10 ms of copying: ample time for the other thread to be
    # scheduled once the GIL is free.
    items = [np.broadcast_to(np.int64(i), (100_000 + 50_000 * i,)) for i in range(8)]
    assert _other_thread_steps_during(lambda: compiled_core.assemble_padded(items)) > 0


def test_compiled_core_keeps_the_gil_for_a_small_batch(compiled_core):
    # A few microseconds of copying: taking a contended GIL back would cost far more.
    items = [np.arange(n) for n in (3, 17, 8)]
    assert _other_thread_steps_during(lambda: compiled_core.assemble_padded(items)) == 0
