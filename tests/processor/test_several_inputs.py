"""Several inputs per item: a tuple or dict of arrays is one item, batched field by field."""

from __future__ import annotations

import numpy as np
import pytest

import fastbatch
from fastbatch import PaddedBatch


def test_tuple_items_reach_the_function_as_a_tuple_of_batches(make_processor):
    seen = []

    def func(batch):
        seen.append(batch)
        ids, weights = batch
        return ids * weights

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    items = [(np.full(3, i, np.int64), np.arange(3, dtype=np.float32) + i) for i in range(4)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for (ids, w), f in zip(items, futures):
        np.testing.assert_array_equal(f.result(5), ids * w)
    (batch,) = seen
    assert isinstance(batch, tuple) and len(batch) == 2
    assert batch[0].shape == (4, 3) and batch[0].dtype == np.int64
    assert batch[1].shape == (4, 3) and batch[1].dtype == np.float32


def test_dict_items_reach_the_function_as_a_dict_in_the_items_key_order(make_processor):
    seen = []

    def func(batch):
        seen.append(list(batch))
        return batch["x"].sum(axis=1) + batch["bias"][:, 0]

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    items = [{"x": np.full(4, float(i)), "bias": np.array([10.0 * i])} for i in range(3)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    assert [f.result(5) for f in futures] == [4.0 * i + 10.0 * i for i in range(3)]
    assert seen == [["x", "bias"]]


def test_the_same_keys_in_another_order_are_another_lane(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(list(b)) or b["a"], max_batch_size=8)
    processor.pause()
    f1 = processor.enqueue_predict({"a": np.zeros(2), "b": np.ones(2)})
    f2 = processor.enqueue_predict({"b": np.ones(2), "a": np.zeros(2)})
    processor.resume()
    np.testing.assert_array_equal(f1.result(5), np.zeros(2))
    np.testing.assert_array_equal(f2.result(5), np.zeros(2))
    assert sorted(seen) == [["a", "b"], ["b", "a"]]


def test_mini_batch_fields_give_each_item_its_rows(make_processor):
    sizes = []

    def func(batch):
        a, b = batch
        sizes.append(len(a))
        return a + b

    processor = make_processor(func, max_batch_size=16)
    processor.pause()
    items = [(np.full((n, 2), n, np.float64), np.ones((n, 2))) for n in (1, 3, 2)]
    items.append((np.full(2, 7.0), np.ones(2)))  # 1-D fields: one sample
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for (a, b), f in zip(items, futures):
        np.testing.assert_array_equal(f.result(5), a + b)
    assert sizes == [7]
    assert processor.get_stats()["total_samples"] == 7


def test_several_outputs_come_back_per_item(make_processor):
    processor = make_processor(lambda b: {"sum": b[0] + b[1], "first": b[0][:, :1]}, max_batch_size=8)
    processor.pause()
    items = [(np.full(2, i, np.float64), np.full(2, 1.0)) for i in range(3)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for (a, b), f in zip(items, futures):
        out = f.result(5)
        np.testing.assert_array_equal(out["sum"], a + b)
        np.testing.assert_array_equal(out["first"], a[:1])


def test_variable_length_fields_are_each_a_padded_batch(make_processor):
    seen = []

    def func(batch):
        seen.append(batch)
        ids, pixels = batch["ids"], batch["pixels"]
        return {"tokens": ids.data * 2, "brightness": pixels.data.mean(axis=(1, 2))}

    processor = make_processor(func, variable_length=True, trim_results=("tokens",), pad_value=-1, max_batch_size=8)
    processor.pause()
    items = [{"ids": np.arange(n, dtype=np.int64), "pixels": np.full((m, 3), float(n))}
             for n, m in ((3, 2), (1, 4), (5, 1))]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for x, f in zip(items, futures):
        out = f.result(5)
        np.testing.assert_array_equal(out["tokens"], x["ids"] * 2)  # trimmed to the first field's length
    (batch,) = seen
    assert isinstance(batch["ids"], PaddedBatch) and isinstance(batch["pixels"], PaddedBatch)
    assert batch["ids"].data.shape == (3, 5) and batch["ids"].lengths.tolist() == [3, 1, 5]
    assert batch["pixels"].data.shape == (3, 4, 3) and batch["pixels"].lengths.tolist() == [2, 4, 1]
    assert batch["pixels"].data[2, 1:].tolist() == [[-1.0] * 3] * 3
    assert processor.get_stats()["padding_ratio"] == pytest.approx((15 - 9) / 9)


def test_variable_length_tuple_fields_of_equal_length(make_processor):
    def func(batch):
        ids, mask = batch
        return ids.data * mask.data

    processor = make_processor(func, variable_length=True, trim_results=True, max_batch_size=8)
    processor.pause()
    items = [(np.arange(n) + 1, np.ones(n, np.int64)) for n in (2, 4)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for (ids, _), f in zip(items, futures):
        np.testing.assert_array_equal(f.result(5), ids)


def test_several_input_items_and_single_arrays_run_in_separate_lanes(make_processor):
    seen = []

    def func(batch):
        seen.append(type(batch).__name__)
        return batch[0] + batch[1] if isinstance(batch, tuple) else batch * 10

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    pairs = [processor.enqueue_predict((np.ones(3), np.full(3, float(i)))) for i in range(2)]
    rows = [processor.enqueue_predict(np.full(3, float(i))) for i in range(2)]
    other = processor.enqueue_predict((np.ones(3, np.float32), np.ones(3, np.float32)))
    processor.resume()
    for i, f in enumerate(pairs):
        np.testing.assert_array_equal(f.result(5), np.full(3, 1.0 + i))
    for i, f in enumerate(rows):
        np.testing.assert_array_equal(f.result(5), np.full(3, 10.0 * i))
    assert other.result(5).dtype == np.float32
    assert sorted(seen) == ["ndarray", "tuple", "tuple"]


def test_keys_reach_the_function_and_split_lanes(make_processor):
    seen = []

    def func(batch, key=None):
        seen.append((key, len(batch[0])))
        return batch[0]

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    futures = [processor.enqueue_predict((np.full(2, float(i)), np.ones(2)), key=f"m{i % 2}") for i in range(4)]
    processor.resume()
    for i, f in enumerate(futures):
        np.testing.assert_array_equal(f.result(5), np.full(2, float(i)))
    assert sorted(seen) == [("m0", 2), ("m1", 2)]


def test_tuples_of_python_objects_stay_generic_items(make_processor, caplog):
    processor = make_processor(lambda item: item[0] + item[1], max_batch_size=8)
    assert processor.enqueue_predict((1, 2)).result(5) == 3


@pytest.mark.parametrize("item, error, message", [
    pytest.param((), ValueError, r"empty tuple", id="empty-tuple"),
    pytest.param({}, ValueError, r"empty dict", id="empty-dict"),
    pytest.param((np.zeros(2), [1, 2]), TypeError, r"only numpy arrays: field 1 is list", id="mixed-tuple"),
    pytest.param({"a": np.zeros(2), "b": "x"}, TypeError, r"field 'b' is str", id="mixed-dict"),
    pytest.param((np.zeros((2, 3)), np.zeros((3, 3))), ValueError,
                 r"same number of samples.*field 0 has 2, field 1 has 3", id="counts"),
    pytest.param((np.zeros(2), np.array(1.0)), ValueError, r"field 1 is a 0-d array", id="0-d"),
    pytest.param({"o": np.array([None, 1])}, fastbatch.BatchDtypeError, r"field 'o' has dtype object", id="object"),
    pytest.param((np.zeros((0, 2)), np.zeros((0, 2))), ValueError, r"0 samples", id="no-samples"),
    pytest.param((np.zeros((40, 10)), np.zeros((40, 10))), ValueError, r"exceeds the batch byte budget",
                 id="over-budget"),
])
def test_bad_items_are_refused_naming_the_field(make_processor, item, error, message):
    processor = make_processor(lambda b: b[0], max_batch_size=8, max_batch_memory_mb=0.005)
    with pytest.raises(error, match=message):
        processor.enqueue_predict(item)
    good = processor.enqueue_predict((np.ones(2), np.ones(2)))
    np.testing.assert_array_equal(good.result(5), np.ones(2))
    assert processor.get_stats()["total_submitted"] == 1


def test_a_variable_length_field_of_length_zero_is_refused(make_processor):
    processor = make_processor(lambda b: b[0].lengths, variable_length=True)
    with pytest.raises(ValueError, match=r"field 1 has length 0"):
        processor.enqueue_predict((np.ones(3), np.ones(0)))


def test_one_poisonous_item_fails_alone(make_processor):
    def func(batch):
        a, b = batch
        if (b < 0).any():
            raise ValueError("negative weight")
        return a * b

    processor = make_processor(func, max_batch_size=16, max_retries=0)
    processor.pause()
    items = [(np.full(2, float(i)), np.full(2, -1.0 if i == 5 else 2.0)) for i in range(8)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    for i, ((a, b), f) in enumerate(zip(items, futures)):
        if i == 5:
            with pytest.raises(ValueError, match="negative weight"):
                f.result(5)
        else:
            np.testing.assert_array_equal(f.result(5), a * b)


def test_a_result_that_aliases_the_batch_never_changes(make_processor):
    processor = make_processor(lambda b: b[1], max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict((np.zeros(3), np.full(3, 2.0)))
    kept = first.result(5)
    for v in (10.0, 20.0, 30.0):  # later batches reuse the assemblers' buffers
        np.testing.assert_array_equal(processor.enqueue_predict((np.zeros(3), np.full(3, v))).result(5),
                                      np.full(3, v))
    np.testing.assert_array_equal(kept, np.full(3, 2.0))


def test_lanes_describe_their_fields():
    from fastbatch.items._lanes import FIELDS, PADDED_FIELDS, Lane

    fields = (("ids", np.dtype(np.int64), ()), ("pixels", np.dtype(np.float32), (3, 4)))
    assert Lane((), PADDED_FIELDS, fields=fields, container="dict", key="m").describe() == \
        "dicts of 2 variable-length arrays ('ids': int64 (L,), 'pixels': float32 (L, 3, 4)), key 'm'"
    assert Lane((), FIELDS, fields=((0, np.dtype(np.float64), (2,)),), container="tuple").describe() == \
        "tuples of 1 arrays (float64 (2,))"
