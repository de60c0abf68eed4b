"""Items of more samples than a batch holds: split into parts, results joined back."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

import fastbatch


def _sizes_seen(seen):
    return [len(b) if isinstance(b, np.ndarray) else len(next(iter(b.values())) if isinstance(b, dict) else b[0])
            for b in seen]


def test_an_oversized_item_is_split_and_its_future_gets_the_whole_result(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(b.copy()) or b * 2, max_batch_size=4)
    x = np.arange(20.0).reshape(10, 2)
    out = processor.enqueue_predict(x).result(5)
    np.testing.assert_array_equal(out, x * 2)
    assert _sizes_seen(seen) == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(seen), x)
    stats = processor.get_stats()
    assert stats["max_batch_size"] == 4 and stats["total_processed"] == 3  # the parts are counted


def test_without_split_oversized_the_item_runs_alone(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(len(b)) or b + 1, max_batch_size=4, split_oversized=False)
    x = np.ones((10, 3))
    np.testing.assert_array_equal(processor.enqueue_predict(x).result(5), x + 1)
    assert seen == [10]


def test_parts_share_batches_with_other_items_and_every_result_routes_home(make_processor):
    processor = make_processor(lambda b: b * 10, max_batch_size=4)
    processor.pause()
    small = [processor.enqueue_predict(np.full((1, 2), float(i))) for i in range(3)]
    big_x = np.arange(14.0).reshape(7, 2)
    big = processor.enqueue_predict(big_x)
    after = processor.enqueue_predict(np.full(2, 99.0))
    processor.resume()
    for i, f in enumerate(small):
        np.testing.assert_array_equal(f.result(5), np.full((1, 2), 10.0 * i))
    np.testing.assert_array_equal(big.result(5), big_x * 10)
    np.testing.assert_array_equal(after.result(5), np.full(2, 990.0))


@pytest.mark.parametrize("form", ["tuple", "dict", "list"])
def test_results_of_every_form_are_joined(make_processor, form):
    def func(b):
        if form == "tuple":
            return b.sum(axis=1), b * 2
        if form == "dict":
            return {"sum": b.sum(axis=1), "neg": -b}
        return [f"row {row[0]:g}" for row in b]

    processor = make_processor(func, max_batch_size=3)
    x = np.arange(16.0).reshape(8, 2)
    out = processor.enqueue_predict(x).result(5)
    if form == "tuple":
        assert isinstance(out, tuple) and len(out) == 2
        np.testing.assert_array_equal(out[0], x.sum(axis=1))
        np.testing.assert_array_equal(out[1], x * 2)
    elif form == "dict":
        assert list(out) == ["sum", "neg"]
        np.testing.assert_array_equal(out["sum"], x.sum(axis=1))
        np.testing.assert_array_equal(out["neg"], -x)
    else:
        assert out == [f"row {v:g}" for v in x[:, 0]]


def test_several_inputs_are_split_field_by_field(make_processor):
    seen = []

    def func(b):
        seen.append((b["ids"].shape[0], b["w"].shape[0]))
        return b["ids"] * b["w"][:, :1]

    processor = make_processor(func, max_batch_size=4)
    item = {"ids": np.arange(18).reshape(9, 2), "w": np.arange(9.0).reshape(9, 1)}
    np.testing.assert_array_equal(processor.enqueue_predict(item).result(5), item["ids"] * item["w"])
    assert seen == [(4, 4), (4, 4), (1, 1)]
    pair = (np.ones((5, 2)), np.zeros((5, 3)))
    processor2 = make_processor(lambda b: (b[0] + 1, b[1] - 1), max_batch_size=2)
    out = processor2.enqueue_predict(pair).result(5)
    np.testing.assert_array_equal(out[0], pair[0] + 1)
    np.testing.assert_array_equal(out[1], pair[1] - 1)


def test_a_failing_part_fails_the_item_and_nothing_else(make_processor):
    def func(b):
        if (b < 0).any():
            raise ValueError(f"negative input in a batch of {len(b)}")
        return b + 1

    processor = make_processor(func, max_batch_size=4, max_retries=0)
    processor.pause()
    x = np.arange(12.0).reshape(12, 1)
    x[9] = -1.0  # in the third part
    bad = processor.enqueue_predict(x)
    good = [processor.enqueue_predict(np.full((2, 1), float(i))) for i in range(4)]
    processor.resume()
    with pytest.raises(ValueError, match="negative input"):
        bad.result(5)
    for i, f in enumerate(good):
        np.testing.assert_array_equal(f.result(5), np.full((2, 1), i + 1.0))


def test_cancelling_the_item_cancels_its_parts(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(len(b)) or b, max_batch_size=4)
    processor.pause()
    big = processor.enqueue_predict(np.ones((10, 2)))
    assert big.cancel()
    other = processor.enqueue_predict(np.zeros((1, 2)))
    processor.resume()
    np.testing.assert_array_equal(other.result(5), np.zeros((1, 2)))
    assert big.cancelled() and seen == [1]
    assert processor.get_stats()["total_cancelled"] == 3


def test_a_part_refused_for_room_refuses_the_whole_item(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(len(b)) or b, max_batch_size=4, max_queue_size=2)
    processor.pause()
    with pytest.raises(fastbatch.QueueFullError):
        processor.enqueue(np.ones((12, 2)), timeout=0)  # three parts, room for two
    refused = processor.enqueue_predict(np.ones((12, 2)), timeout=0)
    assert isinstance(refused.exception(5), fastbatch.QueueFullError)
    processor.resume()
    ok = processor.enqueue_predict(np.ones((8, 2)))  # two parts fit
    np.testing.assert_array_equal(ok.result(5), np.ones((8, 2)))
    assert seen == [4, 4]  # none of the refused items' parts ran


def test_an_expired_part_fails_the_item(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=2)
    processor.pause()
    f = processor.enqueue_predict(np.ones((5, 1)), deadline=0.01)
    assert isinstance(f.exception(5), fastbatch.ItemExpiredError)
    processor.resume()


def test_enqueue_without_a_future_splits_and_logs_a_failure(make_processor, caplog):
    done = []

    def func(b):
        if (b < 0).any():
            raise ValueError("negative")
        done.append(len(b))
        return b

    processor = make_processor(func, max_batch_size=4, max_retries=0)
    processor.enqueue(np.ones((9, 1)))
    with caplog.at_level(logging.ERROR, logger="fastbatch"):
        processor.enqueue(-np.ones((5, 1)))
        processor.stop(5)
    assert sorted(done) == [1, 4, 4]
    assert "negative" in caplog.text


def test_enqueue_async_gets_the_joined_result(make_processor):
    processor = make_processor(lambda b: b * 3, max_batch_size=4)
    x = np.arange(10.0).reshape(5, 2)
    out = asyncio.run(processor.enqueue_async(x))
    np.testing.assert_array_equal(out, x * 3)


def test_variable_length_items_are_one_sample_each_and_never_split(make_processor):
    seen = []
    processor = make_processor(lambda b: seen.append(b.data.shape) or b.lengths, max_batch_size=2,
                               variable_length=True)
    assert processor.enqueue_predict(np.arange(50)).result(5) == 50
    assert seen == [(1, 50)]


def test_tensor_items_are_split_and_joined(make_processor):
    torch = pytest.importorskip("torch")
    seen = []
    processor = make_processor(lambda b: seen.append(b.shape[0]) or b * 2, max_batch_size=3)
    x = torch.arange(14.0).reshape(7, 2)
    out = processor.enqueue_predict(x).result(5)
    assert isinstance(out, torch.Tensor) and torch.equal(out, x * 2)
    assert seen == [3, 3, 1]


def test_split_oversized_must_be_a_bool():
    with pytest.raises(TypeError, match="split_oversized"):
        fastbatch.BatchProcessorConfig(split_oversized="yes")


def test_a_cancelled_split_item_counts_as_done_for_wait(make_processor):
    import concurrent.futures

    processor = make_processor(lambda b: b, max_batch_size=2)
    processor.pause()
    big = processor.enqueue_predict(np.ones((5, 1)))
    assert big.cancel()
    done, not_done = concurrent.futures.wait([big], timeout=5)
    assert done == {big} and not not_done
    processor.resume()


def test_a_split_item_cannot_be_cancelled_once_a_part_has_started(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=2, batch_timeout=0.0)
    big = processor.enqueue_predict(np.arange(4.0).reshape(4, 1))
    assert gate.entered.wait(5)  # the first part is in the batch function
    assert not big.cancel() and not big.cancelled()
    gate.release.set()
    np.testing.assert_array_equal(big.result(5), np.arange(4.0).reshape(4, 1) * 2)


def test_parts_returning_different_kinds_fail_with_a_result_mismatch(make_processor):
    calls = []

    def func(batch):
        calls.append(len(batch))
        return list(batch.sum(axis=1)) if len(calls) == 2 else batch.sum(axis=1)

    processor = make_processor(func, max_batch_size=2, max_retries=0, isolate_failures=False)
    future = processor.enqueue_predict(np.ones((6, 3)))
    with pytest.raises(fastbatch.ResultMismatchError,
                       match=r"returned results of different kinds \(part 0: ndarray of shape \(2,\), "
                             r"part 1: list, part 2: ndarray of shape \(2,\)\)"):
        future.result(5)
    assert calls == [2, 2, 2]


def test_parts_whose_arrays_cannot_be_joined_fail_with_a_result_mismatch(make_processor):
    calls = []

    def func(batch):
        calls.append(len(batch))
        return np.ones((len(batch), len(calls)))  # a different width per part

    processor = make_processor(func, max_batch_size=2, max_retries=0)
    with pytest.raises(fastbatch.ResultMismatchError, match=r"cannot be joined \(part 0: ndarray of shape \(2, 1\), "
                                                             r"part 1: ndarray of shape \(2, 2\)\)"):
        processor.enqueue_predict(np.ones((4, 3))).result(5)


def test_mini_batches_of_a_known_lane_split_by_the_size_in_force(make_processor):
    # The first item opens the lane; later mini-batches of it take the queue's fast path,
    # which must leave an item over the batch size, as reconfigured, to be split.
    seen = []
    processor = make_processor(lambda b: seen.append(len(b)) or b * 2, max_batch_size=4)
    processor.enqueue_predict(np.ones((1, 3))).result(5)
    x = np.arange(18.0).reshape(6, 3)
    np.testing.assert_array_equal(processor.enqueue_predict(x).result(5), x * 2)
    assert max(seen) <= 4
    processor.reconfigure(max_batch_size=2)
    seen.clear()
    y = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(processor.enqueue_predict(y).result(5), y * 2)
    assert sorted(seen) == [1, 2]
    processor.reconfigure(max_batch_size=8)
    seen.clear()
    np.testing.assert_array_equal(processor.enqueue_predict(x).result(5), x * 2)
    assert seen == [6]


def test_a_mini_batch_of_a_known_lane_over_the_byte_budget_is_refused(make_processor):
    processor = make_processor(lambda b: b, max_batch_size=64, max_batch_memory_mb=1 / 1024)  # 1 KiB
    processor.enqueue_predict(np.ones((2, 8))).result(5)  # opens the lane: 128 bytes
    with pytest.raises(ValueError, match="exceeds the batch byte budget"):
        processor.enqueue_predict(np.ones((20, 8)))  # 1,280 bytes
    assert processor.enqueue_predict(np.ones((4, 8))).result(5).shape == (4, 8)
