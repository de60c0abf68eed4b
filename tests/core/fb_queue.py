"""Helpers shared by the RequestQueue test modules (``test_queue_*.py``)."""

from __future__ import annotations

SECOND = 1_000_000_000  # ns


class Payload:
    """An item that can be tracked with a weak reference."""

    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


def take_all(q, max_samples: int = 1_000_000) -> list:
    """Items of every batch that can be taken without waiting, in order."""
    out = []
    while True:
        batch = q.take_batch(max_samples, timeout=0)
        if batch is None:
            return out
        out.extend(batch[0])
