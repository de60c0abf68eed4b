"""What the batch function returns, split per item: one array, several outputs, lists; and a
result handed to a future never changes afterwards."""

from __future__ import annotations

import numpy as np
import pytest

import fastbatch


def row(v: float) -> np.ndarray:
    return np.array([v, v])


BUFFER = np.zeros((8, 2))


def identity(batch):
    return batch


def input_view(batch):
    return batch[:, ::-1][:, ::-1]


def own_buffer_returned(batch):
    np.multiply(batch, 1.0, out=BUFFER[: len(batch)])
    return BUFFER[: len(batch)]


class Preallocated:
    """A model that writes into the same output array every call and returns it."""

    def __init__(self) -> None:
        self.out = np.zeros((1, 2))

    def __call__(self, batch):
        np.multiply(batch, 1.0, out=self.out)
        return self.out


@pytest.mark.parametrize("func", [identity, input_view, own_buffer_returned, Preallocated()],
                         ids=["identity", "input_view", "own_buffer_slice", "preallocated"])
def test_a_result_never_changes_after_it_is_handed_out(make_processor, func):
    processor = make_processor(func, max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(row(2.0))
    kept = first.result(5)
    for v in (10.0, 20.0, 30.0):  # later batches reuse whatever buffer the function reuses
        np.testing.assert_array_equal(processor.enqueue_predict(row(v)).result(5), row(v))
    np.testing.assert_array_equal(kept, row(2.0))
    np.testing.assert_array_equal(first.result(0), row(2.0))


def test_a_fresh_result_is_split_without_a_copy(make_processor):
    made = []

    def model(batch):
        out = batch * 2
        made.append(out.__array_interface__["data"][0])  # the address only, no reference
        return out

    processor = make_processor(model, max_batch_size=4, batch_timeout=0.05)
    futures = [processor.enqueue_predict(row(i)) for i in range(4)]
    results = [f.result(5) for f in futures]
    assert len(made) == 1
    start = made[0]
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, row(i) * 2)
        assert r.__array_interface__["data"][0] == start + i * r.nbytes  # a view of the result


def test_several_outputs_as_a_tuple(make_processor):
    def model(batch):
        return batch.sum(axis=1), batch * 10  # (logits, embeddings)

    processor = make_processor(model, max_batch_size=8, batch_timeout=0.05)
    items = [row(1.0), np.stack([row(2.0), row(3.0)]), row(4.0)]  # a row, a mini-batch of 2, a row
    futures = [processor.enqueue_predict(x) for x in items]
    a, b, c = (f.result(5) for f in futures)
    assert isinstance(a, tuple) and len(a) == 2
    assert a[0] == 2.0 and np.array_equal(a[1], row(10.0))
    np.testing.assert_array_equal(b[0], [4.0, 6.0])
    np.testing.assert_array_equal(b[1], [row(20.0), row(30.0)])
    assert c[0] == 8.0 and np.array_equal(c[1], row(40.0))


def test_several_outputs_as_a_dict(make_processor):
    def model(batch):
        return {"score": batch[:, 0] + 1, "label": (batch[:, 0] > 2).astype(np.int64)}

    processor = make_processor(model, max_batch_size=8, batch_timeout=0.05)
    futures = [processor.enqueue_predict(row(float(i))) for i in range(5)]
    for i, f in enumerate(futures):
        out = f.result(5)
        assert set(out) == {"score", "label"} and list(out) == ["score", "label"]
        assert out["score"] == i + 1 and out["label"] == int(i > 2)


def test_several_outputs_never_change_either(make_processor):
    kept = np.zeros((1, 2))

    def model(batch):
        np.multiply(batch, 1.0, out=kept)
        return kept, batch  # the function's own buffer, and its input

    processor = make_processor(model, max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(row(2.0)).result(5)
    processor.enqueue_predict(row(9.0)).result(5)
    np.testing.assert_array_equal(first[0], row(2.0))
    np.testing.assert_array_equal(first[1], row(2.0))


@pytest.mark.parametrize("model, fragment", [
    (lambda b: (b, b[:1]), "tuple of 2 outputs (0: array of shape (3, 2), 1: array of shape (1, 2))"),
    (lambda b: {"a": b, "b": [1, 2, 3]}, "dict of 2 outputs ('a': array of shape (3, 2), 'b': list)"),
])
def test_several_outputs_of_the_wrong_shape_fail_the_batch_clearly(make_processor, gate, model, fragment):
    gate.func = model
    gate.hold()
    processor = make_processor(gate, max_batch_size=3, batch_timeout=0.05, max_retries=0)
    futures = [processor.enqueue_predict(row(float(i))) for i in range(3)]
    assert gate.entered.wait(5)
    gate.release.set()
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError) as info:
            f.result(5)
        assert fragment in str(info.value) and "leading dimension is 3" in str(info.value)


def test_several_outputs_without_futures(make_processor):
    seen = []

    def model(batch):
        seen.append(len(batch))
        return batch, batch.sum(axis=1)

    processor = make_processor(model, max_batch_size=4, batch_timeout=0.05)
    for i in range(4):
        processor.enqueue(row(float(i)))
    processor.stop()
    stats = processor.get_stats()
    assert stats["total_processed"] == 4 and stats["total_failed"] == 0 and sum(seen) == 4


def test_a_list_is_still_one_result_per_sample(make_processor):
    processor = make_processor(lambda b: [f"r{int(x[0])}" for x in b], max_batch_size=4, batch_timeout=0.05)
    futures = [processor.enqueue_predict(row(float(i))) for i in range(4)]
    assert [f.result(5) for f in futures] == ["r0", "r1", "r2", "r3"]


def test_a_kept_tuple_of_outputs_is_copied(make_processor):
    class Kept:
        def __init__(self):
            self.out = (np.zeros((1, 2)), np.zeros((1, 2)))

        def __call__(self, batch):
            np.multiply(batch, 1.0, out=self.out[0])
            np.multiply(batch, 2.0, out=self.out[1])
            return self.out

    processor = make_processor(Kept(), max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(row(2.0)).result(5)
    processor.enqueue_predict(row(9.0)).result(5)
    np.testing.assert_array_equal(first[0], row(2.0))
    np.testing.assert_array_equal(first[1], row(4.0))


def test_memory_owned_by_another_object_is_copied(make_processor):
    raw = bytearray(16)

    def model(batch):
        view = np.frombuffer(raw, dtype=np.float64).reshape(1, 2)
        view[:] = batch
        return view

    processor = make_processor(model, max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(row(2.0)).result(5)
    processor.enqueue_predict(row(9.0)).result(5)
    np.testing.assert_array_equal(first, row(2.0))


def test_a_list_result_that_cannot_be_iterated_fails_enqueue_items_too(make_processor):
    class Broken:
        def __len__(self):
            return 4

        def __iter__(self):
            raise RuntimeError("cannot iterate")

    processor = make_processor(lambda items: Broken(), batch_generic_items=True, max_batch_size=4,
                               max_retries=0, isolate_failures=False)
    processor.pause()
    for _ in range(4):
        processor.enqueue(object())  # nobody reads these results: the batch still fails
    processor.resume()
    processor.stop(5)  # processes what is queued
    stats = processor.get_stats()
    assert stats["total_failed"] == 4 and stats["total_processed"] == 0
