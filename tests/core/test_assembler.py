"""BatchAssembler: batch layout, validation messages, buffer reuse, split.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``.
"""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from fastbatch._errors import BatchDtypeError, BatchShapeError, ResultMismatchError


def reference_batch(items: list[np.ndarray]) -> np.ndarray:
    """What the batch must equal: rows and mini-batches stacked on axis 0."""
    return np.concatenate([a[np.newaxis] if a.ndim == 1 else a for a in items])


def expected_pieces(items: list[np.ndarray]) -> list:
    """What ``split(list(range(total)))`` gives: each item's row number or row range."""
    pieces, start = [], 0
    for a in items:
        if a.ndim == 1:
            pieces.append(start)
            start += 1
        else:
            pieces.append(list(range(start, start + a.shape[0])))
            start += a.shape[0]
    return pieces


def check_batch(asm, items: list[np.ndarray]) -> np.ndarray:
    batch = asm.assemble(items)
    expected = reference_batch(items)
    assert batch.dtype == items[0].dtype
    assert batch.shape == expected.shape
    assert batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, expected)
    # The layout split() follows: row i of the batch is the sample the row numbers say.
    assert asm.split(list(range(len(batch)))) == expected_pieces(items)
    return batch


class BufferWatch:
    """Tells apart the buffers behind successive batches without keeping one alive.

    A batch's ``base`` is the assembler's buffer (``_core.pyi``); a weak reference to it
    shows whether the next batch reuses it, and costs no reference that would stop reuse.
    """

    def __init__(self) -> None:
        self.buffers = 0
        self._last: weakref.ref | None = None

    def see(self, batch: np.ndarray) -> bool:
        """Record the buffer of ``batch``; True when it is the previous batch's buffer."""
        buffer = batch.base
        assert isinstance(buffer, np.ndarray) and buffer.dtype == np.uint8 and buffer.ndim == 1
        assert buffer.nbytes >= batch.nbytes
        reused = self._last is not None and self._last() is buffer
        if not reused:
            self.buffers += 1
            self._last = weakref.ref(buffer)
        return reused


# ---------------------------------------------------------------- layout


def test_rows(core):
    rng = np.random.default_rng(0)
    items = [rng.random(4) for _ in range(5)]
    batch = check_batch(core.BatchAssembler(), items)
    assert batch.shape == (5, 4)


def test_mini_batches(core):
    rng = np.random.default_rng(1)
    items = [rng.standard_normal((n, 3, 2)).astype(np.float32) for n in (2, 1, 5)]
    batch = check_batch(core.BatchAssembler(), items)
    assert batch.shape == (8, 3, 2)


def test_rows_and_mini_batches_mixed(core):
    rng = np.random.default_rng(2)
    items = [rng.integers(0, 100, 3), rng.integers(0, 100, (2, 3)), rng.integers(0, 100, 3)]
    batch = check_batch(core.BatchAssembler(), items)
    assert batch.shape == (4, 3)


def test_single_item(core):
    item = np.arange(6.0).reshape(2, 3)
    batch = check_batch(core.BatchAssembler(), [item])
    assert not np.shares_memory(batch, item), "the batch must be a copy"


@pytest.mark.parametrize(
    "dtype",
    [
        np.float64,
        np.float32,
        np.int8,
        np.uint16,
        np.int64,
        np.complex128,
        np.bool_,
        ">i4",
        "<f2",
        "U3",
        "S2",
        "datetime64[ns]",
        [("a", "<i4"), ("b", "<f8")],
    ],
)
def test_dtypes(core, dtype):
    rng = np.random.default_rng(3)
    raw = [rng.integers(0, 120, (n, 4)) for n in (1, 3, 2)]
    items = [r.astype(dtype) for r in raw]
    items.insert(1, raw[0][0].astype(dtype))  # a 1-D row among the mini-batches
    check_batch(core.BatchAssembler(), items)


def test_non_contiguous_fortran_broadcast_and_read_only_items(core):
    rng = np.random.default_rng(4)
    big = rng.random((6, 8))
    readonly = rng.random(4)
    readonly.flags.writeable = False
    items = [
        big[0, ::2],  # strided row
        big[:3, 1::2],  # strided mini-batch
        np.asfortranarray(rng.random((3, 4))),
        big[::-1, :4],  # negative strides
        np.broadcast_to(rng.random(4), (2, 4)),  # zero strides
        readonly,
    ]
    assert not items[0].flags.c_contiguous and items[2].flags.f_contiguous
    check_batch(core.BatchAssembler(), items)


def test_random_batches_match_concatenate(core):
    rng = np.random.default_rng(5)
    asm = core.BatchAssembler()
    for _ in range(200):
        sample_shape = tuple(rng.integers(1, 4, rng.integers(1, 3)).tolist())
        items = []
        for _ in range(rng.integers(1, 8)):
            if rng.random() < 0.4 and len(sample_shape) == 1:
                items.append(rng.random(sample_shape))
            else:
                items.append(rng.random((int(rng.integers(1, 5)), *sample_shape)))
        check_batch(asm, items)


# ---------------------------------------------------------------- validation


def _items_with(bad: np.ndarray, n_good: int = 3) -> list[np.ndarray]:
    return [np.zeros(10) for _ in range(n_good)] + [bad]


def test_dtype_mismatch_message(core):
    with pytest.raises(BatchDtypeError) as excinfo:
        core.BatchAssembler().assemble(_items_with(np.zeros(10, np.float32)))
    assert str(excinfo.value) == "item 3 has dtype float32 but the batch has dtype float64"
    assert isinstance(excinfo.value, TypeError)


def test_row_shape_mismatch_message(core):
    with pytest.raises(BatchShapeError) as excinfo:
        core.BatchAssembler().assemble(_items_with(np.zeros(4)))
    assert str(excinfo.value) == "item 3 has shape (4,) but the batch has shape (10,)"
    assert isinstance(excinfo.value, ValueError)


def test_mini_batch_shape_mismatch_message(core):
    with pytest.raises(BatchShapeError) as excinfo:
        core.BatchAssembler().assemble(_items_with(np.zeros((2, 4))))
    assert str(excinfo.value) == (
        "item 3 has sample shape (4,) (array shape (2, 4)) but the batch has sample shape (10,)"
    )


def test_sample_shape_is_fixed_by_item_zero(core):
    asm = core.BatchAssembler()
    with pytest.raises(BatchShapeError):
        asm.assemble([np.zeros((2, 3)), np.zeros((2, 3, 1))])
    with pytest.raises(BatchShapeError):
        asm.assemble([np.zeros((2, 3)), np.zeros(4)])


@pytest.mark.parametrize("object_items", [[0, 1, 2], [2]])
def test_object_dtype_is_rejected(core, object_items):
    items = [np.zeros(3, dtype=object if i in object_items else None) for i in range(3)]
    with pytest.raises(BatchDtypeError):
        core.BatchAssembler().assemble(items)


def test_structured_dtype_holding_objects_is_rejected(core):
    dtype = np.dtype([("a", "<f8"), ("o", object)])
    with pytest.raises(BatchDtypeError):
        core.BatchAssembler().assemble([np.zeros(3, dtype=dtype)])


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([], ValueError),
        ([np.float64(1.0)], TypeError),  # a numpy scalar is not an array
        ([np.array(1.0)], ValueError),  # 0-d array
        ([np.zeros(3), np.array(2.0)], ValueError),
        ([np.zeros((0, 3))], ValueError),  # a mini-batch of zero samples
        ([np.zeros((2, 3)), np.zeros((0, 3))], ValueError),
        ([[1.0, 2.0, 3.0]], TypeError),
        ([np.zeros(3), [1.0, 2.0, 3.0]], TypeError),
        ([np.zeros(3), None], TypeError),
    ],
)
def test_invalid_items(core, items, error):
    with pytest.raises(error):
        core.BatchAssembler().assemble(items)


def test_a_failed_assemble_leaves_the_assembler_usable(core):
    asm = core.BatchAssembler()
    with pytest.raises(BatchShapeError):
        asm.assemble([np.zeros(3), np.zeros(4)])
    check_batch(asm, [np.ones(3), np.full((2, 3), 2.0)])


@pytest.mark.parametrize(
    "bad",
    [
        [np.zeros((2, 3)), np.zeros(4)],  # shape
        [np.zeros(3), np.zeros(3, np.int8)],  # dtype
        [np.zeros(3), np.zeros((0, 3))],  # zero samples
        [np.zeros(3), "x"],  # not an array
    ],
)
def test_a_rejected_batch_leaves_split_following_the_last_good_one(core, bad):
    asm = core.BatchAssembler()
    good = [np.zeros((2, 3)), np.zeros(3), np.zeros((3, 3))]
    asm.assemble(good)
    with pytest.raises((ValueError, TypeError)):
        asm.assemble(bad)
    assert asm.split(list(range(6))) == expected_pieces(good)


# ---------------------------------------------------------------- buffer reuse


def _two_batches(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 4))], [rng.random((n, 4))]


def test_buffer_is_reused_when_nothing_holds_the_batch(core):
    asm, watch = core.BatchAssembler(), BufferWatch()
    first, second = _two_batches(16, 6)
    batch = asm.assemble(first)
    assert not watch.see(batch)
    del batch
    for items in (second, first, second):
        batch = check_batch(asm, items)
        assert watch.see(batch), "the released buffer must be reused"
        del batch
    smaller = asm.assemble([np.ones((3, 4))])
    assert watch.see(smaller), "a smaller batch fits in the buffer"
    del smaller
    assert watch.buffers == 1


KEEPERS = {
    "batch": lambda asm, batch: batch,
    "slice": lambda asm, batch: batch[1:],
    "transpose": lambda asm, batch: batch.T,
    "reshape": lambda asm, batch: batch.reshape(-1),
    "view-of-view": lambda asm, batch: batch[1:][::2].view(np.int64),
    "memoryview": lambda asm, batch: memoryview(batch),
    "split-piece": lambda asm, batch: asm.split(batch)[0],
}


@pytest.mark.parametrize("keeper", list(KEEPERS))
def test_held_batch_or_view_is_never_overwritten(core, keeper):
    asm, watch = core.BatchAssembler(), BufferWatch()
    first, second = _two_batches(16, 7)
    batch1 = asm.assemble(first)
    watch.see(batch1)
    kept = KEEPERS[keeper](asm, batch1)
    del batch1  # only what the keeper kept refers to the buffer now
    snapshot = np.array(kept, copy=True)
    batch2 = check_batch(asm, second)
    assert not watch.see(batch2), "the held buffer must not be reused"
    np.testing.assert_array_equal(np.asarray(kept), snapshot)
    assert not np.shares_memory(np.asarray(kept), batch2)
    del kept, batch2
    batch3 = check_batch(asm, first)
    assert watch.see(batch3), "a released buffer is reused again"
    del batch3
    assert watch.buffers == 2


def test_user_function_returning_its_input_does_not_alias_later_batches(core):
    asm = core.BatchAssembler()
    results = []
    for seed in range(5):
        items = _two_batches(8, seed)[0]
        results.extend(asm.split(asm.assemble(items)))  # "lambda batch: batch"
        np.testing.assert_array_equal(results[-1], items[0])
    for seed, piece in enumerate(results):
        np.testing.assert_array_equal(piece, _two_batches(8, seed)[0][0])


def test_buffer_grows_geometrically(core):
    asm, watch = core.BatchAssembler(), BufferWatch()
    for n in range(1, 301):
        batch = asm.assemble([np.ones((n, 4))])
        assert batch.shape == (n, 4)
        watch.see(batch)
        capacity = batch.base.nbytes
        del batch
    assert capacity >= 300 * 4 * 8
    assert watch.buffers <= 20, f"{watch.buffers} buffers for 300 growing batches"


# ---------------------------------------------------------------- split


def test_split_array_gives_rows_to_rows_and_slices_to_mini_batches(core):
    asm = core.BatchAssembler()
    items = [np.arange(3.0), np.arange(6.0).reshape(2, 3), np.arange(3.0) + 10]
    batch = asm.assemble(items)
    pieces = asm.split(batch * 2)
    assert len(pieces) == 3
    for item, piece in zip(items, pieces):
        assert piece.shape == item.shape
        np.testing.assert_array_equal(piece, item * 2)


def test_split_result_with_other_sample_shape(core):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros(5), np.zeros((3, 5)), np.zeros(5)])
    result = np.arange(5)
    pieces = asm.split(result)
    assert pieces[0] == 0 and pieces[2] == 4
    assert pieces[1].tolist() == [1, 2, 3]


@pytest.mark.parametrize("kind", [list, tuple])
def test_split_sequence(core, kind):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros((2, 3)), np.zeros(3), np.zeros((3, 3))])
    pieces = asm.split(kind(range(6)))
    assert pieces == [kind([0, 1]), 2, kind([3, 4, 5])]


def test_split_follows_the_last_batch(core):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros(2)] * 4)
    asm.assemble([np.zeros((3, 2)), np.zeros(2)])
    assert asm.split(["a", "b", "c", "d"]) == [["a", "b", "c"], "d"]


def test_split_wrong_length_message(core):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros((4, 2)), np.zeros((6, 2))])
    with pytest.raises(ResultMismatchError) as excinfo:
        asm.split(np.zeros(7))
    assert str(excinfo.value) == "the batch function returned 7 results for a batch of 10 samples"
    assert isinstance(excinfo.value, ValueError)
    with pytest.raises(ResultMismatchError):
        asm.split([0] * 11)


@pytest.mark.parametrize("result", [5, None, np.float64(2.0), np.array(3.0), object()])
def test_split_without_length(core, result):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros((4, 2)), np.zeros((6, 2))])
    with pytest.raises(ResultMismatchError) as excinfo:
        asm.split(result)
    assert "expected a sequence of 10 results" in str(excinfo.value)


def test_split_without_length_message(core):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros((4, 2)), np.zeros((6, 2))])
    with pytest.raises(ResultMismatchError) as excinfo:
        asm.split(5)
    assert str(excinfo.value) == (
        "the batch function returned int, expected a sequence of 10 results"
    )


class LyingLength:
    """Claims ten results, holds three."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index):
        data = list(range(3))
        if isinstance(index, slice) and index.stop > len(data):
            raise IndexError("slice out of range")
        return data[index]


def _slice_error(result) -> type[BaseException]:
    try:
        result[1:5]
    except Exception as exc:  # noqa: BLE001 - the type is what the test wants
        return type(exc)
    raise AssertionError("the slice worked")


class BrokenGetitem:
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index):
        raise RuntimeError("a bug in the result type")


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (set(range(10)), TypeError),  # not subscriptable
        # Row 0 works, the slice does not: TypeError (unhashable) before Python 3.12.
        (dict.fromkeys(range(10)), None),
        ({str(i): i for i in range(10)}, KeyError),
        (LyingLength(), IndexError),
    ],
    ids=["set", "dict", "dict-of-str", "lying-len"],
)
def test_split_of_a_result_that_cannot_be_indexed(core, result, error):
    error = error or _slice_error(result)
    asm = core.BatchAssembler()
    asm.assemble([np.zeros(2), np.zeros((4, 2)), np.zeros((5, 2))])
    with pytest.raises(ResultMismatchError) as excinfo:
        asm.split(result)
    assert str(excinfo.value) == (
        f"the batch function returned {type(result).__name__} of length 10 for a batch of 10 "
        f"samples, but it cannot be split by sample: indexing it raised {error.__name__}"
    )
    assert type(excinfo.value.__cause__) is error


def test_split_lets_other_errors_of_the_result_propagate(core):
    asm = core.BatchAssembler()
    asm.assemble([np.zeros((10, 2))])
    with pytest.raises(RuntimeError, match="a bug in the result type"):
        asm.split(BrokenGetitem())
