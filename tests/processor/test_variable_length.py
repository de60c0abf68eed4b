"""variable_length: samples of different lengths reach the function as one PaddedBatch."""

from __future__ import annotations

import numpy as np
import pytest

import fastbatch
from fastbatch import PaddedBatch


def test_the_function_gets_data_lengths_and_mask(make_processor):
    seen = []

    def func(batch):
        seen.append(batch)
        return batch.data.sum(axis=1)

    processor = make_processor(func, variable_length=True, pad_value=-1, max_batch_size=8)
    processor.pause()
    seqs = [np.arange(1, n + 1, dtype=np.int64) for n in (3, 1, 5)]
    futures = [processor.enqueue_predict(s) for s in seqs]
    processor.resume()
    got = [f.result(5) for f in futures]
    (batch,) = seen
    assert isinstance(batch, PaddedBatch) and len(batch) == 3
    assert batch.data.shape == (3, 5) and batch.data.dtype == np.int64
    assert batch.lengths.tolist() == [3, 1, 5]
    assert batch.mask.dtype == np.bool_ and batch.mask.sum(axis=1).tolist() == [3, 1, 5]
    assert batch.data[1].tolist() == [1, -1, -1, -1, -1]
    # Each future gets its row of the (B,) result: the padded sum.
    assert got == [int(s.sum()) - (5 - len(s)) for s in seqs]


def test_trim_results_gives_each_item_its_own_length(make_processor):
    processor = make_processor(lambda b: b.data * 10, variable_length=True, trim_results=True, max_batch_size=8)
    processor.pause()
    seqs = [np.arange(n, dtype=np.float32) + 1 for n in (4, 2, 7)]
    futures = [processor.enqueue_predict(s) for s in seqs]
    processor.resume()
    for s, f in zip(seqs, futures):
        np.testing.assert_array_equal(f.result(5), s * 10)


def test_frames_of_several_features_and_several_outputs(make_processor):
    def func(batch):
        pooled = (batch.data * batch.mask[:, :, None]).sum(axis=1) / batch.lengths[:, None]
        return {"tokens": batch.data + 1, "pooled": pooled}

    processor = make_processor(func, variable_length=True, trim_results=("tokens",), max_batch_size=8)
    processor.pause()
    frames = [np.random.default_rng(n).random((n, 3)) for n in (2, 6, 4)]
    futures = [processor.enqueue_predict(x) for x in frames]
    processor.resume()
    for x, f in zip(frames, futures):
        out = f.result(5)
        np.testing.assert_allclose(out["tokens"], x + 1)
        np.testing.assert_allclose(out["pooled"], x.mean(axis=0))


def test_different_trailing_shapes_and_dtypes_go_to_different_batches(make_processor):
    shapes = []

    def func(batch):
        shapes.append((batch.data.shape, batch.data.dtype))
        return batch.lengths

    processor = make_processor(func, variable_length=True, max_batch_size=8)
    processor.pause()
    items = [np.zeros(3), np.zeros((2, 4)), np.zeros(5), np.zeros((3, 4)), np.zeros(2, np.int32)]
    futures = [processor.enqueue_predict(x) for x in items]
    processor.resume()
    assert [f.result(5) for f in futures] == [3, 2, 5, 3, 2]
    assert shapes == [((2, 5), np.float64), ((2, 3, 4), np.float64), ((1, 2), np.int32)]


def test_padding_ratio_counts_padded_against_real_positions(make_processor):
    processor = make_processor(lambda b: b.lengths, variable_length=True, max_batch_size=8)
    assert processor.get_stats()["padding_ratio"] == 0.0
    processor.pause()
    futures = [processor.enqueue_predict(np.ones(n)) for n in (1, 3)]  # 6 positions, 4 real
    processor.resume()
    for f in futures:
        f.result(5)
    assert processor.get_stats()["padding_ratio"] == pytest.approx(2 / 4)


@pytest.mark.parametrize("item, error, fragment", [
    (np.zeros(0), ValueError, "a sample of length 0 (shape (0,))"),
    (np.zeros((0, 3)), ValueError, "a sample of length 0 (shape (0, 3))"),
    (np.array(1.0), ValueError, "0-d array"),
])
def test_bad_samples_are_refused_at_the_call(make_processor, item, error, fragment):
    processor = make_processor(lambda b: b.lengths, variable_length=True)
    good = processor.enqueue_predict(np.ones(2))
    with pytest.raises(error) as info:
        processor.enqueue_predict(item)
    assert fragment in str(info.value)
    assert good.result(5) == 2


def test_a_pad_value_the_dtype_cannot_hold_is_refused_for_that_lane_only(make_processor):
    processor = make_processor(lambda b: b.lengths, variable_length=True, pad_value=0.5)
    with pytest.raises(ValueError, match="0.5"):
        processor.enqueue_predict(np.ones(3, np.int64))
    assert processor.enqueue_predict(np.ones(3)).result(5) == 3  # float64 holds 0.5


def test_a_failing_item_is_isolated_within_a_padded_batch(make_processor):
    def func(batch):
        if (batch.lengths == 4).any():
            raise ValueError("no length 4")
        return batch.lengths

    processor = make_processor(func, variable_length=True, max_batch_size=8, max_retries=0)
    processor.pause()
    futures = [processor.enqueue_predict(np.ones(n)) for n in (1, 4, 2, 3)]
    processor.resume()
    assert [futures[i].result(5) for i in (0, 2, 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="no length 4"):
        futures[1].result(5)


def test_a_result_of_the_wrong_length_fails_the_batch_clearly(make_processor):
    processor = make_processor(lambda b: b.lengths[:1], variable_length=True, max_batch_size=8, max_retries=0)
    processor.pause()
    futures = [processor.enqueue_predict(np.ones(n)) for n in (1, 2)]
    processor.resume()
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError, match="1 results for a batch of 2 samples"):
            f.result(5)


def test_a_result_that_reuses_its_buffer_never_changes_afterwards(make_processor):
    class Preallocated:
        def __init__(self):
            self.out = np.zeros(8)

        def __call__(self, batch):
            out = self.out[:len(batch)]
            out[:] = batch.lengths
            return out

    processor = make_processor(Preallocated(), variable_length=True, max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(np.ones(2))
    assert first.result(5) == 2
    processor.enqueue_predict(np.ones(7)).result(5)
    assert first.result(5) == 2


@pytest.mark.parametrize("bucket", [False, True])
def test_bucket_by_length_batches_similar_lengths_together(make_processor, bucket):
    batches = []

    def func(batch):
        batches.append(sorted(batch.lengths.tolist()))
        return batch.lengths

    processor = make_processor(func, variable_length=True, bucket_by_length=bucket, max_batch_size=4,
                               processing_strategy="fixed", initial_batch_size=4)
    processor.pause()
    lengths = [100, 3, 98, 5, 101, 2, 4, 99]
    futures = [processor.enqueue_predict(np.ones(n, np.int64)) for n in lengths]
    processor.resume()
    assert [f.result(5) for f in futures] == lengths
    if bucket:
        assert batches == [[98, 99, 100, 101], [2, 3, 4, 5]]
        assert processor.get_stats()["padding_ratio"] == pytest.approx((6 + 6) / sum(lengths))
    else:
        assert batches == [[3, 5, 98, 100], [2, 4, 99, 101]]


@pytest.mark.parametrize("field", ["trim_results", "bucket_by_length"])
def test_options_of_variable_length_need_it(field):
    with pytest.raises(ValueError, match=f"{field}=True: applies to variable-length items"):
        fastbatch.BatchProcessorConfig(**{field: True})


def _pair(batch):
    # One per-position output and one of a fixed width that happens to be 4.
    return batch.data * 10, np.ones((len(batch), 4))


def test_an_outputs_shape_never_depends_on_its_batchmates(make_processor):
    processor = make_processor(_pair, variable_length=True, trim_results=(0,), max_batch_size=8)
    alone = processor.enqueue_predict(np.arange(2.0)).result(5)
    processor.pause()
    short = processor.enqueue_predict(np.arange(2.0))
    longer = processor.enqueue_predict(np.arange(4.0))  # L_max becomes 4, the second output's width
    processor.resume()
    together, other = short.result(5), longer.result(5)
    np.testing.assert_array_equal(together[0], np.arange(2.0) * 10)  # declared: trimmed
    assert together[1].shape == alone[1].shape == other[1].shape == (4,)  # not declared: its row


def test_trim_results_true_declares_every_output_and_checks_each(make_processor):
    processor = make_processor(_pair, variable_length=True, trim_results=True, max_batch_size=8,
                               max_retries=0)
    with pytest.raises(fastbatch.ResultMismatchError,
                       match=r"output 1 per position, so it must have shape \(B, L_max, \.\.\.\) = \(1, 2, \.\.\.\) "
                             r"for this batch, but it has shape \(1, 4\).*trim_results=\(0,\)"):
        processor.enqueue_predict(np.arange(2.0)).result(5)


def test_trim_results_by_key_and_names_the_result_lacks(make_processor):
    def func(batch):
        return {"hidden": batch.data + 1, "pooled": batch.data.sum(axis=1)}

    processor = make_processor(func, variable_length=True, trim_results=("hidden",), max_batch_size=8)
    processor.pause()
    futures = [processor.enqueue_predict(np.arange(float(n))) for n in (3, 1, 2)]
    processor.resume()
    for n, f in zip((3, 1, 2), futures):
        out = f.result(5)
        np.testing.assert_array_equal(out["hidden"], np.arange(float(n)) + 1)
        assert out["pooled"] == np.arange(float(n)).sum()
    wrong = make_processor(func, variable_length=True, trim_results=("logits",), max_batch_size=8, max_retries=0)
    with pytest.raises(fastbatch.ResultMismatchError, match=r"names outputs \['logits'\] that the batch function's "
                                                             r"result does not have \(its outputs: \['hidden', 'pooled'\]\)"):
        wrong.enqueue_predict(np.arange(2.0)).result(5)
    single = make_processor(lambda b: b.data, variable_length=True, trim_results=(0,), max_batch_size=8,
                            max_retries=0)
    with pytest.raises(fastbatch.ResultMismatchError, match="returned one array of shape .*use trim_results=True"):
        single.enqueue_predict(np.arange(2.0)).result(5)


@pytest.mark.parametrize("value, error, fragment", [
    ((), TypeError, "must be True, False, or a tuple"),
    ("hidden", TypeError, "must be True, False, or a tuple"),
    ((1.5,), TypeError, "must be True, False, or a tuple"),
    ((True,), TypeError, "must be True, False, or a tuple"),
    ((0, 0), ValueError, "names an output twice"),
    ((-1,), ValueError, "ints >= 0"),
    ({0}, TypeError, "must be True, False, or a tuple"),
])
def test_trim_results_names_are_checked(value, error, fragment):
    with pytest.raises(error, match=fragment):
        fastbatch.BatchProcessorConfig(variable_length=True, trim_results=value)


def test_a_misdeclared_output_fails_the_batch_for_enqueue_too(make_processor):
    processor = make_processor(_pair, variable_length=True, trim_results=True, max_batch_size=8, max_retries=0,
                               isolate_failures=False)
    processor.enqueue(np.arange(2.0))  # no future: the batch still fails, counted and logged
    processor.enqueue_predict(np.arange(3.0)).exception(5)
    stats = processor.get_stats()
    assert stats["total_failed"] == 2 and stats["total_processed"] == 0


def test_trim_results_accepts_a_list_of_names():
    config = fastbatch.BatchProcessorConfig(variable_length=True, trim_results=[0, "hidden"])
    assert config.trim_results == (0, "hidden")
    with pytest.raises(ValueError, match="set variable_length=True too"):
        fastbatch.BatchProcessorConfig(trim_results=(0,))


@pytest.mark.parametrize("item", [[101, 2023, 102], np.float64(3.0), "token ids", (1, 2, 3)],
                         ids=["list", "numpy scalar", "str", "tuple of ints"])
def test_objects_are_refused_at_the_call(make_processor, item):
    processor = make_processor(lambda b: b.lengths, variable_length=True, max_batch_size=8, batch_timeout=0.05)
    good = processor.enqueue_predict(np.arange(3))
    with pytest.raises(TypeError, match=r"item cannot be batched with variable_length=True.*np\.asarray\(item\)"):
        processor.enqueue_predict(item)
    assert good.result(5) == 3


def test_pad_value_needs_variable_length():
    with pytest.raises(ValueError, match=r"pad_value=-1: applies to variable-length items"):
        fastbatch.BatchProcessorConfig(pad_value=-1)
    assert fastbatch.BatchProcessorConfig(variable_length=True, pad_value=-1).pad_value == -1
