"""Pure-Python twin of :mod:`fastbatch.core._core`: the same classes, behaviour and messages.

The contract is written in ``_core.pyi``. The twin is the readable reference, the oracle
the compiled core is tested against (``tests/core/test_differential.py`` drives both with
the same random operations and compares every result and error), and the fallback when
the extension is missing (``fastbatch.core._backend`` picks one of the two). Its parts live
in one module each:

* ``_twin_queue``: ``RequestQueue`` and ``monotonic_ns``;
* ``_twin_assembler``: ``BatchAssembler`` and ``assemble_padded``;
* ``_twin_stats``: ``StatsWindow`` and ``Histogram``;
* ``_twin_args``: the argument conversions that mirror the compiled core's C types.

Both cores take their error messages from ``_messages``.
"""

from __future__ import annotations

from ._twin_assembler import BatchAssembler, assemble_padded
from ._twin_queue import RequestQueue, monotonic_ns
from ._twin_stats import Histogram, StatsWindow

__all__ = [
    "BatchAssembler",
    "Histogram",
    "RequestQueue",
    "StatsWindow",
    "assemble_padded",
    "monotonic_ns",
]

# This module is the classes' public home, as fastbatch.core._core is the compiled ones':
# the backend, reprs, pickling errors and tools that check a class's __module__ against
# the core in use (the benchmarks do) all name the core, not the file a class is in.
for _cls in (BatchAssembler, Histogram, RequestQueue, StatsWindow):
    _cls.__module__ = __name__
del _cls
