"""Argument conversion of the pure-Python core, as the compiled core's C types do it.

The compiled core (``_core.pyx``) converts its arguments to C ``int64_t`` and
``double``; the helpers here accept and refuse exactly what those conversions accept and
refuse, with the same exception types, so that both cores reject a bad argument alike.
Used by ``_twin_queue``, ``_twin_assembler`` and ``_twin_stats``.
"""

from __future__ import annotations

import math
import operator
from typing import Any

from . import _messages as msg

__all__ = ["INT64_MAX", "INT64_MIN", "as_float", "as_int64", "as_percentile", "as_seconds", "as_timeout"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_float(name: str, value: Any) -> float:
    """``value`` as a float, as a C ``double`` argument takes it; ``TypeError`` otherwise."""
    if isinstance(value, float):
        return value
    # float() would also parse strings; the compiled core (a C double) refuses them.
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(msg.NOT_A_REAL_NUMBER.format(name=name, type=type(value).__name__))
    try:
        return float(value)
    except TypeError:
        raise TypeError(msg.NOT_A_REAL_NUMBER.format(name=name, type=type(value).__name__)) from None


def as_int64(name: str, value: Any) -> int:
    """``value`` as an int in the int64 range, as a C ``int64_t`` argument takes it."""
    if type(value) is not int:
        try:
            value = operator.index(value)  # floats and strings refused, numpy integers taken
        except TypeError:
            raise TypeError(
                msg.NOT_AN_INTEGER.format(name=name, type=type(value).__name__)) from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(msg.OUT_OF_RANGE.format(name=name, value=value))
    return int(value)


def as_seconds(name: str, value: Any) -> float:
    """A duration in seconds: a real number ``>= 0`` (NaN refused)."""
    s = as_float(name, value)
    if not s >= 0.0:  # written this way round so that NaN fails too
        raise ValueError(msg.NEGATIVE_SECONDS.format(name=name, value=value))
    return s


def as_timeout(value: Any) -> float | None:
    """A ``timeout`` argument: ``None`` (and inf) wait forever, 0 does not wait."""
    if value is None:
        return None
    s = as_seconds("timeout", value)
    return None if s == math.inf else s


def as_percentile(q: Any) -> float:
    """A percentile's ``q``: a real number in ``[0, 100]`` (NaN refused)."""
    value = as_float("q", q)
    if not 0.0 <= value <= 100.0:  # NaN fails too
        raise ValueError(msg.PERCENTILE_RANGE.format(q=q))
    return value
