"""What a batch function may return for a batch of arrays, and how it is split per item.

- one array with a leading dimension of the batch's sample count: each item gets its rows;
- a tuple or a dict of such arrays (several outputs: ``(logits, embeddings)``,
  ``{"scores": ..., "labels": ...}``): each item gets a tuple / dict of its own rows;
- a sequence of per-sample results (a list): each item gets its own.

An array result handed to a future never changes afterwards. Rows are views of the
result, so an array whose memory the function (or the batch buffer) may still write to —
the function's own preallocated output (or a tuple / dict of them it keeps), a view of its
input, the input itself, memory owned by another object — is copied once first; a result
the function made for this call alone is split without a copy. (Objects in a list of
per-sample results are handed out as they are.)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Set as AbstractSet
from typing import Any

import numpy as np

from .._errors import ResultMismatchError

_ndarray = np.ndarray
# A base array referred to by its child view only, read inside _shared's loop: the child,
# the loop's variable and getrefcount's argument.
_BASE_REFS = 3


def kept(result: Any) -> bool:
    """Whether the batch function may still hold ``result`` (its own preallocated output,
    a container it refills): more references than a result made for this call alone.

    The one place that asks, for every kind of batch. Call it as ``kept(result)`` right
    after the call, with ``result`` a local of the caller and no other reference to it:
    that is the shape the count of a fresh result is calibrated on.
    """
    return sys.getrefcount(result) > _FRESH_REFS


def _shared(result: Any, held: bool) -> bool:
    """Whether ``result``'s memory is reachable other than through ``result`` itself:
    the function keeps it (``held``), or it is a view of memory something else holds."""
    if held:
        return True
    node = result.base
    while node is not None:
        if not isinstance(node, _ndarray):
            # Memory owned by something else (a bytearray, a tensor, an mmap): its
            # owner's count says nothing about who may write it; only bytes cannot change.
            return not isinstance(node, bytes)
        if sys.getrefcount(node) > _BASE_REFS:
            return True
        node = node.base
    return False


def _field_refs(fields: Any) -> list[int]:
    refs = []
    for field in fields:  # each: held by the container, this variable, getrefcount's argument
        refs.append(sys.getrefcount(field))
    return refs


def _private_fields(fields: list[Any], held: bool) -> list[Any]:
    if held:
        return [np.array(f) for f in fields]
    refs = _field_refs(fields)
    return [np.array(f) if f.__class__ is not _ndarray or _shared(f, r > _FRESH_FIELD_REFS) else f
            for f, r in zip(fields, refs)]


def split_result(assembler: Any, result: Any, samples: int, held: bool) -> Any:
    """One result per item of the batch ``assembler`` assembled last (or its splitter's).

    ``held``: what :func:`kept` said of the result right after the call.

    Raises:
        ResultMismatchError: a result that is none of the accepted kinds, or whose
            leading dimension is not the batch's sample count.
    """
    if isinstance(result, _ndarray):  # subclasses too (a memmap the function rewrites)
        if result.__class__ is not _ndarray or _shared(result, held):
            result = np.array(result)  # a plain copy
        rows: list[Any] = assembler.split(result)
        return rows
    outputs = several_outputs(result, samples, _ndarray, "an array")
    if outputs is None:
        rows = assembler.split(result)
        return rows
    # A container the function keeps (and refills): then every field is copied.
    fields = _private_fields([result[k] for k in outputs], held)
    split_fields = getattr(assembler, "split_fields", None)  # per output, when outputs differ
    columns = split_fields(outputs, fields) if split_fields is not None else [assembler.split(f) for f in fields]
    return join_outputs(result, outputs, columns)


def several_outputs(result: Any, samples: int, kind: Any, what: str) -> list[Any] | None:
    """The keys (indices of a tuple, keys of a dict) of several outputs, each a ``kind``
    with a leading dimension of ``samples``; None when ``result`` is no such container.

    Raises:
        ResultMismatchError: a tuple or dict that holds a ``kind`` but is not valid
            outputs (it would otherwise be split as one result per sample).
    """
    if isinstance(result, tuple):
        keys: list[Any] = list(range(len(result)))
    elif isinstance(result, Mapping):
        keys = list(result)
    else:
        return None
    values = [result[k] for k in keys]
    if not values:
        return None
    if all(isinstance(v, kind) and v.ndim >= 1 and v.shape[0] == samples for v in values):
        return keys
    if any(isinstance(v, kind) for v in values):
        raise ResultMismatchError(_several_outputs_error(result, samples, what))
    return None


def join_outputs(result: Any, keys: list[Any], columns: list[list[Any]]) -> list[Any]:
    """Per item, a tuple (or dict, as ``result`` was) of its part of every output."""
    if isinstance(result, tuple):
        return list(zip(*columns))
    return [dict(zip(keys, row)) for row in zip(*columns)]


def _probe_refs(result: Any) -> int:
    return sys.getrefcount(result)  # as kept() reads it


def _calibrate() -> tuple[int, int]:
    """The reference counts of results made for one call alone, seen where they are tested.

    Counted on this interpreter, through the same calls as at run time: how many
    references passing an argument holds differs across Python versions.
    """
    result = np.empty(1)
    fresh = _probe_refs(result)  # the worker's call shape: a local, passed on
    several = (np.empty(1),)
    fresh_field = _field_refs(list(several))[0]  # held by the tuple and the list, as in split_result
    return fresh, fresh_field


_FRESH_REFS, _FRESH_FIELD_REFS = _calibrate()


def _several_outputs_error(result: Any, samples: int, what: str) -> str:
    items = result.items() if isinstance(result, Mapping) else enumerate(result)
    described = ", ".join(f"{k!r}: {_describe(v)}" for k, v in items)
    kind = "dict" if isinstance(result, Mapping) else "tuple"
    return (f"the batch function returned a {kind} of {len(result)} outputs ({described}) for a "
            f"batch of {samples} samples: several outputs must each be {what} whose leading "
            f"dimension is {samples} (return a list for one result per sample)")


def _describe(value: Any) -> str:
    if isinstance(value, _ndarray):
        return f"array of shape {value.shape}"
    if hasattr(value, "shape"):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    return type(value).__name__


def check_result(result: Any, samples: int) -> None:
    """The checks of :func:`split_result`, for a batch whose items want no result back."""
    if result.__class__ is _ndarray and result.ndim:  # the usual result: no container to look into
        if len(result) != samples:
            _check_length(result, samples)
    elif several_outputs(result, samples, _ndarray, "an array") is None:
        _check_length(result, samples)


def check_sequence(result: Any, samples: int) -> None:
    """A list batch's result: a sequence of one result per item, in the items' order."""
    if isinstance(result, (str, bytes, bytearray, Mapping, AbstractSet)):
        raise ResultMismatchError(f"the batch function returned {type(result).__name__}, which cannot be "
                                  f"split by item (expected a sequence of {samples} results)")
    _check_length(result, samples)


def check_rows(result: Any, samples: int) -> None:
    """The result must have one entry per sample (``BatchAssembler.split``'s rule)."""
    _check_length(result, samples)


def _check_length(result: Any, samples: int) -> None:
    """The result must have one entry per sample (``BatchAssembler.split``'s rule)."""
    try:
        n = len(result)
    except TypeError:
        raise ResultMismatchError(f"the batch function returned {type(result).__name__}, "
                                  f"expected a sequence of {samples} results") from None
    if n != samples:
        raise ResultMismatchError(f"the batch function returned {n} results for a batch of {samples} samples")


def fresh_field_refs() -> int:
    """What :func:`field_refs` reads for a fresh field of a tuple or dict of outputs."""
    return _FRESH_FIELD_REFS


def field_refs(fields: Any) -> list[int]:
    """The reference count of each field, read as for :func:`fresh_field_refs`."""
    return _field_refs(fields)
