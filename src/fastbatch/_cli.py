"""Command line: ``python -m fastbatch demo | info``."""

from __future__ import annotations

import argparse
import sys

from . import _backend, __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fastbatch`` and the ``fastbatch`` script."""
    parser = argparse.ArgumentParser(prog="fastbatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the seed's example and a batched numpy model, with stats")
    demo.add_argument("--items", type=int, default=20000, help="requests sent to the model (default 20000)")
    demo.add_argument("--producers", type=int, default=4, help="producer threads (default 4)")
    sub.add_parser("info", help="print the version and which core is in use")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(f"fastbatch {__version__}, core: {_backend.NAME}, Python {sys.version.split()[0]}")
        return 0
    from . import _demo

    _demo.run(n_items=args.items, producers=args.producers)
    return 0
