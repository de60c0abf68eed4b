"""A one-line text progress bar for the demo: no dependency, redrawn by a monitor thread.

The code doing the work only bumps a counter (``advance``); a daemon thread redraws the
line a few times per second. Meant for one writer per bar (a loop, or the worker thread
calling the batch function): ``advance`` is a plain ``+=``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from types import TracebackType
from typing import TextIO


def wanted(stream: TextIO, force: bool | None) -> bool:
    """Whether to draw: ``force`` when given, else only when ``stream`` is a terminal."""
    if force is not None:
        return force
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):  # a closed or unusual stream
        return False


class ProgressBar:
    """``with ProgressBar("label", total) as bar: ... bar.advance(n) ...``.

    Disabled (``enabled=False``), it only counts: no thread, no output. Enabled, it
    draws ``label [#####.....] done/total rate eta`` on ``stream`` every ``interval``
    seconds with a carriage return, and erases the line when the block ends, so that
    what is printed next starts on a clean line.
    """

    def __init__(self, label: str, total: int, *, enabled: bool, stream: TextIO | None = None,
                 interval: float = 0.2, width: int = 20) -> None:
        self.label = label
        self.total = max(0, total)
        self.done = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.width = width
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = 0  # length of the line on screen, to erase it

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done (one writing thread per bar)."""
        self.done += n

    def line(self) -> str:
        """The bar as it would be drawn now."""
        done = min(self.done, self.total) if self.total else self.done
        frac = done / self.total if self.total else 1.0
        filled = round(frac * self.width)
        elapsed = time.perf_counter() - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        tail = f"eta {(self.total - done) / rate:.1f} s" if 0 < rate and done < self.total else f"{elapsed:.1f} s"
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{done:,}/{self.total:,}  {rate:,.0f}/s  {tail}")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stream: stop drawing
            self.enabled = False

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, ValueError, OSError):  # not a terminal (a forced bar)
            columns = shutil.get_terminal_size((80, 24)).columns
        return columns if columns >= 20 else 80

    def _draw(self) -> None:
        if not self.enabled:
            return
        text = self.line()[: self._columns() - 1]
        pad = " " * max(0, self._drawn - len(text))
        self._drawn = len(text)
        self._write("\r" + text + pad)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def __enter__(self) -> ProgressBar:
        self._t0 = time.perf_counter()
        if self.enabled:
            self._draw()
            self._thread = threading.Thread(target=self._run, name="fastbatch-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.enabled and self._drawn:
            self._write("\r" + " " * self._drawn + "\r")  # erased: the next output starts clean
            self._drawn = 0
