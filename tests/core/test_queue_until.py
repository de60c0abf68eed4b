"""RequestQueue.take_batch(until_ns=...): fill until a given time even when the first
request's linger is over (the ADAPTIVE policy's wait once the model is free)."""

from __future__ import annotations

import threading
import time

import pytest


def test_until_keeps_filling_after_the_first_requests_linger_is_over(core):
    q = core.RequestQueue()
    q.put("old")  # waited long already: its linger of 0 is over
    got = []
    until = time.monotonic_ns() + 30 * 1_000_000_000
    taker = threading.Thread(target=lambda: got.append(q.take_batch(3, linger=0.0, timeout=5, until_ns=until)))
    taker.start()
    try:
        q.put("a")
        q.put("b")  # the batch is full: it goes without waiting for until
    finally:
        taker.join(10)
    assert not taker.is_alive()
    assert got[0][0] == ["old", "a", "b"]


def test_an_until_in_the_past_changes_nothing(core):
    q = core.RequestQueue()
    q.put("x")
    items, _, _ = q.take_batch(4, linger=0.0, timeout=0, until_ns=1)
    assert items == ["x"]


def test_until_ends_the_fill(core):
    q = core.RequestQueue()
    q.put("x")
    start = time.monotonic_ns()
    items, _, _ = q.take_batch(4, linger=0.0, timeout=0, until_ns=start + 20_000_000)
    waited = time.monotonic_ns() - start
    assert items == ["x"] and waited >= 19_000_000


def test_a_later_linger_wins_over_an_earlier_until(core):
    q = core.RequestQueue()
    q.put("x")
    start = time.monotonic_ns()
    items, _, _ = q.take_batch(4, linger=0.02, timeout=0, until_ns=start + 1)
    assert items == ["x"] and time.monotonic_ns() - start >= 19_000_000


def test_a_negative_until_is_refused(core):
    q = core.RequestQueue()
    q.put("x")
    with pytest.raises(ValueError, match="until_ns"):
        q.take_batch(4, timeout=0, until_ns=-5)
