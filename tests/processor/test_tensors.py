"""torch tensors as items: batched as one tensor on their device, split back per item."""

from __future__ import annotations

import numpy as np
import pytest

import fastbatch

torch = pytest.importorskip("torch")


def test_rows_are_batched_as_one_tensor_and_split_back(make_processor):
    shapes = []

    def model(batch):
        shapes.append(tuple(batch.shape))
        assert isinstance(batch, torch.Tensor)
        return batch * 2

    processor = make_processor(model, max_batch_size=16, batch_timeout=0.05)
    futures = [processor.enqueue_predict(torch.full((3,), float(i))) for i in range(40)]
    for i, f in enumerate(futures):
        out = f.result(5)
        assert isinstance(out, torch.Tensor) and torch.equal(out, torch.full((3,), 2.0 * i))
    assert sum(s[0] for s in shapes) == 40 and max(s[0] for s in shapes) == 16
    stats = processor.get_stats()
    assert stats["batch_count"] == len(shapes)  # one call per batch, as reported
    assert stats["avg_batch_size"] == pytest.approx(40 / len(shapes))


def test_rows_and_mini_batches_mix(make_processor, gate):
    gate.func = lambda b: b + 1
    gate.hold()
    processor = make_processor(gate, max_batch_size=16, batch_timeout=0.05)
    first = processor.enqueue_predict(torch.zeros(2))
    assert gate.entered.wait(5)
    row = processor.enqueue_predict(torch.full((2,), 5.0))
    mini = processor.enqueue_predict(torch.full((3, 2), 7.0))
    gate.release.set()
    assert torch.equal(first.result(5), torch.ones(2))
    assert torch.equal(row.result(5), torch.full((2,), 6.0))
    assert torch.equal(mini.result(5), torch.full((3, 2), 8.0))


def test_several_outputs_and_lists(make_processor):
    processor = make_processor(lambda b: (b.sum(dim=1), b * 3), max_batch_size=8, batch_timeout=0.05)
    futures = [processor.enqueue_predict(torch.full((2,), float(i))) for i in range(5)]
    for i, f in enumerate(futures):
        total, tripled = f.result(5)
        assert total.item() == 2.0 * i and torch.equal(tripled, torch.full((2,), 3.0 * i))
    listed = make_processor(lambda b: [f"r{int(x[0])}" for x in b], max_batch_size=8, batch_timeout=0.05)
    futures = [listed.enqueue_predict(torch.full((2,), float(i))) for i in range(4)]
    assert [f.result(5) for f in futures] == ["r0", "r1", "r2", "r3"]


def test_a_result_never_changes_after_it_is_handed_out(make_processor):
    class Preallocated:
        def __init__(self):
            self.out = torch.zeros(1, 2)

        def __call__(self, batch):
            self.out.copy_(batch)
            return self.out

    processor = make_processor(Preallocated(), max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(torch.full((2,), 2.0)).result(5)
    processor.enqueue_predict(torch.full((2,), 9.0)).result(5)
    assert torch.equal(first, torch.full((2,), 2.0))


@pytest.mark.parametrize("bad, error, fragment", [
    (torch.tensor(1.0), ValueError, "a 0-d tensor"),
    (torch.ones(0, 3), ValueError, "a mini-batch of 0 samples"),
])
def test_bad_tensors_are_refused_at_the_call_and_fail_nothing_else(make_processor, bad, error, fragment):
    processor = make_processor(lambda b: b, max_batch_size=8, batch_timeout=0.05)
    good = processor.enqueue_predict(torch.ones(3))
    with pytest.raises(error) as info:
        processor.enqueue_predict(bad)
    assert fragment in str(info.value)
    assert torch.equal(good.result(5), torch.ones(3))


@pytest.mark.parametrize("other", [
    torch.ones(4), torch.ones(3, dtype=torch.float64), np.ones(3, dtype=np.float32),
    torch.ones(3, device="meta"),
], ids=["shape", "dtype", "numpy", "device"])
def test_tensors_unlike_each_other_are_batched_apart(make_processor, other):
    seen = []

    def func(batch):
        seen.append((type(batch).__name__, tuple(batch.shape), str(batch.dtype), str(getattr(batch, "device", "cpu"))))
        return batch

    processor = make_processor(func, max_batch_size=8)
    processor.pause()
    futures = [processor.enqueue_predict(torch.ones(3)), processor.enqueue_predict(other),
               processor.enqueue_predict(torch.zeros(3))]
    processor.resume()
    assert torch.equal(futures[0].result(5), torch.ones(3))
    assert torch.equal(futures[2].result(5), torch.zeros(3))
    got = futures[1].result(5)
    assert type(got) is type(other) and tuple(got.shape) == tuple(other.shape) and got.dtype == other.dtype
    assert ("Tensor", (2, 3), "torch.float32", "cpu") in seen  # the two alike, in one batch
    assert len(seen) == 2


def test_a_wrong_result_fails_the_batch_clearly(make_processor):
    processor = make_processor(lambda b: b[:1], max_batch_size=4, batch_timeout=0.05, max_retries=0)
    futures = [processor.enqueue_predict(torch.ones(2)) for _ in range(3)]
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError, match="returned 1 results for a batch of 3 samples"):
            f.result(5)


def test_kept_outputs_and_dicts_never_change(make_processor):
    class Kept:
        def __init__(self):
            self.out = (torch.zeros(1, 2), torch.zeros(1, 2))
            self.buf = torch.zeros(1, 2)

        def __call__(self, batch):
            self.out[0].copy_(batch)
            self.out[1].copy_(batch * 2)
            self.buf.copy_(batch * 3)
            return self.out if batch[0, 0] < 100 else {"y": self.buf}

    processor = make_processor(Kept(), max_batch_size=1, batch_timeout=0.0)
    first = processor.enqueue_predict(torch.full((2,), 2.0)).result(5)
    as_dict = processor.enqueue_predict(torch.full((2,), 200.0)).result(5)
    processor.enqueue_predict(torch.full((2,), 9.0)).result(5)
    processor.enqueue_predict(torch.full((2,), 300.0)).result(5)
    assert torch.equal(first[0], torch.full((2,), 2.0)) and torch.equal(first[1], torch.full((2,), 4.0))
    assert torch.equal(as_dict["y"], torch.full((2,), 600.0))


def test_several_outputs_of_the_wrong_shape_fail_the_batch_clearly(make_processor, gate):
    gate.func = lambda b: (b * 2, b.sum(0, keepdim=True))
    gate.hold()
    processor = make_processor(gate, max_batch_size=2, batch_timeout=0.05, max_retries=0)
    futures = [processor.enqueue_predict(torch.ones(3)) for _ in range(2)]
    assert gate.entered.wait(5)
    gate.release.set()
    for f in futures:
        with pytest.raises(fastbatch.ResultMismatchError, match="several outputs must each be a tensor"):
            f.result(5)


def test_tensors_among_generic_items_stay_generic(make_processor):
    processor = make_processor(lambda items: [type(x).__name__ for x in items], batch_generic_items=True,
                               max_batch_size=8, batch_timeout=0.05)
    assert processor.enqueue_predict("a").result(5) == "str"
    futures = [processor.enqueue_predict(torch.ones(2)), processor.enqueue_predict("b")]
    assert [f.result(5) for f in futures] == ["Tensor", "str"]


@pytest.mark.parametrize("shape", [(5, 4), (7,), (0, 4)])
def test_variable_length_refuses_tensors_at_the_call(make_processor, shape):
    # A padded batch is for numpy arrays: a tensor is refused, never joined with another.
    processor = make_processor(lambda b: b.lengths, variable_length=True, max_batch_size=8, batch_timeout=0.05)
    good = processor.enqueue_predict(np.ones((3, 4)))
    with pytest.raises(TypeError, match=r"a torch tensor \(shape .*\) cannot be a variable-length item.*\.numpy\(\)"):
        processor.enqueue_predict(torch.ones(*shape))
    with pytest.raises(TypeError, match="cannot be a variable-length item"):
        processor.enqueue(torch.ones(*shape))
    assert good.result(5) == 3
    assert processor.get_stats()["total_submitted"] == 1
