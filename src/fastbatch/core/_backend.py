"""Picks the core implementation: compiled ``_core`` or its pure-Python twin ``_core_py``.

The rest of fastbatch imports the core only from here. The pure-Python core is used when
the environment variable ``FASTBATCH_NO_EXTENSIONS`` is set to a non-empty value other
than ``"0"``, or when the compiled core cannot be imported (with a ``RuntimeWarning``:
a missing build should be noticed, not silently slow).

Attributes:
    NAME: ``"compiled"`` or ``"python"``, the core in use.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

__all__ = [
    "NAME",
    "BatchAssembler",
    "Histogram",
    "RequestQueue",
    "StatsWindow",
    "assemble_padded",
    "monotonic_ns",
]

NAME: str

if TYPE_CHECKING:  # both cores follow _core.pyi; type-check against it
    from ._core import (
        BatchAssembler,
        Histogram,
        RequestQueue,
        StatsWindow,
        assemble_padded,
        monotonic_ns,
    )

    NAME = "compiled"
elif os.environ.get("FASTBATCH_NO_EXTENSIONS", "") not in ("", "0"):
    from ._core_py import (
        BatchAssembler,
        Histogram,
        RequestQueue,
        StatsWindow,
        assemble_padded,
        monotonic_ns,
    )

    NAME = "python"
else:
    try:
        from ._core import (
            BatchAssembler,
            Histogram,
            RequestQueue,
            StatsWindow,
            assemble_padded,
            monotonic_ns,
        )
    except ImportError as exc:
        warnings.warn(
            f"the compiled core fastbatch.core._core is missing ({exc}); using the pure-Python "
            "core, which is slower. Build the extension, or set FASTBATCH_NO_EXTENSIONS=1 "
            "to choose the pure-Python core deliberately.",
            RuntimeWarning,
            stacklevel=2,
        )
        from ._core_py import (
            BatchAssembler,
            Histogram,
            RequestQueue,
            StatsWindow,
            assemble_padded,
            monotonic_ns,
        )

        NAME = "python"
    else:
        NAME = "compiled"
