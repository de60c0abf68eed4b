"""The pure-Python twin's ``BatchAssembler`` and ``assemble_padded`` (see ``_core.pyi``).

numpy does the copying (one slice assignment per item, strides and byte order
included); what this module adds is the validation, in the compiled core's order and
with its messages, and the rule for reusing the buffer.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _messages as msg
from .._errors import BatchDtypeError, BatchShapeError, ResultMismatchError
from ..items._padding import pad_element

__all__ = ["BatchAssembler", "assemble_padded"]


# The buffer of a BatchAssembler may be reused only when nothing but the assembler refers
# to it. numpy collapses view chains, so every view of a batch (and of its views) holds a
# reference to the buffer itself. The count of a sole owner is measured once, through the
# same code path as the real check, so that it is right whatever the interpreter does.
class _Probe:
    __slots__ = ("_buf",)


def _buffer_refs(owner: Any) -> int:
    return sys.getrefcount(owner._buf)


_probe: Any = _Probe()
_probe._buf = np.empty(0, dtype=np.uint8)
_SOLE_OWNER_REFS = _buffer_refs(_probe)
del _probe


class BatchAssembler:
    """Copies the items of a batch into one reused, C-contiguous array.

    A 1-D item is one sample; an item with ``ndim >= 2`` is a mini-batch of
    ``shape[0]`` samples. Item 0 fixes the dtype and the sample shape. The returned batch
    is a view of a buffer the assembler owns; the buffer is reused only when nothing else
    refers to it, so a batch (or a view of it) handed out never changes afterwards.
    """

    __slots__ = ("_buf", "_offsets", "_rows", "_total")

    def __init__(self) -> None:
        self._buf: npt.NDArray[Any] | None = None
        # The last batch, for split(): start row of each item plus the total, and
        # whether each item was a 1-D row.
        self._offsets: list[int] = [0]
        self._rows: list[bool] = []
        self._total = 0

    def __repr__(self) -> str:
        nbytes = 0 if self._buf is None else self._buf.nbytes
        return f"<{type(self).__name__} buffer_nbytes={nbytes}>"

    def assemble(self, items: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """Return the batch of ``items``: shape ``(total_samples, *sample_shape)``.

        Args:
            items: a non-empty sequence of numpy arrays with ``ndim >= 1``.

        Raises:
            ValueError: ``items`` is empty, or an item has ``ndim == 0`` or zero samples.
            TypeError: an item is not a numpy array.
            BatchDtypeError: an item's dtype differs from item 0's, or is ``object``.
            BatchShapeError: an item's sample shape differs from item 0's.
        """
        if not isinstance(items, (list, tuple)):
            items = list(items)
        n_items = len(items)
        if n_items == 0:
            raise ValueError(msg.NO_ITEMS)
        # Validate everything before touching the buffer: a bad item leaves no
        # half-written batch behind.
        counts = [1] * n_items
        rows = [True] * n_items
        for i in range(n_items):
            item = items[i]
            if not isinstance(item, np.ndarray):
                raise TypeError(msg.NOT_AN_ARRAY.format(i=i, type=type(item).__name__))
            shape = item.shape
            if not shape:
                raise ValueError(msg.ZERO_DIMENSIONAL.format(i=i))
            if i == 0:
                dtype = item.dtype
                if dtype.hasobject:
                    raise BatchDtypeError(msg.OBJECT_DTYPE.format(i=i, dtype=dtype))
                sample_shape = shape[1:] if len(shape) > 1 else shape
            elif item.dtype != dtype:
                raise BatchDtypeError(
                    msg.DTYPE_MISMATCH.format(i=i, dtype=item.dtype, batch_dtype=dtype))
            if len(shape) == 1:
                if shape != sample_shape:
                    raise BatchShapeError(msg.ROW_SHAPE_MISMATCH.format(
                        i=i, shape=shape, batch_shape=sample_shape))
                continue
            if shape[1:] != sample_shape:
                raise BatchShapeError(msg.SAMPLE_SHAPE_MISMATCH.format(
                    i=i, sample_shape=shape[1:], shape=shape, batch_shape=sample_shape))
            if shape[0] == 0:
                raise ValueError(msg.ZERO_SAMPLES.format(i=i, shape=shape))
            counts[i] = shape[0]
            rows[i] = False

        total = sum(counts)
        nbytes = total * math.prod(sample_shape) * dtype.itemsize
        batch = self._reserve(nbytes)[:nbytes].view(dtype).reshape((total, *sample_shape))
        # One assignment per item: numpy handles strides, Fortran order and broadcasts,
        # and never casts, since every dtype equals the batch's.
        offsets = [0] * (n_items + 1)
        row = 0
        for i in range(n_items):
            if rows[i]:
                batch[row] = items[i]
                row += 1
            else:
                end = row + counts[i]
                batch[row:end] = items[i]
                row = end
            offsets[i + 1] = row
        self._offsets = offsets
        self._rows = rows
        self._total = total
        return batch

    def _reserve(self, nbytes: int) -> npt.NDArray[Any]:
        # The current buffer when it is big enough and nobody else refers to it, else a
        # new one, grown geometrically.
        if self._buf is not None:
            if _buffer_refs(self) <= _SOLE_OWNER_REFS and self._buf.nbytes >= nbytes:
                return self._buf
            old = self._buf.nbytes
            nbytes = max(nbytes, 2 * old) if nbytes > old else old
        self._buf = np.empty(nbytes, dtype=np.uint8)
        return self._buf

    def split(self, result: Any) -> list[Any]:
        """Split a batch function's result back into one piece per item of the last batch.

        A 1-D item gets ``result[offset]`` (one row); a mini-batch item of n samples gets
        ``result[offset:offset+n]``.

        Raises:
            ResultMismatchError: ``result`` has no length, its length differs, or it
                cannot be indexed (``TypeError`` or ``LookupError``, as the cause).
        """
        total = self._total
        try:
            n = len(result)
        except TypeError:
            raise ResultMismatchError(msg.RESULT_WITHOUT_LENGTH.format(
                type=type(result).__name__, total=total)) from None
        if n != total:
            raise ResultMismatchError(msg.RESULT_LENGTH.format(n=n, total=total))
        starts = self._offsets
        try:
            return [
                result[starts[i]] if is_row else result[starts[i] : starts[i + 1]]
                for i, is_row in enumerate(self._rows)
            ]
        except (TypeError, LookupError) as exc:
            # A set, a mapping, a __len__ that lies: the function's fault, not an item's.
            raise ResultMismatchError(msg.RESULT_NOT_INDEXABLE.format(
                type=type(result).__name__, n=n, total=total, error=type(exc).__name__)) from exc


def assemble_padded(
    items: Sequence[npt.NDArray[Any]], pad_value: Any = 0
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Stack samples of different lengths into one padded batch.

    Args:
        items: a non-empty sequence of numpy arrays of shape ``(L_i, *rest)``, one sample
            each, with the same dtype and the same ``rest``; ``L_i >= 1``.
        pad_value: what fills row i after its ``L_i`` real rows (see ``_padding``).

    Returns:
        ``(data, lengths, mask)``: ``data`` of shape ``(len(items), max L_i, *rest)``,
        ``lengths`` the int64 ``L_i``, ``mask`` bool ``(len(items), max L_i)``, True
        where ``data`` holds a real row.

    Raises:
        ValueError: ``items`` is empty, an item is 0-d or has length 0, or ``pad_value``
            cannot be represented in the dtype.
        TypeError: an item is not a numpy array.
        BatchDtypeError: an item's dtype differs from item 0's, or is ``object``.
        BatchShapeError: an item's shape differs from item 0's beyond the first axis.
    """
    items = tuple(items)
    n_items = len(items)
    if n_items == 0:
        raise ValueError(msg.NO_ITEMS)
    for i, item in enumerate(items):
        if not isinstance(item, np.ndarray):
            raise TypeError(msg.NOT_AN_ARRAY.format(i=i, type=type(item).__name__))
        shape = item.shape
        if not shape:
            raise ValueError(msg.ZERO_DIMENSIONAL.format(i=i))
        if i == 0:
            dtype, shape0 = item.dtype, shape
            if dtype.hasobject:
                raise BatchDtypeError(msg.OBJECT_DTYPE.format(i=i, dtype=dtype))
        elif item.dtype != dtype:
            raise BatchDtypeError(
                msg.DTYPE_MISMATCH.format(i=i, dtype=item.dtype, batch_dtype=dtype))
        if shape[1:] != shape0[1:]:
            raise BatchShapeError(
                msg.PADDED_SHAPE_MISMATCH.format(i=i, shape=shape, batch_shape=shape0))
        if shape[0] == 0:
            raise ValueError(msg.ZERO_LENGTH.format(i=i, shape=shape))
    pad = pad_element(pad_value, dtype)

    lengths = np.array([item.shape[0] for item in items], dtype=np.int64)
    longest = int(lengths.max())
    shape = (n_items, longest, *shape0[1:])
    # Structured elements are assigned field by field, which leaves the gaps between
    # aligned fields as they were: zeroed, they hold the bytes pad_element gives them.
    data = np.zeros(shape, dtype) if dtype.names is not None else np.empty(shape, dtype)
    data[...] = pad
    for i, item in enumerate(items):
        data[i, : item.shape[0]] = item
    mask = np.arange(longest) < lengths[:, np.newaxis]
    return data, lengths, mask
