"""StatsWindow: ring semantics, percentiles against numpy, summaries, threads.

Every test runs against both cores (the ``core`` fixture); the contract is
``src/fastbatch/core/_core.pyi``.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

QS = [0, 100, 0.5, 1, 5, 10, 25, 33.3, 50, 66.6, 75, 90, 95, 99, 99.9, *np.linspace(0, 100, 41)]


def summary(core, w, qs=()):
    """``(count, mean, min, max, percentiles)`` of one window, as get_stats() reads it."""
    (result,) = core.StatsWindow.summaries([w], [qs])
    return result


def percentile(core, w, q):
    """One percentile alone: the compiled core selects it instead of sorting."""
    return summary(core, w, (q,))[4][0]


def test_construction(core):
    w = core.StatsWindow(7)
    assert len(w) == 0
    assert w.values().shape == (0,) and w.values().dtype == np.float64
    w.record_many(np.arange(8.0))
    assert len(w) == 7, "the window holds capacity values"
    assert w.values().tolist() == np.arange(1.0, 8.0).tolist()


@pytest.mark.parametrize(
    ("capacity", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), ("4", TypeError)]
)
def test_invalid_capacity(core, capacity, error):
    with pytest.raises(error):
        core.StatsWindow(capacity)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 1000])
def test_percentiles_equal_numpy(core, n):
    rng = np.random.default_rng(n)
    data = rng.standard_normal(n) * 10 + rng.exponential(5, n)
    w = core.StatsWindow(1000)
    w.record_many(data)
    got = [percentile(core, w, q) for q in QS]
    np.testing.assert_allclose(got, np.percentile(data, QS), rtol=1e-12, atol=0)
    count, mean, lo, hi, pcts = summary(core, w, QS)
    assert count == n
    np.testing.assert_allclose(pcts, np.percentile(data, QS), rtol=1e-12, atol=0)
    np.testing.assert_allclose(mean, data.mean(), rtol=1e-12)
    assert (lo, hi) == (data.min(), data.max())


def test_percentiles_with_ties_and_integers(core):
    data = np.array([5, 1, 1, 3, 3, 3, 9, 0, 0, 7], dtype=float)
    w = core.StatsWindow(len(data))
    for value in data:
        w.record(value)
    for q in QS:
        assert percentile(core, w, q) == pytest.approx(np.percentile(data, q), rel=1e-12, abs=0)
    assert percentile(core, w, 0) == 0.0 and percentile(core, w, 100) == 9.0


def test_record_accepts_python_and_numpy_numbers(core):
    w = core.StatsWindow(4)
    for value in (1, 2.5, np.float32(3.5), np.int64(4)):
        w.record(value)
    assert w.values().tolist() == [1.0, 2.5, 3.5, 4.0]


def test_ring_keeps_only_the_last_capacity_values_oldest_first(core):
    w = core.StatsWindow(10)
    data = np.arange(25, dtype=float) ** 1.5
    for value in data:
        w.record(value)
    assert len(w) == 10
    np.testing.assert_array_equal(w.values(), data[-10:])
    assert percentile(core, w, 0) == data[15]
    count, mean, lo, hi, _ = summary(core, w)
    assert (count, lo, hi) == (10, data[15], data[24])
    np.testing.assert_allclose(mean, data[-10:].mean(), rtol=1e-12)


def test_record_many_in_chunks_matches_record_one_by_one(core):
    rng = np.random.default_rng(11)
    capacity = 37
    chunked, single = core.StatsWindow(capacity), core.StatsWindow(capacity)
    recorded: list[float] = []
    for size in [0, 1, 5, 36, 37, 38, 3, 100, 2, 17, 74]:
        chunk = rng.random(size)
        chunked.record_many(chunk)
        for value in chunk:
            single.record(value)
        recorded.extend(chunk.tolist())
        expected = np.array(recorded[-capacity:])
        np.testing.assert_array_equal(chunked.values(), expected)
        np.testing.assert_array_equal(single.values(), expected)
        assert len(chunked) == len(single) == min(len(recorded), capacity)


def test_record_many_accepts_sequences(core):
    w = core.StatsWindow(5)
    w.record_many([1.0, 2.0])
    w.record_many(np.array([3, 4], dtype=np.int32))
    w.record_many(np.arange(10.0)[::3])  # strided
    assert w.values().tolist() == [4.0, 0.0, 3.0, 6.0, 9.0]
    assert len(w) == 5


def test_values_is_a_copy(core):
    w = core.StatsWindow(3)
    w.record_many([1.0, 2.0, 3.0])
    values = w.values()
    values[:] = 0
    assert w.values().tolist() == [1.0, 2.0, 3.0]


def test_empty_window(core):
    w = core.StatsWindow(5)
    assert math.isnan(percentile(core, w, 50))
    count, mean, lo, hi, pcts = summary(core, w, [0, 50, 100])
    assert count == 0
    assert all(math.isnan(x) for x in (mean, lo, hi, *pcts)) and len(pcts) == 3
    assert summary(core, w)[4] == ()


@pytest.mark.parametrize("q", [-0.001, 100.001, -50, 1e9, math.nan])
def test_invalid_q(core, q):
    w = core.StatsWindow(5)
    with pytest.raises(ValueError):
        summary(core, w, [q])
    with pytest.raises(ValueError):
        summary(core, w, [50, q])
    w.record_many([1.0, 2.0])
    with pytest.raises(ValueError):
        summary(core, w, [q])
    with pytest.raises(ValueError):
        summary(core, w, [q, 50])


def test_summary_returns_one_percentile_per_q_in_order(core):
    rng = np.random.default_rng(12)
    data = rng.random(50)
    w = core.StatsWindow(50)
    w.record_many(data)
    qs = [99, 1, 50, 50]
    pcts = summary(core, w, qs)[4]
    assert isinstance(pcts, tuple) and len(pcts) == 4
    np.testing.assert_allclose(pcts, np.percentile(data, qs), rtol=1e-12, atol=0)


def _numpy_summary(data, qs):
    data = np.asarray(data, dtype=np.float64)
    if data.size == 0:
        return 0, math.nan, math.nan, math.nan, tuple(math.nan for _ in qs)
    with np.errstate(invalid="ignore"):
        return (data.size, data.mean(), data.min(), data.max(),
                tuple(np.percentile(data, qs).tolist()) if qs else ())


@pytest.mark.parametrize("size", [0, 1, 7, 100, 5000, 10_000])
def test_summaries_equal_each_summary_and_numpy(core, size):
    # 10,000 and 5,000 values take the compiled core's path without the GIL; the five
    # windows together from 1,000 values on, each alone only from 5,000.
    rng = np.random.default_rng(size)
    qss = [(50, 95, 99), (), (95,), (0, 100, 33.3), ()]
    windows, datas = [], []
    for k, qs in enumerate(qss):
        w = core.StatsWindow(max(1, size))
        data = rng.lognormal(k, 1.0, size if k != 1 else size // 2)
        if size and k == 3:
            data = np.sort(data)[::-1].copy()  # runs of descending values, as latencies come
        w.record_many(data)
        windows.append(w)
        datas.append(data)
    got = core.StatsWindow.summaries(windows, qss)
    assert isinstance(got, list) and len(got) == len(windows)
    for w, qs, data, together in zip(windows, qss, datas, got):
        alone = summary(core, w, qs)
        np.testing.assert_array_equal(together[:4], alone[:4])  # NaN equals NaN here
        np.testing.assert_array_equal(together[4], alone[4])
        expected = _numpy_summary(data, qs)
        assert together[0] == expected[0] and len(together[4]) == len(qs)
        np.testing.assert_allclose(together[1:4], expected[1:4], rtol=1e-12)
        np.testing.assert_allclose(together[4], expected[4], rtol=1e-12, atol=0)
    assert core.StatsWindow.summaries([], []) == []


@pytest.mark.parametrize("size", [9, 8192])
def test_summaries_with_nan_and_infinities_follow_numpy(core, size):
    rng = np.random.default_rng(3)
    base = rng.random(size)
    cases = {
        "nan": np.where(np.arange(size) == size // 3, math.nan, base),
        "inf": np.where(np.arange(size) == size // 2, math.inf, base),
        "both infinities": np.where(np.arange(size) % 5 == 0, math.inf, -math.inf),
    }
    qs = (0, 50, 99, 100)
    for name, data in cases.items():
        w = core.StatsWindow(size)
        w.record_many(data)
        # No np.errstate here: reading statistics must not warn (filterwarnings = error).
        (count, mean, lo, hi, pcts), = core.StatsWindow.summaries([w], [qs])
        p50 = percentile(core, w, 50)
        expected = _numpy_summary(data, qs)
        assert count == size, name
        np.testing.assert_array_equal(
            [mean, lo, hi, *pcts], [*expected[1:4], *expected[4]], err_msg=name)
        np.testing.assert_array_equal(p50, expected[4][1], err_msg=name)


def test_summaries_rejects_bad_arguments(core):
    a, b = core.StatsWindow(3), core.StatsWindow(3)
    a.record_many([1.0, 2.0])
    with pytest.raises(ValueError):
        core.StatsWindow.summaries([a, b], [(50,)])
    with pytest.raises(TypeError):
        core.StatsWindow.summaries([a, "b"], [(), ()])
    with pytest.raises(ValueError):
        core.StatsWindow.summaries([a, b], [(50,), (101,)])
    with pytest.raises(TypeError):
        core.StatsWindow.summaries([a], [("50",)])


def test_clear(core):
    w = core.StatsWindow(4)
    w.record_many(np.arange(9.0))
    w.clear()
    assert (len(w), w.values().size) == (0, 0)
    assert summary(core, w)[0] == 0 and math.isnan(summary(core, w)[1])
    w.record_many([5.0, 6.0])
    assert w.values().tolist() == [5.0, 6.0] and len(w) == 2
    assert summary(core, w, [50])[:4] == (2, 5.5, 5.0, 6.0)


def test_record_elapsed_ms(core):
    end = 5_000_000_000_000
    starts = np.array([end - 1_000_000, end - 2_500_000, end, end - 1], dtype=np.int64)
    w = core.StatsWindow(10)
    w.record_elapsed_ms(starts, end)
    assert w.values().tolist() == [1.0, 2.5, 0.0, 1e-6]
    assert len(w) == 4


def test_record_elapsed_ms_is_exact_for_large_timestamps(core):
    # After ~104 days of uptime monotonic nanoseconds exceed 2**53, where doubles can no
    # longer hold every integer: the difference must be taken in integers.
    end = 2**60 + 1_234_567
    w = core.StatsWindow(10)
    w.record_elapsed_ms(np.array([end - 1_000_001, end - 3], dtype=np.int64), end)
    assert w.values().tolist() == [1_000_001 / 1e6, 3 / 1e6]


def test_record_elapsed_ms_with_core_timestamps(core):
    w = core.StatsWindow(10)
    start = core.monotonic_ns()
    end = core.monotonic_ns()
    w.record_elapsed_ms(np.array([start, start], dtype=np.int64), end)
    assert w.values().tolist() == [(end - start) / 1e6] * 2


def test_concurrent_record_and_summary(core, threads):
    # Four writers record into a small window (it wraps all the time) and a window big
    # enough for everything (it shows every value, so nothing lost, doubled or
    # reordered), while a reader summarises both. Writer k's j-th value is k * STRIDE + j.
    n_writers, singles, blocks, block = 4, 4900, 100, 10
    per_writer = singles + blocks * block
    STRIDE = 10_000
    capacities = (500, n_writers * per_writer)
    small, full = (core.StatsWindow(c) for c in capacities)
    start = threading.Barrier(n_writers + 1)
    stop = threading.Event()

    def write(k: int) -> None:
        start.wait()
        j = k * STRIDE
        for i in range(singles + blocks):
            if i % 50 == 0:
                chunk = np.arange(j, j + block, dtype=np.float64)
                small.record_many(chunk)
                full.record_many(chunk)
                j += block
            else:
                small.record(j)
                full.record(float(j))
                j += 1

    def valid(v: float) -> bool:
        return v == int(v) and int(v) % STRIDE < per_writer and int(v) // STRIDE < n_writers

    def read() -> int:
        start.wait()
        rounds = 0
        while not stop.is_set() or rounds == 0:
            got = core.StatsWindow.summaries([small, full], [(50, 99), (50, 99)])
            for capacity, (count, mean, lo, hi, (p50, p99)) in zip(capacities, got):
                assert 0 <= count <= capacity
                if count:
                    assert lo <= p50 <= p99 <= hi and lo <= mean <= hi
                    assert valid(lo) and valid(hi)
            values = small.values()
            assert values.size <= 500
            assert all(valid(v) for v in values.tolist())
            rounds += 1
        return rounds

    reader = threads.start(read)
    writers = [threads.start(write, k) for k in range(n_writers)]
    for writer in writers:
        writer.outcome(30.0)
    stop.set()
    assert reader.outcome(30.0) > 0

    everything = full.values().astype(np.int64)
    assert len(full) == everything.size == n_writers * per_writer
    for k in range(n_writers):
        mine = everything[everything // STRIDE == k]
        assert mine.tolist() == list(range(k * STRIDE, k * STRIDE + per_writer)), (
            f"writer {k}: values lost, doubled or out of order")
    # A record_many() call is one critical section: its values stay together.
    starts = np.flatnonzero(np.isin(everything % STRIDE, _block_starts(singles, blocks, block)))
    assert starts.size == n_writers * blocks
    for at in starts:
        np.testing.assert_array_equal(np.diff(everything[at:at + block]), 1)
    assert len(small) == 500
    kept = small.values().astype(np.int64)
    for k in range(n_writers):
        mine = kept[kept // STRIDE == k]
        assert np.all(np.diff(mine) > 0), f"writer {k}: out of order in the small window"


def _block_starts(singles: int, blocks: int, block: int) -> list[int]:
    """The sequence numbers at which write() recorded a block (``i % 50 == 0``)."""
    out, j = [], 0
    for i in range(singles + blocks):
        if i % 50 == 0:
            out.append(j)
            j += block
        else:
            j += 1
    return out
