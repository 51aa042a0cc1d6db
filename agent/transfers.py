"""A one-line progress display for the CLI's uploads and downloads: bytes, rate and time left.

Shown on a terminal only: in a pipe or a log file (stderr not a TTY) it says
nothing, so scripts read clean output. Redrawn at most :data:`REDRAW_S` apart.
A few lines of our own rather than a progress-bar library: one line with
three figures needs no dependency.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["TransferProgress"]

# Often enough to look alive, rarely enough to cost nothing.
REDRAW_S = 0.2


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class TransferProgress:
    """``label 12.5 MB / 40.0 MB  3.1 MB/s  ETA 0:09`` redrawn in place on stderr, when it is a terminal.

    Args:
        label: what moves, such as ``uploading clip.mp4``.
        total: bytes expected; 0 when unknown (no ETA then).
        stream: where to draw; only a TTY is drawn on.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._shown = self._stream.isatty()
        self._label = label
        self.total = total
        self._started = time.monotonic()
        self._first = -1
        self._drawn = 0.0
        self._done = 0

    def update(self, done: int, total: int | None = None) -> None:
        """Record ``done`` bytes moved so far (of ``total``, when it became known)."""
        if total:
            self.total = total
        if self._first < 0:
            self._first = done  # a resumed upload's held bytes are not this run's rate
        self._done = done
        now = time.monotonic()
        if self._shown and now - self._drawn >= REDRAW_S:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        """Draw the final figures and end the line."""
        if self._shown:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = max(self._done - self._first, 0) / elapsed
        figures = f"{self._label} {_size(self._done)}"
        if self.total:
            figures += f" / {_size(self.total)}"
        figures += f"  {_size(rate)}/s"
        if self.total and rate > 0 and self._done < self.total:
            left = round((self.total - self._done) / rate)
            figures += f"  ETA {left // 60}:{left % 60:02d}"
        self._stream.write("\r" + figures.ljust(78))
        self._stream.flush()
