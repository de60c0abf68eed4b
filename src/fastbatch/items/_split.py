"""Items larger than a batch: split into parts of at most ``max_batch_size`` samples.

With ``split_oversized`` an ``(n, ...)`` item of more samples than a batch may hold is
queued as consecutive parts, each with a future of its own; the caller's future is
resolved once the last part is, with the parts' results concatenated (``np.concatenate``,
``torch.cat``, per field for a tuple or dict, one list for per-sample results). The first
part to fail fails the item with its exception; cancelling the item cancels the parts that
have not started. Statistics count the parts: an item split in three counts as three.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _tensors
from .._errors import ResultMismatchError
from ._lanes import ARRAY, FIELDS, TENSOR

#: The kinds of lane whose items may hold more than one sample.
SPLITTABLE = frozenset((ARRAY, FIELDS, TENSOR))
logger = logging.getLogger("fastbatch")


def parts(item: Any, samples: int, size: int) -> list[Any]:
    """``item`` (of ``samples`` samples) cut into consecutive slices of ``size`` samples."""
    cuts = range(0, samples, size)
    if isinstance(item, dict):
        return [{k: v[i:i + size] for k, v in item.items()} for i in cuts]
    if isinstance(item, tuple):
        return [tuple(v[i:i + size] for v in item) for i in cuts]
    return [item[i:i + size] for i in cuts]


def join(results: Sequence[Any]) -> Any:
    """The parts' results as the one result the whole item would have had.

    Raises:
        ResultMismatchError: the parts' results are of a kind that cannot be joined, or
            of different kinds or shapes (an array from one part, a list from another).
    """
    first = results[0]
    kinds = {_kind(r) for r in results}
    if len(kinds) > 1:
        described = ", ".join(f"part {i}: {_describe(r)}" for i, r in enumerate(results))
        raise ResultMismatchError(f"the parts of a split item returned results of different kinds "
                                  f"({described}), which cannot be joined into one result: the batch "
                                  "function must return the same kind for every batch")
    if isinstance(first, np.ndarray):
        return _concatenate(np.concatenate, results)
    if _tensors.is_tensor(first):
        return _concatenate(sys.modules["torch"].cat, results)
    if isinstance(first, dict):
        if any(r.keys() != first.keys() for r in results):
            raise ResultMismatchError(
                "the parts of a split item returned dicts with different keys "
                f"({', '.join(f'part {i}: {sorted(map(repr, r))}' for i, r in enumerate(results))})")
        return {k: join([r[k] for r in results]) for k in first}
    if _outputs(first):
        if any(len(r) != len(first) or not _outputs(r) for r in results):
            raise ResultMismatchError(
                "the parts of a split item returned tuples of different outputs "
                f"({', '.join(f'part {i}: {_describe(r)}' for i, r in enumerate(results))})")
        return tuple(join([r[i] for r in results]) for i in range(len(first)))
    if isinstance(first, (list, tuple)):
        joined = [x for r in results for x in r]
        return joined if isinstance(first, list) else tuple(joined)
    raise ResultMismatchError(f"the parts of a split item returned {type(first).__name__}, which cannot "
                              "be joined into one result: return an array, a tensor, a tuple or dict of "
                              "them, or a list of per-sample results (or set split_oversized=False)")


def _outputs(result: Any) -> bool:
    """A non-empty tuple of arrays / tensors: several outputs, joined field by field."""
    return isinstance(result, tuple) and bool(result) and all(
        isinstance(v, np.ndarray) or _tensors.is_tensor(v) for v in result)


def _kind(result: Any) -> str:
    if isinstance(result, np.ndarray):
        return "array"
    if _tensors.is_tensor(result):
        return "tensor"
    if isinstance(result, dict):
        return "dict"
    if _outputs(result):
        return "outputs"
    return type(result).__name__


def _describe(result: Any) -> str:
    if isinstance(result, tuple) and _outputs(result):
        return "tuple of " + ", ".join(_describe(v) for v in result)
    shape = getattr(result, "shape", None)
    if shape is not None:
        return f"{type(result).__name__} of shape {tuple(shape)}"
    return type(result).__name__


def _concatenate(cat: Any, results: Sequence[Any]) -> Any:
    try:
        return cat(list(results))
    except (ValueError, TypeError, RuntimeError) as exc:  # torch raises RuntimeError
        described = ", ".join(f"part {i}: {_describe(r)}" for i, r in enumerate(results))
        raise ResultMismatchError(f"the parts of a split item returned results that cannot be joined "
                                  f"({described}): {exc}") from None


class Joined:
    """Resolves ``parent`` from its parts' futures once all are done (or one fails)."""

    __slots__ = ("_left", "_lock", "_parts", "_results", "parent")

    def __init__(self, parent: Any, children: list[Any]) -> None:
        self.parent = parent
        self._parts = children
        self._results: list[Any] = [None] * len(children)
        self._left = len(children)
        self._lock = threading.Lock()

    def attach(self) -> None:
        """Start listening; called once every part is queued."""
        self.parent.split_into(self._parts)
        self.parent.add_done_callback(self._parent_done)
        for i, child in enumerate(self._parts):
            child.add_done_callback(lambda f, i=i: self._part_done(i, f))

    def _parent_done(self, parent: Any) -> None:
        if parent.cancelled():
            cancel(self._parts)
            # The item never starts, so no worker will pass it: say here that it was
            # skipped, or wait() and as_completed() would count it pending for ever.
            try:
                parent.set_running_or_notify_cancel()
            except RuntimeError:
                pass  # notified already

    def _part_done(self, index: int, child: Any) -> None:
        if child.cancelled():
            self._settle(lambda p: p.cancel())
            return
        exc = child.exception()
        if exc is not None:
            self._settle(lambda p: p.set_exception(exc))
            cancel(self._parts)
            return
        with self._lock:
            self._results[index] = child.result()
            self._left -= 1
            last = self._left == 0
        if last:
            try:
                value = join(self._results)
            except Exception as e:  # noqa: BLE001 - the item's failure, not the worker's
                self._settle(lambda p: p.set_exception(e))
            else:
                self._settle(lambda p: p.set_result(value))
            self._results = []

    def _settle(self, apply: Any) -> None:
        if self.parent.done():
            return
        try:
            apply(self.parent)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled (or failed by another part) meanwhile: the first outcome stands


def cancel(futures: list[Any]) -> None:
    """Cancel the parts that have not started (those running finish unheard)."""
    for f in futures:
        f.cancel()


def log_failure(name: str) -> Any:
    """For an item queued without a future: log its failure, as the worker does."""
    def done(parent: Any) -> None:
        if not parent.cancelled() and parent.exception() is not None:
            logger.error("fastbatch %s: a split item failed: %r", name, parent.exception())
    return done
