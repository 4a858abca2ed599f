"""A one-line progress display on stderr, drawn only when stderr is a terminal.

Results go to stdout; this line says what is running meanwhile and is erased before
anything is printed, so a redirected or piped run (CI) shows nothing of it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["progress", "say"]


class Progress:
    """What the suite is doing now: a stage, and how far through it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.enabled = stream.isatty()
        self._started = time.monotonic()
        self._stage = ""
        self._total: int | None = None
        self._drawn = 0.0
        self._visible = False

    def stage(self, text: str, total: int | None = None) -> None:
        """Start a stage; ``total`` steps if it counts them."""
        self._stage = text
        self._total = total
        self._drawn = 0.0
        self.step(0)

    def step(self, done: int) -> None:
        """Report ``done`` steps of the stage (redrawn at most ten times a second)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if done and now - self._drawn < 0.1:
            return
        self._drawn = now
        count = f" {done:,}/{self._total:,}" if self._total else ""
        elapsed = int(now - self._started)
        line = f"[{elapsed // 60}:{elapsed % 60:02d}] {self._stage}{count}"
        self._stream.write("\r\x1b[K" + line[:119])
        self._stream.flush()
        self._visible = True

    def clear(self) -> None:
        """Erase the line (before results are printed)."""
        if self._visible:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._visible = False


progress = Progress(sys.stderr)
"""The run's one progress line."""


def say(text: str = "") -> None:
    """Print a result line to stdout, erasing the progress line first."""
    progress.clear()
    print(text, flush=True)
