"""The package check's data: the rungs asked for, what manifests declare, what decodes show."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from agent.scenarios import EncodeSpec

PackageKind = Literal["hls", "dash", "files"]

# The sample entries of RFC 6381 codec strings -> the project's codec names.
VIDEO_CODECS = {"avc1": "h264", "avc3": "h264", "hvc1": "h265", "hev1": "h265", "vp09": "vp9", "av01": "av1"}


@attrs.frozen
class ExpectedRung:
    """One rung of the ladder as the job asked for it; ``name`` (``720p30-h264``) names it in problems."""

    name: str
    width: int
    height: int
    fps: float
    codec: str

    @classmethod
    def from_spec(cls, spec: EncodeSpec) -> ExpectedRung:
        return cls(name=spec.scenario, width=spec.width, height=spec.height, fps=spec.fps, codec=spec.codec)

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@attrs.frozen
class Bitrate:
    """Bits per second of one rendition: the busiest segment's and the whole rendition's."""

    peak: float
    average: float

    def __add__(self, other: Bitrate) -> Bitrate:
        return Bitrate(self.peak + other.peak, self.average + other.average)


@attrs.frozen
class Declared:
    """What a manifest says about a rendition; None where it says nothing."""

    where: str  # the manifest's name, for messages
    width: int | None
    height: int | None
    fps: float | None
    codecs: str
    bandwidth: int | None = None
    average_bandwidth: int | None = None
    # Measured from the segments' sizes (HLS only: what BANDWIDTH and AVERAGE-BANDWIDTH must match).
    measured: Bitrate | None = None

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.width is None or self.height is None else (self.width, self.height)


@attrs.frozen
class Segment:
    path: Path
    duration: float


@attrs.frozen
class Track:
    """One rendition as the package lists it.

    ``source`` is what FFmpeg reads: an HLS media playlist (for DASH, the
    scratch one), or a file. ``playable`` is False when its files are
    already known to be missing: it is then not decoded, so the missing file
    is reported once rather than as a short or broken decode.
    """

    label: str
    source: Path
    declared: Declared | None = None
    segments: tuple[Segment, ...] = ()
    playable: bool = True

    def segment_starts(self) -> list[float]:
        starts, at = [], 0.0
        for segment in self.segments:
            starts.append(at)
            at += segment.duration
        return starts


@attrs.define
class Reading:
    """A manifest read: problems found on the way, the video and audio renditions to decode."""

    problems: list[str] = attrs.field(factory=list)
    video: list[Track] = attrs.field(factory=list)
    audio: list[Track] = attrs.field(factory=list)


@attrs.frozen
class Decoded:
    """What a full decode of one rendition showed."""

    codec: str  # the project's name: h264, h265, vp9; FFmpeg's for others
    profile: str
    width: int
    height: int
    frames: int
    duration: float
    key_times: tuple[float, ...]
    has_audio: bool

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def fps(self) -> float:
        return self.frames / self.duration if self.duration > 0 else 0.0


class DecodeFailed(Exception):
    """FFmpeg could not decode a rendition to its end; the message is its last words."""
