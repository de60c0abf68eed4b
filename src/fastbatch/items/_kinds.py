"""The kinds of batch, one entry each: how a batch is assembled, how the function's result
is checked and split per item, and what the batch counts (samples, padded positions).

The worker runs every kind through one skeleton (take, assemble, call with retries and
failure isolation, split, resolve, record) and asks the entry of the batch's lane for the
kind-specific steps. Objects processed one call each (``GENERIC`` lanes without
``batch_generic_items``) have no entry: their calls run on a thread pool, item by item.

``assemble`` works on the worker's own buffers (``Buffers``): each worker has its own, so
that batches formed side by side never share one.
"""

from __future__ import annotations

import abc
from typing import Any

from . import _padded, _tensors
from ..core import _backend
from ..runtime._batch import Batch
from ._lanes import ARRAY, FIELDS, PADDED, PADDED_FIELDS, TENSOR
from ._results import check_result, check_sequence, split_result


class Buffers:
    """One worker's assembly buffers: one for single arrays, one per input of several."""

    __slots__ = ("array", "fields")

    def __init__(self) -> None:
        self.array = _backend.BatchAssembler()
        self.fields: list[Any] = []  # made on first use, one per field position

    def for_fields(self, n: int) -> list[Any]:
        while len(self.fields) < n:
            self.fields.append(_backend.BatchAssembler())
        return self.fields[:n]


class Kind(abc.ABC):
    """How a batch of one kind is made and taken apart. Each step takes the part of the
    batch being run (the whole batch, or a half during failure isolation)."""

    @abc.abstractmethod
    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        """``(the function's argument, its sample count, what splits its result)``; for
        the whole batch, also set the batch's counts."""

    def split(self, splitter: Any, part: list[Any], result: Any, samples: int, held: bool) -> list[Any]:
        """One result per item of ``part``."""
        rows: list[Any] = split_result(splitter, result, samples, held)
        return rows

    def check(self, splitter: Any, part: list[Any], result: Any, samples: int, config: Any) -> None:
        """The checks of ``split``, for a part whose items want no result back."""
        check_result(result, samples)


class _Arrays(Kind):
    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        batch = buffers.array.assemble(part)
        n = len(batch)
        if whole:
            job.samples = n
        return batch, n, buffers.array


class _Fields(Kind):
    """Several inputs: each field assembled as a single array would be."""

    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        lane = job.lane
        assemblers = buffers.for_fields(len(lane.fields))
        batches = [a.assemble([item[name] for item in part]) for a, (name, _, _) in zip(assemblers, lane.fields)]
        n = len(batches[0])
        if whole:
            job.samples = n
        # Every field of an item has the same sample count: the first field's rows split.
        return _container(job, batches), n, assemblers[0]


class _Padded(Kind):
    """Variable-length samples: a ``PaddedBatch``; declared outputs trimmed per item."""

    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        batch = _padded.assemble(part, config.pad_value)
        if whole:
            _count_padding(job, batch)
        return batch, len(batch), _padded.PaddedSplit(batch.lengths, config.trim_results)

    def check(self, splitter: Any, part: list[Any], result: Any, samples: int, config: Any) -> None:
        if config.trim_results is not False:
            # Declared outputs are checked whoever wants the result: the same batch fails
            # for enqueue() as for enqueue_predict().
            split_result(splitter, result, samples, False)
        else:
            check_result(result, samples)


class _PaddedFields(_Padded):
    """Several variable-length inputs: a ``PaddedBatch`` per field, each padded on its own
    first axis; padding statistics and ``trim_results`` follow the first field."""

    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        padded = [_padded.assemble([item[name] for item in part], config.pad_value)
                  for name, _, _ in job.lane.fields]
        first = padded[0]
        if whole:
            _count_padding(job, first)
        return _container(job, padded), len(first), _padded.PaddedSplit(first.lengths, config.trim_results)


class _Tensors(Kind):
    """torch tensors: one tensor on the items' device, split into views per item."""

    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        batch = _tensors.assemble(part)
        n = len(batch)
        if whole:
            job.samples = n
        return batch, n, None

    def split(self, splitter: Any, part: list[Any], result: Any, samples: int, held: bool) -> list[Any]:
        return _tensors.split(result, part, samples, held)

    def check(self, splitter: Any, part: list[Any], result: Any, samples: int, config: Any) -> None:
        _tensors.split(result, part, samples, False)  # the same checks; the views are dropped


class _List(Kind):
    """Other objects with ``batch_generic_items``: the function gets a list of them."""

    def assemble(self, buffers: Buffers, job: Batch, part: list[Any], whole: bool, config: Any
                 ) -> tuple[Any, int, Any]:
        return part, len(part), None

    def split(self, splitter: Any, part: list[Any], result: Any, samples: int, held: bool) -> list[Any]:
        check_sequence(result, samples)
        return list(result)

    def check(self, splitter: Any, part: list[Any], result: Any, samples: int, config: Any) -> None:
        self.split(splitter, part, result, samples, False)  # iterated as for callers: it may fail


def _count_padding(job: Batch, batch: _padded.PaddedBatch) -> None:
    job.real_positions = int(batch.lengths.sum())
    job.pad_positions = batch.mask.size - job.real_positions


def _container(job: Batch, batches: list[Any]) -> Any:
    """The fields' batches as the items were: a tuple, or a dict in the items' key order."""
    lane = job.lane
    if lane.container == "dict":
        return {name: b for (name, _, _), b in zip(lane.fields, batches)}
    return tuple(batches)


KINDS: dict[str, Kind] = {
    ARRAY: _Arrays(),
    FIELDS: _Fields(),
    PADDED: _Padded(),
    PADDED_FIELDS: _PaddedFields(),
    TENSOR: _Tensors(),
}
_LIST = _List()


def kind_of(job: Batch, batch_generic_items: bool) -> Kind | None:
    """The entry for ``job``'s lane; None for objects processed one call each."""
    entry = KINDS.get(job.lane.kind)
    if entry is not None:
        return entry
    return _LIST if batch_generic_items else None  # GENERIC
