"""Reading FFmpeg's ``-progress pipe:1`` output.

FFmpeg writes ``key=value`` lines and ends each block with
``progress=continue`` (or ``progress=end`` for the last one). The pipe hands
them over in chunks that may split a line anywhere, even inside a UTF-8
sequence, so :class:`ProgressParser` keeps the unfinished line between feeds.
Values FFmpeg does not know yet are ``N/A``; they read as zero.

GStreamer's equivalent is the ``progressreport`` element, whose lines
(``progressreport0 (00:00:01): 3 / 10 seconds (30.0 %)``) carry only the
position, in whole seconds; the same parser turns each into a snapshot, so
one reader serves both engines.

Plain code: the job runner feeds it what it reads from the encoder's stdout.
"""

from __future__ import annotations

import logging
import math
import re

import attrs

__all__ = ["ProgressParser", "ProgressSnapshot", "percent"]

log = logging.getLogger(__name__)

# Progress lines are under 100 bytes; anything this long without a newline is
# not progress output, and keeping it would let a broken encoder fill memory.
MAX_LINE_BYTES = 4096

_GST_REPORT = re.compile(r"^progressreport\d*\s*\([\d: ]+\):\s*(\d+) / -?\d+ seconds\b")
_CLOCK = re.compile(r"^(-)?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")


@attrs.frozen
class ProgressSnapshot:
    """One block of progress: the encoder's state at one instant.

    ``bitrate_kbps`` and ``total_size`` describe the output so far; ``speed``
    is media seconds encoded per wall-clock second (1.0 is real time).
    ``done`` is true for the last block, written when the encoder finishes.
    """

    frame: int = 0
    fps: float = 0.0
    bitrate_kbps: float = 0.0
    total_size: int = 0
    out_time_s: float = 0.0
    speed: float = 0.0
    done: bool = False

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ProgressSnapshot:
        """Build from one block's ``key=value`` pairs; missing or ``N/A`` values are zero."""
        return cls(
            frame=int(_number(fields.get("frame"))),
            fps=_number(fields.get("fps")),
            bitrate_kbps=_number(fields.get("bitrate"), suffix="kbits/s"),
            total_size=int(_number(fields.get("total_size"))),
            out_time_s=max(0.0, _out_time(fields)),
            speed=_number(fields.get("speed"), suffix="x"),
            done=fields.get("progress") == "end",
        )


def _number(text: str | None, suffix: str = "") -> float:
    if text is None:
        return 0.0
    text = text.strip()
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)].strip()
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _out_time(fields: dict[str, str]) -> float:
    """Seconds of output written, from the most precise field present.

    ``out_time_ms`` is in microseconds too (a long-standing FFmpeg quirk), so
    it stands in for ``out_time_us``; the clock form is the last resort.
    """
    for key in ("out_time_us", "out_time_ms"):
        value = fields.get(key, "").strip()
        if value.lstrip("-").isdigit():
            return int(value) / 1_000_000
    match = _CLOCK.match(fields.get("out_time", "").strip())
    if match is None:
        return 0.0
    sign, hours, minutes, seconds = match.groups()
    total = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return -total if sign else total


class ProgressParser:
    """Turns raw stdout chunks of ``ffmpeg -progress pipe:1`` into snapshots.

    Example::

        parser = ProgressParser()
        async for chunk in proc.stdout:
            for snapshot in parser.feed(chunk):
                report(percent(snapshot, spec.duration))
    """

    def __init__(self) -> None:
        self._partial = b""
        self._fields: dict[str, str] = {}
        self._latest: ProgressSnapshot | None = None

    @property
    def latest(self) -> ProgressSnapshot | None:
        """The last completed block, or None before the first one."""
        return self._latest

    def feed(self, data: bytes | bytearray) -> list[ProgressSnapshot]:
        """Consume a chunk; return the blocks it completed, oldest first (often none)."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE_BYTES:
            log.debug("dropping %d bytes of encoder output without a newline", len(self._partial))
            self._partial = b""
        snapshots = []
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            key, sep, value = line.partition("=")
            if not sep:
                if gst := _GST_REPORT.match(line):
                    snapshots.append(ProgressSnapshot(out_time_s=float(gst[1])))
                continue
            self._fields[key.strip()] = value.strip()
            if key.strip() == "progress":
                snapshot = ProgressSnapshot.from_fields(self._fields)
                snapshots.append(snapshot)
                self._fields = {}
        if snapshots:
            self._latest = snapshots[-1]
        return snapshots


def percent(snapshot: ProgressSnapshot, duration_s: float) -> float:
    """How far the job is, 0 to 100, given the duration it should produce.

    A finished encode is 100 even if the input ran out early; an unknown
    duration (zero or less) reads as 0 until then, rather than a guess.
    """
    if snapshot.done:
        return 100.0
    if not duration_s > 0:
        return 0.0
    return min(100.0, max(0.0, snapshot.out_time_s / duration_s * 100.0))
