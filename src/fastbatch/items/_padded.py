"""``PaddedBatch``: the batch of a ``variable_length`` processor, and how its result is split.

Each item is one sample whose first axis may vary (``(L,)`` token ids, ``(L, d)``
frames). The batch is the samples padded to the longest, with their lengths and a mask
of the real positions, made by the core's ``assemble_padded`` in one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._errors import ResultMismatchError
from ..core import _backend
from ._results import check_rows


class PaddedBatch(NamedTuple):
    """Samples of different lengths, padded into one array.

    Attributes:
        data: ``(B, L_max, ...)``: sample ``i`` in ``data[i, :lengths[i]]``, the rest
            ``pad_value``.
        lengths: ``(B,)`` int64, each sample's length.
        mask: ``(B, L_max)`` bool, True where ``data`` holds a real element (an
            attention mask: ``mask.astype(np.int64)`` for models that want integers).
    """

    data: npt.NDArray[Any]
    lengths: npt.NDArray[np.int64]
    mask: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        """The number of samples ``B`` (not the three fields)."""
        return int(self.lengths.shape[0])

    @property
    def padding_ratio(self) -> float:
        """Padded positions per real one: ``(B * L_max - sum(lengths)) / sum(lengths)``."""
        real = int(self.lengths.sum())
        return (self.mask.size - real) / real if real else 0.0


def assemble(items: list[Any], pad_value: Any) -> PaddedBatch:
    data, lengths, mask = _backend.assemble_padded(items, pad_value)
    return PaddedBatch(data, lengths, mask)


class PaddedSplit:
    """Splits a padded batch's result by row; the outputs ``trim`` declares per position
    (``True``: every array output; a tuple: those positions / keys) give item ``i`` only
    its ``lengths[i]`` positions, and must have shape ``(B, L_max, ...)``."""

    __slots__ = ("_lengths", "_max", "_trim")

    def __init__(self, lengths: npt.NDArray[np.int64], trim: bool | tuple[Any, ...]) -> None:
        self._lengths = lengths.tolist()
        self._max = max(self._lengths) if self._lengths else 0
        self._trim = trim

    def split(self, result: Any) -> list[Any]:
        """One entry per sample of a single result (``BatchAssembler.split``'s contract)."""
        check_rows(result, len(self._lengths))
        trim = self._trim
        if trim is False or not isinstance(result, np.ndarray):
            return list(result)
        if trim is not True:
            raise ResultMismatchError(
                f"trim_results={trim!r} names outputs of a tuple or dict result, but the batch function "
                f"returned one array of shape {result.shape}: use trim_results=True to trim it")
        return self._trimmed(result, "the result")

    def split_fields(self, keys: list[Any], fields: list[Any]) -> list[list[Any]]:
        """Per output of a tuple / dict result (``keys``: its positions or keys), one entry
        per sample."""
        trim = self._trim
        if trim is not False and trim is not True:
            missing = [k for k in trim if k not in keys]
            if missing:
                raise ResultMismatchError(
                    f"trim_results names outputs {missing!r} that the batch function's result does not "
                    f"have (its outputs: {keys!r})")
        return [self._trimmed(f, f"output {k!r}", keys) if trim is True or (trim is not False and k in trim)
                else list(f) for k, f in zip(keys, fields)]

    def _trimmed(self, output: npt.NDArray[Any], what: str, keys: list[Any] | None = None) -> list[Any]:
        # Declared per position: checked, never guessed from its shape.
        if output.ndim < 2 or output.shape[1] != self._max:
            hint = (f" (trim_results=True declares every output; name only the per-position ones, "
                    f"e.g. trim_results=({keys[0]!r},))" if keys is not None and self._trim is True else "")
            raise ResultMismatchError(
                f"trim_results declares {what} per position, so it must have shape (B, L_max, ...) = "
                f"({len(self._lengths)}, {self._max}, ...) for this batch, but it has shape "
                f"{output.shape}{hint}")
        return [output[i, :n] for i, n in enumerate(self._lengths)]
