"""Histogram: buckets by upper bound (le), sums and counts, and the two cores alike.

Every test runs against both cores (the ``core`` fixture), and one drives the compiled
core and the twin with the same random bounds and observations.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fb_fixtures import EXTENDED


def test_buckets_sums_and_counts(core):
    h = core.Histogram([0.001, 0.01, 0.2])
    h.observe_elapsed(np.array([0, 900_000, 995_000, 999_999], dtype=np.int64), 1_000_000, 1e-6)
    # elapsed x 1e-6: 1.0, 0.1, 0.005, 0.000001
    counts, n, total = h.snapshot()
    assert counts == (1, 2, 3) and n == 4
    assert total == pytest.approx(1.105001)
    h.observe(0.2)  # on a bound: that bound's bucket
    assert h.snapshot()[0] == (1, 2, 4)
    assert repr(h) == "<Histogram of 4 buckets>"


def test_a_batch_of_times_in_queue_order_counts_as_value_by_value(core):
    # A batch's enqueue times rise, so its elapsed times fall through the buckets in runs,
    # and an out-of-order item (a higher priority taken first) breaks a run.
    bounds = [1.0, 2.0, 5.0, 10.0]
    starts = np.array([0, 1, 2, 5, 5, 6, 8, 9, 9, 10, 3, 10, 12], dtype=np.int64)
    whole, one_by_one = core.Histogram(bounds), core.Histogram(bounds)
    whole.observe_elapsed(starts, 12, 1.0)
    for s in starts:
        one_by_one.observe(float(12 - s))
    assert whole.snapshot() == one_by_one.snapshot()
    assert whole.snapshot()[0] == (1, 3, 6, 11)  # elapsed 12 11 10 7 7 6 4 3 3 2 9 2 0


def test_bad_arguments(core):
    h = core.Histogram([1.0])
    with pytest.raises(TypeError):
        h.observe("1")
    with pytest.raises(ValueError, match="start_ns must be one-dimensional"):
        h.observe_elapsed(np.zeros((2, 2), dtype=np.int64), 1, 1.0)
    with pytest.raises(TypeError):
        h.observe_elapsed(np.zeros(2), 1, 1.0)  # float start times do not cast safely


def test_concurrent_observers_lose_nothing(core):
    h = core.Histogram([10.0, 100.0])
    starts = np.arange(50, dtype=np.int64)

    def work():
        for _ in range(200):
            h.observe_elapsed(starts, 50, 1.0)  # 50 values: 1..50

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts, n, total = h.snapshot()
    assert n == 4 * 200 * 50 and counts == (4 * 200 * 10, n)
    assert total == 4 * 200 * sum(range(1, 51))


bounds_st = st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=12,
                     unique=True).map(sorted)
ops_st = st.lists(st.one_of(
    st.tuples(st.just("observe"), st.floats(allow_nan=True, allow_infinity=True, width=64)),
    st.tuples(st.just("elapsed"), st.lists(st.integers(-2**40, 2**40), max_size=40),
              st.integers(-2**40, 2**40), st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)),
), max_size=30)


@settings(max_examples=2000 if EXTENDED else 100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(bounds=bounds_st, ops=ops_st)
def test_both_cores_count_alike(bounds, ops):
    from fastbatch.core import _core, _core_py

    hs = [_core.Histogram(bounds), _core_py.Histogram(bounds)]
    assert hs[0].bounds == hs[1].bounds
    for op in ops:
        for h in hs:
            if op[0] == "observe":
                h.observe(op[1])
            else:
                h.observe_elapsed(np.array(op[1], dtype=np.int64), op[2], op[3])
    (c0, n0, s0), (c1, n1, s1) = (h.snapshot() for h in hs)
    assert c0 == c1 and n0 == n1
    assert s0 == s1 or (math.isnan(s0) and math.isnan(s1))
