"""``PaddedBatch``: the batch of a ``variable_length`` processor, and how its result is split.

Each item is one sample whose first axis may vary (``(L,)`` token ids, ``(L, d)``
frames). The batch is the samples padded to the longest, with their lengths and a mask
of the real positions, made by the core's ``assemble_padded`` in one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from . import _backend
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
    """Splits a padded batch's result: row ``i`` per item; with ``trim``, an output of
    shape ``(B, L_max, ...)`` gives item ``i`` only its ``lengths[i]`` positions."""

    __slots__ = ("_lengths", "_max", "_trim")

    def __init__(self, lengths: npt.NDArray[np.int64], trim: bool) -> None:
        self._lengths = lengths.tolist()
        self._max = max(self._lengths) if self._lengths else 0
        self._trim = trim

    def split(self, result: Any) -> list[Any]:
        """One entry per sample (``BatchAssembler.split``'s contract)."""
        check_rows(result, len(self._lengths))
        if self._trim and isinstance(result, np.ndarray) and result.ndim >= 2 and result.shape[1] == self._max:
            return [result[i, :n] for i, n in enumerate(self._lengths)]
        return list(result)
