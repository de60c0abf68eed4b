"""How a benchmark script imports fastbatch: the installed package, else this checkout's
``src/`` (which then needs ``python setup.py build_ext --inplace``); never without its
compiled core, whose absence would pass the pure-Python twin's figures off as fastbatch's.

    from compiled_fastbatch import fastbatch
"""

from __future__ import annotations

import importlib.util
import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if importlib.util.find_spec("fastbatch") is None and os.path.isdir(_SRC):
    sys.path.insert(0, _SRC)  # the working tree, as `PYTHONPATH=src` gives it

import fastbatch  # noqa: E402
try:
    from fastbatch.core import _backend  # noqa: E402
except ImportError:  # a version from before the core had its folder (benchmarks/versions.py)
    from fastbatch import _backend  # type: ignore[attr-defined,no-redef]  # noqa: E402

if _backend.NAME != "compiled":
    raise SystemExit(f"fastbatch imported from {os.path.dirname(fastbatch.__file__)} has no compiled core: "
                     "run against the installed package (`pip install .`, no PYTHONPATH=src) or build "
                     "it in place (`python setup.py build_ext --inplace`)")

__all__ = ["fastbatch"]
