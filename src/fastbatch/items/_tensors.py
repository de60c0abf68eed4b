"""torch tensors as items: what a valid one is, how a batch of them is formed and split.

torch is never imported here: a process that enqueues a tensor has imported it already,
so it is looked up in ``sys.modules``. A batch is one tensor on the items' device (one
``torch.cat``, which copies without the GIL); the function's result is split per item
into views of it, rows for a 1-D item, ``n`` rows for an ``(n, ...)`` mini-batch.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from . import _results
from .._errors import BatchDtypeError, BatchShapeError, ResultMismatchError


def tensor_type() -> Any:
    """``torch.Tensor`` when torch is imported, else None."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def is_tensor(item: Any) -> bool:
    tensor = tensor_type()
    return tensor is not None and isinstance(item, tensor)


def describe(item: Any) -> tuple[int, int, tuple[Any, tuple[int, ...], Any]]:
    """``(samples, nbytes, (dtype, sample shape, device))`` of a tensor item.

    Raises:
        ValueError: a 0-d tensor, or a mini-batch of 0 samples.
    """
    shape = tuple(item.shape)
    if not shape:
        raise ValueError(f"a 0-d tensor ({item!r}) cannot be batched: pass a 1-D row "
                         "(t.reshape(1)) or an (n, ...) mini-batch")
    if len(shape) == 1:
        samples, sample_shape = 1, shape
    else:
        samples, sample_shape = shape[0], shape[1:]
        if samples == 0:
            raise ValueError(f"a mini-batch of 0 samples (shape {shape}) cannot be batched")
    return samples, item.numel() * item.element_size(), (item.dtype, sample_shape, item.device)


def check(signature: tuple[Any, tuple[int, ...], Any], item: Any,
          got: tuple[Any, tuple[int, ...], Any]) -> None:
    """``item`` (of signature ``got``) against the batch's ``signature``, naming both."""
    dtype, sample_shape, device = signature
    if got[2] != device:
        raise ValueError(f"tensor is on device {got[2]} but the batch's tensors are on {device}")
    if got[0] != dtype:
        raise BatchDtypeError(f"tensor has dtype {got[0]} but the batch has dtype {dtype}")
    if got[1] != sample_shape:
        what = "shape" if item.ndim == 1 else "sample shape"
        raise BatchShapeError(f"tensor has {what} {got[1]} (tensor shape {tuple(item.shape)}) but the "
                              f"batch has {what} {sample_shape}")


def assemble(items: list[Any]) -> Any:
    """One tensor of every item's samples, in order (a new tensor: nothing is reused)."""
    torch = sys.modules["torch"]
    if all(t.ndim == 1 for t in items):
        return torch.stack(items)
    return torch.cat([t.unsqueeze(0) if t.ndim == 1 else t for t in items])


def split(result: Any, items: list[Any], samples: int, held: bool) -> list[Any]:
    """One result per item: a tensor (or tuple / dict of tensors) split by row, or a list.

    ``held``: what ``_results.kept`` said of the result right after the call.
    """
    tensor = tensor_type()
    if isinstance(result, tensor):
        return _rows(_private(result, held), items, samples)
    outputs = _results.several_outputs(result, samples, tensor, "a tensor")
    if outputs is not None:
        # A container the function keeps and refills: every field is cloned.
        fields = _private_fields([result[k] for k in outputs], held)
        return _results.join_outputs(result, outputs, [_rows(f, items, samples) for f in fields])
    if isinstance(result, (str, bytes, Mapping)) or not hasattr(result, "__len__"):
        raise ResultMismatchError(f"the batch function returned {type(result).__name__} for a batch of "
                                  f"{samples} samples: expected a tensor (or a tuple / dict of tensors) "
                                  f"with a leading dimension of {samples}, or a list of {samples} results")
    if len(result) != samples:
        raise ResultMismatchError(f"the batch function returned {len(result)} results for a batch of "
                                  f"{samples} samples")
    return _rows(result, items, samples)


def _private_fields(fields: list[Any], held: bool) -> list[Any]:
    refs = _results.field_refs(fields)
    fresh = _results.fresh_field_refs()
    return [_private(f, held or r > fresh) for f, r in zip(fields, refs)]


def _private(result: Any, shared: bool) -> Any:
    """The result, or a clone when the function may write its memory again: it keeps the
    tensor (``shared``: more references than a fresh result has), or the tensor is a view
    of one that something else holds. The batch tensor is never reused by fastbatch, so a
    result that is the input (or a view of it) is safe as it is."""
    if result.ndim == 0:
        raise ResultMismatchError("the batch function returned a 0-d tensor: expected one with a "
                                  "leading dimension of the batch's sample count")
    if shared:
        return result.clone()
    node = result._base
    while node is not None:
        if sys.getrefcount(node) > 3:  # the view, this variable, getrefcount's argument
            return result.clone()
        node = node._base
    return result


def _rows(result: Any, items: list[Any], samples: int) -> list[Any]:
    if len(result) != samples:
        raise ResultMismatchError(f"the batch function returned {len(result)} results for a batch of "
                                  f"{samples} samples")
    if all(t.ndim == 1 for t in items):  # every item a row
        return list(result.unbind(0)) if hasattr(result, "unbind") else [result[i] for i in range(samples)]
    out, at = [], 0
    for item in items:
        if item.ndim == 1:
            out.append(result[at])
            at += 1
        else:
            n = item.shape[0]
            out.append(result[at:at + n])
            at += n
    return out
