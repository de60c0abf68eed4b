"""The pad value of ``assemble_padded``: one conversion, used by both cores.

The compiled core converts the common cases (a Python int into an integer dtype, a
Python float into float32/float64) in C and asks this module about everything else, the
errors included; the twin always asks it. So both cores pad with the same bytes and
refuse the same values with the same words.

The rule, for a numeric dtype (bool, integers, floats, complex): the value must be a
number (Python or numpy scalar, or a 0-d numeric array) that the dtype holds exactly,
except that a float or complex dtype may round it; overflowing to infinity, losing an
imaginary part or a fraction, and wrapping around are refused. NaN and infinities pad
float and complex dtypes only. A structured dtype takes a tuple of one value per field
(or one value for every field, or an element of that very dtype), each field's value
under the same rule. For any other dtype (strings, datetimes, raw bytes) the value is
assigned to one element as numpy assigns it. Bytes no value covers (the gaps between
aligned fields) are zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import _messages as msg

__all__ = ["pad_element"]

_NUMBER_KINDS = "biufc"


def pad_element(value: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """``value`` as a 0-d array of ``dtype`` (its bytes are the padding).

    Raises:
        ValueError: ``value`` cannot be represented in ``dtype`` (see the module).
    """
    if dtype.names is not None:
        return _structured(value, dtype)
    if dtype.kind not in _NUMBER_KINDS:
        out = np.zeros((), dtype=dtype)
        try:
            with np.errstate(all="ignore"):
                out[()] = value
        except (TypeError, ValueError, OverflowError):
            raise ValueError(msg.PAD_VALUE.format(value=value, dtype=dtype)) from None
        return out
    try:
        src = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        src = None
    if src is None or src.ndim != 0 or src.dtype.kind not in _NUMBER_KINDS + "O":
        raise ValueError(msg.PAD_VALUE.format(value=value, dtype=dtype))
    # An object array here holds a number numpy has no type for (an int beyond 64
    # bits, a Fraction): the cast below calls int()/float() on it.
    with np.errstate(all="ignore"):  # every loss is detected below, none is warned of
        try:
            if src.dtype.kind == "c" and dtype.kind != "c":
                if src.imag != 0:
                    raise ValueError
                src = src.real  # drops a zero imaginary part without a ComplexWarning
            out = src.astype(dtype)
            if dtype.kind in "fc":
                exact = bool(np.isfinite(out)) or (
                    src.dtype.kind in "fc" and not bool(np.isfinite(src)))
            else:
                exact = bool(out == src)
        except (TypeError, ValueError, OverflowError, ArithmeticError):
            exact = False
    if not exact:
        raise ValueError(msg.PAD_VALUE.format(value=value, dtype=dtype))
    return out


def _structured(value: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    out = np.zeros((), dtype=dtype)
    if isinstance(value, (np.void, np.ndarray)) and value.ndim == 0 and value.dtype == dtype:
        out[()] = value
        return out
    names = dtype.names
    assert names is not None
    fields = value if isinstance(value, tuple) else (value,) * len(names)
    if len(fields) != len(names):
        raise ValueError(msg.PAD_VALUE.format(value=value, dtype=dtype))
    for name, field_value in zip(names, fields):
        try:
            # A subarray field ("3f4") takes one value for each of its elements.
            out[name] = pad_element(field_value, dtype.fields[name][0].base)  # type: ignore[index]
        except ValueError:
            raise ValueError(msg.PAD_VALUE.format(value=value, dtype=dtype)) from None
    return out
