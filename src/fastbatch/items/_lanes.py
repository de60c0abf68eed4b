"""Lanes: what the items of one batch have in common, and which queue lane holds them.

A batch holds the items of one lane. An item's lane is its *signature*: its kind (numpy
array, variable-length array, torch tensor, several inputs, any other object), dtype,
sample shape, device, and the caller's ``key`` (a model name, a tenant). So items that cannot be
stacked into one batch never meet, and items of different keys never share a call.

An item of several inputs (a tuple or dict of arrays) has a signature per field:
``(FIELDS, "tuple", ((dtype, sample_shape), ...), key)`` or
``(FIELDS, "dict", ((name, dtype, sample_shape), ...), key)`` with the dict's keys in
insertion order, so the same keys in another order are another lane (each batch function
call sees the keys in the order its items have them). ``PADDED_FIELDS`` is the same for a
``variable_length`` processor, with ``shape[1:]`` of each field as its sample shape.

``LaneTable`` gives each signature a lane of the run's queue. Lanes are few (``max_lanes``)
and reused: a lane whose requests have all been taken can be given to a new signature.
The queue checks at every put that the lane still belongs to the signature the caller
looked up (``LaneChangedError`` otherwise), so a put racing a reassignment looks again
instead of landing among another signature's items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .._errors import TooManyLanesError

#: The kinds of lane, each batched its own way by the worker.
ARRAY, PADDED, TENSOR, GENERIC = "array", "padded", "tensor", "generic"
#: Several inputs per item (a tuple or dict of arrays): fixed-shape and variable-length.
FIELDS, PADDED_FIELDS = "fields", "padded_fields"


class Lane:
    """The signature of a lane's items; the queue holds it as the lane's tag."""

    __slots__ = ("container", "device", "dtype", "fields", "index", "key", "kind", "sample_shape", "signature")

    def __init__(self, signature: tuple[Any, ...], kind: str, dtype: Any = None,
                 sample_shape: tuple[int, ...] = (), device: Any = None, key: Any = None,
                 fields: tuple[tuple[Any, Any, tuple[int, ...]], ...] = (), container: str = "") -> None:
        """``fields`` and ``container`` (``"tuple"`` or ``"dict"``): the (name, dtype,
        sample shape) of each input of a several-input lane, a tuple's named by position."""
        self.signature = signature
        self.kind = kind
        self.dtype = dtype
        self.sample_shape = sample_shape
        self.device = device
        self.key = key
        self.fields = fields
        self.container = container
        self.index = -1  # the queue lane, once opened

    def describe(self) -> str:
        """What the items of this lane are, for messages."""
        if self.kind == GENERIC:
            what = "items that are not arrays"
        elif self.kind == PADDED:
            what = f"variable-length arrays of dtype {self.dtype} and shape (L, {_dims(self.sample_shape)})" \
                if self.sample_shape else f"variable-length arrays of dtype {self.dtype} and shape (L,)"
        elif self.kind == FIELDS or self.kind == PADDED_FIELDS:
            variable = self.kind == PADDED_FIELDS
            named = self.container == "dict"
            parts = ", ".join(_field_text(name, dtype, shape, named, variable)
                              for name, dtype, shape in self.fields)
            what = (f"{self.container}s of {len(self.fields)} {'variable-length ' * variable}arrays "
                    f"({parts})")
        elif self.kind == TENSOR:
            what = (f"torch tensors of dtype {self.dtype}, sample shape {tuple(self.sample_shape)}, "
                    f"device {self.device}")
        else:
            what = f"arrays of dtype {self.dtype} and sample shape {tuple(self.sample_shape)}"
        return what if self.key is None else f"{what}, key {self.key!r}"

    def __repr__(self) -> str:
        return f"<Lane {self.index}: {self.describe()}>"


def _dims(shape: tuple[int, ...]) -> str:
    return ", ".join(str(d) for d in shape)


def _field_text(name: Any, dtype: Any, shape: tuple[int, ...], named: bool, variable: bool) -> str:
    dims = (f"(L, {_dims(shape)})" if shape else "(L,)") if variable else str(tuple(shape))
    return f"{name!r}: {dtype} {dims}" if named else f"{dtype} {dims}"


class LaneTable:
    """The lanes of one run: signature → ``Lane``, opened on first use (thread-safe).

    Lookups of a known signature take no lock (one dict read); opening or replacing a
    lane happens under the table's lock, so the table and the queue's tags agree
    whenever the lock is free.
    """

    def __init__(self, queue: Any, max_lanes: int, make: Callable[[tuple[Any, ...]], Lane],
                 opened: Callable[[Lane, Any], None]) -> None:
        """``make(signature)`` builds a new signature's lane (and may refuse it by
        raising); ``opened(lane, queue)`` runs once its queue lane is known, still under
        the table's lock (the lane is empty and nobody else has it yet)."""
        self._queue = queue
        self._max_lanes = max_lanes
        self._make = make
        self._opened = opened
        self._lock = threading.Lock()
        self._by_signature: dict[tuple[Any, ...], Lane] = {}
        self._by_index: dict[int, Lane] = {}

    def get(self, signature: tuple[Any, ...]) -> Lane:
        """The lane of ``signature``, opened if new.

        Raises:
            TooManyLanesError: ``max_lanes`` lanes hold queued items already.
        """
        lane = self._by_signature.get(signature)
        if lane is None:
            lane = self._open(signature, None)
        return lane

    def renew(self, stale: Lane) -> Lane:
        """After ``LaneChangedError``: the lane the signature of ``stale`` has now."""
        return self._open(stale.signature, stale)

    def _open(self, signature: tuple[Any, ...], stale: Lane | None) -> Lane:
        with self._lock:
            lane = self._by_signature.get(signature)
            if lane is not None and lane is not stale:
                return lane
            lane = self._make(signature)
            index = self._queue.open_lane(lane)
            if index < 0:
                raise TooManyLanesError(
                    f"cannot batch {lane.describe()}: all max_lanes={self._max_lanes} lanes hold queued "
                    f"items (each distinct dtype, sample shape and key is a lane); raise max_lanes or "
                    f"wait until a lane empties")
            lane.index = index
            old = self._by_index.pop(index, None)
            if old is not None and self._by_signature.get(old.signature) is old:
                del self._by_signature[old.signature]
            self._by_index[index] = lane
            self._by_signature[signature] = lane
            self._opened(lane, self._queue)
            return lane

    def __len__(self) -> int:
        return len(self._by_signature)
