"""A ladder's package checked the way a player reads it: manifest, files, and a full decode of every rung.

What viewers get from a ladder job is a package (an HLS master playlist and
its media playlists, a DASH MPD, or one file per rung), and a player trusts
what it declares. :func:`check_package` reads the package as a player would
and returns one plain sentence per problem (empty: a player plays it and can
switch rungs):

* the manifest: an HLS master playlist whose variants each give
  ``BANDWIDTH``, ``AVERAGE-BANDWIDTH``, ``RESOLUTION``, ``CODECS`` and
  ``FRAME-RATE`` (and the audio group they share), video-on-demand media
  playlists with their ``EXT-X-MAP`` init sections; or a static DASH MPD whose
  Representations give width, height, frame rate, bandwidth and codecs, with a
  ``SegmentTemplate`` (a ``SegmentTimeline`` or a fixed duration);
* every file the manifest names exists and is not empty;
* every rung decoded in full by FFmpeg: its size, frame rate and duration
  against the ladder and against what the manifest declares (``CODECS``
  against the decoded codec and H.264 profile; HLS bandwidths against the
  segments' measured peak and average, as Apple's validator does);
* keyframes at the same times in every rung, and every segment starting on a
  keyframe at the same time in every rung: players switch rungs at segment
  boundaries, and a segment that starts elsewhere shows a broken picture or a
  jump.

Keyframes are read from the decode the check makes anyway: FFmpeg's
``showinfo`` filter prints each decoded frame's time and key flag, so one
decode per rung gives sizes, frame count, duration, decode errors and the
keyframe times together (``-skip_frame nokey`` would be cheaper but decodes
nothing else, and reading packet flags needs ffprobe, which the
``imageio-ffmpeg`` wheel does not ship). Times are counted from each rung's
first frame. A DASH Representation is decoded through a scratch HLS media
playlist that lists its init section and segments by absolute path, so both
kinds are decoded by the same FFmpeg demuxer, from exactly the files the
manifest names.

The manifest readers and comparisons are plain code; the decodes run as
child processes through :func:`~agent.worker.processes.run_child` (own
session, guarded, killed on cancel), one after the other.
"""

from __future__ import annotations

import collections
import math
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from agent.worker.engines.ffmpeg import LOCAL_PROTOCOLS, parse_media_info
from agent.worker.hls import PlaylistRejected, media_resources
from agent.worker.processes import STDERR_TAIL_LINES, run_child
from agent.worker.progress import ProgressParser

if TYPE_CHECKING:
    from agent.scenarios import EncodeSpec
    from agent.worker.guardian import Guardian

__all__ = [
    "BANDWIDTH_TOLERANCE",
    "DURATION_TOLERANCE_S",
    "FPS_TOLERANCE",
    "Bitrate",
    "DecodeFailed",
    "Declared",
    "Decoded",
    "ExpectedRung",
    "PackageKind",
    "Pair",
    "Reading",
    "Segment",
    "Track",
    "alignment_problems",
    "check_package",
    "decode_audio",
    "decode_video",
    "match_rungs",
    "measure_hls_bitrate",
    "read_dash",
    "read_files",
    "read_hls",
    "rung_problems",
]

PackageKind = Literal["hls", "dash", "files"]

# How far a rung's (or the audio's) duration may be from the expected one:
# more than the frame or two the fps filter adds or drops at the ends, or
# AAC's priming, and less than one segment (2 s keyframe interval), so a rung
# that lost a segment fails.
DURATION_TOLERANCE_S = 0.5
# Apple's media stream validator's margin between declared and measured bitrates.
BANDWIDTH_TOLERANCE = 0.10
# A decoded frame rate may differ from the rung's by this share: the average
# over a whole rung is exact unless frames were dropped or duplicated.
FPS_TOLERANCE = 0.02

_VIDEO_CODECS = {"avc1": "h264", "avc3": "h264", "hvc1": "h265", "hev1": "h265", "vp09": "vp9", "av01": "av1"}
_AUDIO_CODECS = ("mp4a", "opus", "ac-3", "ec-3", "flac", "mp3")
# FFmpeg's decoder names for the scenario codecs.
_DECODED_CODEC = {"h264": "h264", "hevc": "h265", "vp9": "vp9", "av1": "av1"}
# H.264 profile names FFmpeg prints -> profile_idc, the first byte of an avc1.PPCCLL codec string.
_H264_PROFILE_IDC = {
    "Baseline": 0x42, "Constrained Baseline": 0x42, "Main": 0x4D, "Extended": 0x58, "High": 0x64,
    "High 10": 0x6E, "High 4:2:2": 0x7A, "High 4:4:4 Predictive": 0xF4,
}
_MEDIA_EXTENSIONS = (".mp4", ".webm")


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


# --- reading manifests (plain code) --------------------------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_EXTINF = re.compile(r"^#EXTINF:\s*(\d+(?:\.\d+)?)")


def _attributes(text: str) -> dict[str, str]:
    """An HLS attribute list (``BANDWIDTH=1,CODECS="a,b"``) as a dict, quotes removed."""
    return {key: value.strip('"') for key, value in _ATTRIBUTE.findall(text)}


def _fetchable(package: Path, base: Path, reference: str) -> Path | None:
    """``reference`` (relative to ``base``) as a path, or None if it leaves the package: a URL, ``..``, absolute."""
    if "://" in reference or reference.startswith("/"):
        return None
    path = (base / reference).resolve()
    return path if path.is_relative_to(package.resolve()) else None


def _locate(package: Path, where: str, base: Path, reference: str) -> Path | str:
    """The file a manifest names, if there and not empty; else why a player could not fetch it."""
    path = _fetchable(package, base, reference)
    if path is None:
        return f"{where} names {reference!r}, which is not a file inside the package; players could not fetch it"
    if not path.is_file():
        return f"{where} names {reference!r}, which is missing from the package"
    if path.stat().st_size == 0:
        return f"{where} names {reference!r}, which is empty"
    return path


def _number_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _int_or_none(text: str | None) -> int | None:
    value = _number_or_none(text)
    return int(value) if value is not None and value == int(value) else None


def _size(text: str | None) -> tuple[int | None, int | None]:
    match = re.fullmatch(r"(\d+)x(\d+)", text or "")
    return (int(match[1]), int(match[2])) if match else (None, None)


def _media_segments(text: str, base: Path) -> list[Segment]:
    """The segments of a media playlist with their ``#EXTINF`` durations, in order."""
    segments, duration = [], 0.0
    for line in (line.strip() for line in text.splitlines()):
        if match := _EXTINF.match(line):
            duration = float(match[1])
        elif line and not line.startswith("#"):
            segments.append(Segment(base / line, duration))
    return segments


def _read_media_playlist(
    package: Path, path: Path, label: str, problems: list[str]
) -> tuple[tuple[Segment, ...], bool]:
    """Check a media playlist's every file; its segments and whether all of them are there."""
    base = path.parent
    try:
        text = path.read_text(errors="replace")
        resources = media_resources(text)
    except OSError:
        problems.append(f"{label} cannot be read; players could not load it")
        return (), False
    except PlaylistRejected as exc:
        problems.append(f"{label}: {exc}")
        return (), False
    missing = [found for r in resources if isinstance(found := _locate(package, label, base, r.uri), str)]
    problems += missing
    return tuple(_media_segments(text, base)), not missing


def _is_video(codecs: str, resolution: str | None) -> bool:
    return resolution is not None or any(c.strip()[:4] in _VIDEO_CODECS for c in codecs.split(",") if c.strip())


def read_hls(package: Path, audio: bool) -> Reading:
    """The master playlist at the top of ``package``, each variant and audio rendition, their files."""
    reading = Reading()
    masters = sorted(p for p in package.glob("*.m3u8") if "#EXT-X-STREAM-INF" in p.read_text(errors="replace"))
    if len(masters) != 1:
        found = ", ".join(p.name for p in masters) if masters else "none"
        reading.problems.append(
            "the package needs exactly one HLS master playlist (a .m3u8 with #EXT-X-STREAM-INF) at its top; "
            f"found {found}"
        )
        return reading
    master = masters[0]
    lines = [line.strip() for line in master.read_text(errors="replace").splitlines()]
    if not lines or lines[0] != "#EXTM3U":
        reading.problems.append(f"{master.name} does not start with #EXTM3U; players reject it")
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for line in lines:
        if line.startswith("#EXT-X-MEDIA:"):
            media = _attributes(line.partition(":")[2])
            if media.get("TYPE") == "AUDIO" and "URI" in media:
                groups[media.get("GROUP-ID", "")].append(media["URI"])
    audio_uris = sorted({uri for uris in groups.values() for uri in uris})
    if audio and not audio_uris:
        reading.problems.append(
            f"{master.name} has no audio rendition (#EXT-X-MEDIA:TYPE=AUDIO with a URI) though the input has audio"
        )
    audio_bitrates: dict[str, Bitrate] = {}
    for uri in audio_uris:
        path = _locate(package, master.name, package, uri)
        if isinstance(path, str):
            reading.problems.append(path)
            continue
        segments, complete = _read_media_playlist(package, path, uri, reading.problems)
        reading.audio.append(Track(uri, path, segments=segments, playable=complete))
        if complete:
            audio_bitrates[uri] = _bitrate(segments)
    for attributes, uri in _variants(lines):
        where = f"{master.name} (variant {uri})"
        if not _is_video(attributes.get("CODECS", ""), attributes.get("RESOLUTION")):
            continue  # an audio-only variant: its playlist is the audio rendition's, checked above
        missing = [key for key in ("BANDWIDTH", "AVERAGE-BANDWIDTH", "RESOLUTION", "CODECS", "FRAME-RATE")
                   if key not in attributes]
        if missing:
            reading.problems.append(f"{where} has no {', '.join(missing)}; players choose and switch rungs by them")
        group = attributes.get("AUDIO")
        if audio and group not in groups:
            reading.problems.append(
                f"{where} names no audio group of the master playlist (AUDIO={group!r}); it would play silent"
            )
        elif group is not None and "CODECS" in attributes and not any(
                codec.strip().startswith(_AUDIO_CODECS) for codec in attributes["CODECS"].split(",")):
            reading.problems.append(
                f"{where} plays audio group {group!r} but its CODECS lists no audio codec; players may refuse it"
            )
        path = _locate(package, master.name, package, uri)
        if isinstance(path, str):
            reading.problems.append(path)
            continue
        segments, complete = _read_media_playlist(package, path, uri, reading.problems)
        measured = _bitrate(segments) if complete else None
        if measured is not None and group in groups and all(u in audio_bitrates for u in groups[group]):
            measured += max((audio_bitrates[u] for u in groups[group]), key=lambda b: b.peak)
        width, height = _size(attributes.get("RESOLUTION"))
        declared = Declared(
            where=master.name, width=width, height=height, fps=_number_or_none(attributes.get("FRAME-RATE")),
            codecs=attributes.get("CODECS", ""), bandwidth=_int_or_none(attributes.get("BANDWIDTH")),
            average_bandwidth=_int_or_none(attributes.get("AVERAGE-BANDWIDTH")), measured=measured,
        )
        reading.video.append(Track(uri, path, declared, segments, playable=complete))
    return reading


def _variants(lines: Sequence[str]) -> list[tuple[dict[str, str], str]]:
    """``(attributes, uri)`` of each ``#EXT-X-STREAM-INF`` and the URI line after it."""
    variants, pending = [], None
    for line in lines:
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = _attributes(line.partition(":")[2])
        elif line and not line.startswith("#") and pending is not None:
            variants.append((pending, line))
            pending = None
    return variants


def _bitrate(segments: Sequence[Segment]) -> Bitrate:
    """Peak and average bits per second of segments, from their sizes and durations."""
    rates = [8 * s.path.stat().st_size / s.duration for s in segments if s.duration > 0]
    total = sum(s.duration for s in segments)
    average = 8 * sum(s.path.stat().st_size for s in segments) / total if total > 0 else 0.0
    return Bitrate(peak=max(rates, default=0.0), average=average)


def measure_hls_bitrate(media_playlist: Path) -> Bitrate:
    """The peak and average bitrate of a media playlist's segments: what ``BANDWIDTH`` and ``AVERAGE-BANDWIDTH`` say.

    A variant with an audio group declares its video's plus the audio's. The
    init section is left out, as players fetch it once.

    Raises:
        OSError: the playlist or a segment cannot be read.
    """
    return _bitrate(_media_segments(media_playlist.read_text(), media_playlist.parent))


_MPD_NS = "{urn:mpeg:dash:schema:mpd:2011}"
_DECIMAL = r"(\d+(?:\.\d+)?)"
_ISO_DURATION = re.compile(rf"^P(?:{_DECIMAL}D)?(?:T(?:{_DECIMAL}H)?(?:{_DECIMAL}M)?(?:{_DECIMAL}S)?)?$")
_TEMPLATE_FIELD = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(?:%0(\d+)d)?\$")


def _iso_duration(text: str) -> float | None:
    match = _ISO_DURATION.match(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return days * 86_400 + hours * 3600 + minutes * 60 + seconds


def _frame_rate(text: str | None) -> float | None:
    if text is None:
        return None
    numerator, _, denominator = text.partition("/")
    rate = _number_or_none(numerator)
    divisor = _number_or_none(denominator) if denominator else 1.0
    return rate / divisor if rate is not None and divisor is not None else None


def _fill(template: str, representation: str, number: int, time: int, bandwidth: str) -> str:
    values = {"RepresentationID": representation, "Number": number, "Time": time, "Bandwidth": bandwidth}

    def one(match: re.Match[str]) -> str:
        value = values[match[1]]
        return f"{value:0{match[2]}d}" if match[2] and isinstance(value, int) else str(value)

    return _TEMPLATE_FIELD.sub(one, template).replace("$$", "$")


def _timeline(template: ElementTree.Element, total: float | None) -> list[tuple[int, int]] | None:
    """``(start, duration)`` in timescale units of every segment of a template, or None if it cannot say."""
    timescale = int(template.get("timescale", "1"))
    timeline = template.find(f"{_MPD_NS}SegmentTimeline")
    if timeline is None:
        duration = _int_or_none(template.get("duration"))
        if duration is None or total is None:
            return None
        return [(i * duration, duration) for i in range(math.ceil(total * timescale / duration - 1e-9))]
    segments: list[tuple[int, int]] = []
    at = 0
    for entry in timeline.findall(f"{_MPD_NS}S"):
        at = int(entry.get("t", at))
        duration, repeat = int(entry.get("d", "0")), int(entry.get("r", "0"))
        if repeat < 0:  # until the end of the period
            repeat = math.ceil((total or 0) * timescale / duration) - len(segments) - 1 if duration else 0
        for _ in range(repeat + 1):
            segments.append((at, duration))
            at += duration
    return segments


def read_dash(package: Path, audio: bool, scratch: Path) -> Reading:
    """The MPD at the top of ``package``, each Representation's files; a scratch HLS playlist for each to decode."""
    reading = Reading()
    manifests = sorted(package.glob("*.mpd"))
    if len(manifests) != 1:
        found = ", ".join(p.name for p in manifests) if manifests else "none"
        reading.problems.append(f"the package needs exactly one DASH manifest (.mpd) at its top; found {found}")
        return reading
    mpd = manifests[0]
    try:
        root = ElementTree.parse(mpd).getroot()
    except ElementTree.ParseError as exc:
        reading.problems.append(f"{mpd.name} is not well-formed XML ({exc}); players reject it")
        return reading
    if root.tag != f"{_MPD_NS}MPD":
        reading.problems.append(f"{mpd.name} is not a DASH MPD (root element {root.tag})")
        return reading
    if root.get("type", "static") != "static":
        reading.problems.append(f"{mpd.name} is type={root.get('type')!r}; a finished package is static")
    total = _iso_duration(root.get("mediaPresentationDuration", ""))
    periods = root.findall(f"{_MPD_NS}Period")
    if len(periods) != 1:
        reading.problems.append(f"{mpd.name} has {len(periods)} Periods; a ladder package has exactly one")
        return reading
    if root.find(f".//{_MPD_NS}BaseURL") is not None:
        reading.problems.append(
            f"{mpd.name} uses BaseURL, which this check does not follow; name files relative to the MPD"
        )
    representations = [(adaptation, representation) for adaptation in periods[0].findall(f"{_MPD_NS}AdaptationSet")
                       for representation in adaptation.findall(f"{_MPD_NS}Representation")]
    for index, (adaptation, representation) in enumerate(representations):
        content = adaptation.get("contentType") or _inherited(representation, adaptation, "mimeType").split("/")[0]
        source = scratch / f"representation-{index}.m3u8"
        track = _representation(package, mpd.name, adaptation, representation, total, source, reading.problems)
        if track is not None and content == "video":
            reading.video.append(track)
            missing = [name for name, value in (
                ("width", track.declared.width), ("height", track.declared.height), ("frameRate", track.declared.fps),
                ("bandwidth", track.declared.bandwidth), ("codecs", track.declared.codecs or None),
            ) if value is None] if track.declared else []
            if missing:
                reading.problems.append(
                    f"{track.label} declares no {', '.join(missing)}; players choose and switch rungs by them"
                )
        elif track is not None and content == "audio":
            reading.audio.append(track)
    if audio and not reading.audio:
        reading.problems.append(f"{mpd.name} has no audio AdaptationSet though the input has audio")
    return reading


def _inherited(representation: ElementTree.Element, adaptation: ElementTree.Element, name: str) -> str:
    return representation.get(name) or adaptation.get(name) or ""


def _representation(
    package: Path, where: str, adaptation: ElementTree.Element, representation: ElementTree.Element,
    total: float | None, source: Path, problems: list[str],
) -> Track | None:
    """A Representation's files checked, and ``source`` written: a media playlist of them for FFmpeg to decode."""
    rep_id = representation.get("id", "")
    label = f"{where} Representation {rep_id!r}"
    template = representation.find(f"{_MPD_NS}SegmentTemplate")
    if template is None:
        template = adaptation.find(f"{_MPD_NS}SegmentTemplate")
    if template is None or template.get("media") is None:
        problems.append(f"{label} has no SegmentTemplate with a media attribute; this check reads only those")
        return None
    timeline = _timeline(template, total)
    if not timeline:
        problems.append(
            f"{label} lists no segments (no SegmentTimeline, or no duration with mediaPresentationDuration)"
        )
        return None
    timescale = int(template.get("timescale", "1"))
    bandwidth = representation.get("bandwidth", "")
    number = int(template.get("startNumber", "1"))
    init = template.get("initialization")
    names = [_fill(template.get("media", ""), rep_id, number + i, start, bandwidth)
             for i, (start, _) in enumerate(timeline)]
    located = [_locate(package, label, package, name) for name in ([_fill(init, rep_id, number, 0, bandwidth)] if init
                                                                     else []) + names]
    missing = [found for found in located if isinstance(found, str)]
    problems += missing
    segments = tuple(Segment(package / name, duration / timescale) for name, (_, duration) in zip(names, timeline))
    if not missing:
        header = f'#EXT-X-MAP:URI="{located[0]}"\n' if init else ""
        body = "".join(f"#EXTINF:{s.duration:.6f},\n{s.path}\n" for s in segments)
        target = math.ceil(max(s.duration for s in segments))
        source.write_text(f"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n"
                          f"#EXT-X-PLAYLIST-TYPE:VOD\n{header}{body}#EXT-X-ENDLIST\n")
    declared = Declared(
        where=where, width=_int_or_none(_inherited(representation, adaptation, "width")),
        height=_int_or_none(_inherited(representation, adaptation, "height")),
        fps=_frame_rate(_inherited(representation, adaptation, "frameRate") or None),
        codecs=_inherited(representation, adaptation, "codecs"), bandwidth=_int_or_none(bandwidth or None),
    )
    return Track(label, source, declared, segments, playable=not missing)


def read_files(package: Path) -> Reading:
    """One media file per rung at the top of ``package``."""
    files = sorted(p for p in package.iterdir() if p.suffix in _MEDIA_EXTENSIONS and p.is_file())
    reading = Reading(video=[Track(p.name, p) for p in files])
    if not files:
        reading.problems.append(f"the package holds no {' or '.join(_MEDIA_EXTENSIONS)} file at its top")
    return reading


# --- decoding (child processes) ------------------------------------------------------------------

_SHOWINFO = re.compile(r"\bpts_time:\s*(-?\d+(?:\.\d+)?)\s.*?duration_time:\s*(\d+(?:\.\d+)?).*?\biskey:([01])")
_PROFILE = re.compile(r"Video: [\w-]+ \(([^)]+)\)")


@attrs.define
class _DecodeLog:
    """FFmpeg's stderr for one decode, read line by line: the header and every frame's time and key flag."""

    header: list[str] = attrs.field(factory=list)
    in_header: bool = True
    frames: int = 0
    first: float | None = None
    end: float = 0.0
    key_times: list[float] = attrs.field(factory=list)
    tail: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES))

    def feed(self, line: str) -> None:
        if self.in_header:
            self.in_header = not line.startswith("Stream mapping:")
            self.header.append(line)
        if match := _SHOWINFO.search(line):
            at = float(match[1])
            self.first = at if self.first is None else min(self.first, at)
            self.end = max(self.end, at + float(match[2]))
            self.frames += 1
            if match[3] == "1":
                self.key_times.append(at)
        elif "Parsed_showinfo" not in line:
            self.tail.append(line)

    def decoded(self) -> Decoded:
        text = "\n".join(self.header)
        info = parse_media_info(text, progress_out_time=0.0, size_bytes=0)
        if info is None:
            raise DecodeFailed("no video stream")
        profile = _PROFILE.search(text)
        first = self.first or 0.0
        return Decoded(
            codec=_DECODED_CODEC.get(info.codec, info.codec), profile=profile[1] if profile else "",
            width=info.width, height=info.height, frames=self.frames, duration=self.end - first,
            key_times=tuple(sorted(t - first for t in self.key_times)), has_audio=bool(info.audio_codec),
        )


async def _run_decode(argv: list[str], on_line: Callable[[str], None], guardian: Guardian | None) -> tuple[int, bytes]:
    """Run a decode, handing each stderr line to ``on_line``; its exit code and stdout (``-progress``)."""
    stdout = bytearray()

    async def lines(stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        pending = b""
        async for chunk in stream:
            *complete, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in complete:
                on_line(line.decode("utf-8", "replace"))
        on_line(pending.decode("utf-8", "replace"))

    async def collect(stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        async for chunk in stream:
            stdout.extend(chunk)

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(partial(run_child, argv, guardian=guardian))
        nursery.start_soon(lines, process.stderr)
        nursery.start_soon(collect, process.stdout)
    return await process.wait(), bytes(stdout)


def _decode_argv(ffmpeg: str, source: Path, stream: str, filters: Sequence[str]) -> list[str]:
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-xerror", "-protocol_whitelist", LOCAL_PROTOCOLS, "-i", str(source),
        "-map", f"0:{stream}:0", *filters, "-progress", "pipe:1", "-nostats", "-f", "null", "-",
    ]


def _failure(returncode: int, tail: Iterable[str]) -> DecodeFailed:
    lines = [line for line in tail if line.strip()]
    return DecodeFailed(f"ffmpeg exit code {returncode}: {lines[-1].strip() if lines else 'no output'}")


async def decode_video(ffmpeg: str, source: Path, guardian: Guardian | None) -> Decoded:
    """Decode the first video stream of ``source`` in full.

    Raises:
        DecodeFailed: FFmpeg stopped on an error, or found no video.
    """
    log = _DecodeLog()
    argv = _decode_argv(ffmpeg, source, "v", ["-vf", "showinfo=checksum=0"])
    returncode, _ = await _run_decode(argv, log.feed, guardian)
    if returncode != 0:
        raise _failure(returncode, log.tail)
    return log.decoded()


async def decode_audio(ffmpeg: str, source: Path, guardian: Guardian | None) -> float:
    """Decode the first audio stream of ``source`` in full; its duration in seconds.

    Raises:
        DecodeFailed: FFmpeg stopped on an error, or found no audio.
    """
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    returncode, stdout = await _run_decode(_decode_argv(ffmpeg, source, "a", []), tail.append, guardian)
    if returncode != 0:
        raise _failure(returncode, tail)
    progress = ProgressParser()
    progress.feed(stdout + b"\n")
    return progress.latest.out_time_s if progress.latest is not None else 0.0


# --- comparing (plain code) ----------------------------------------------------------------------


@attrs.frozen
class Pair:
    """A rung of the ladder and the rendition of the package that plays it (None: not decodable)."""

    rung: ExpectedRung
    track: Track
    decoded: Decoded | None

    @property
    def name(self) -> str:
        return f"{self.rung.name} ({self.track.label})"


def match_rungs(
    rungs: Sequence[ExpectedRung], tracks: Sequence[tuple[Track, Decoded | None]],
) -> tuple[list[Pair], list[str]]:
    """Each rung paired with the rendition of its size (decoded, else declared); problems for the left-overs."""
    left = list(tracks)
    pairs, problems = [], []
    for rung in rungs:
        for index, (track, decoded) in enumerate(left):
            size = decoded.size if decoded is not None else track.declared.size if track.declared else None
            if size == rung.size:
                pairs.append(Pair(rung, track, decoded))
                del left[index]
                break
        else:
            problems.append(f"no rendition in the package plays {rung.name} ({rung.width}x{rung.height})")
    ladder = ", ".join(f"{r.width}x{r.height}" for r in rungs)
    for track, decoded in left:
        if decoded is not None:
            problems.append(
                f"{track.label} decodes as {decoded.width}x{decoded.height}, which is no rung of the ladder ({ladder})"
            )
    return pairs, problems


def rung_problems(pair: Pair, duration: float) -> list[str]:
    """A decoded rung against the ladder and against its manifest."""
    decoded, rung, declared = pair.decoded, pair.rung, pair.track.declared
    assert decoded is not None
    problems = []
    if decoded.codec != rung.codec:
        problems.append(f"{pair.name} is {decoded.codec}, not {rung.codec}")
    if abs(decoded.fps - rung.fps) > FPS_TOLERANCE * rung.fps:
        problems.append(f"{pair.name} plays at {decoded.fps:.3f} frames/s, not {rung.fps:g}")
    if abs(decoded.duration - duration) > DURATION_TOLERANCE_S:
        problems.append(f"{pair.name} lasts {decoded.duration:.2f} s, not {duration:.2f} s like the others")
    if declared is not None:
        problems += _declared_problems(pair.name, declared, decoded)
    return problems


def _declared_problems(name: str, declared: Declared, decoded: Decoded) -> list[str]:
    problems = []
    if declared.size is not None and declared.size != decoded.size:
        problems.append(
            f"{declared.where} declares {name} as {declared.width}x{declared.height}, "
            f"but it decodes as {decoded.width}x{decoded.height}"
        )
    if declared.fps is not None and abs(declared.fps - decoded.fps) > FPS_TOLERANCE * decoded.fps:
        problems.append(f"{declared.where} declares {name} at {declared.fps:g} frames/s, but it plays at "
                        f"{decoded.fps:.3f}")
    if declared.codecs:
        problems += _codecs_problems(name, declared, decoded)
    problems += _bandwidth_problems(name, declared)
    return problems


def _codecs_problems(name: str, declared: Declared, decoded: Decoded) -> list[str]:
    video = [c.strip() for c in declared.codecs.split(",") if c.strip()[:4] in _VIDEO_CODECS]
    if len(video) != 1 or _VIDEO_CODECS[video[0][:4]] != decoded.codec:
        return [f"{declared.where} declares CODECS {declared.codecs!r} for {name}, which decodes as {decoded.codec}; "
                "players may refuse it"]
    idc = _H264_PROFILE_IDC.get(decoded.profile)
    declared_idc = video[0][5:7]
    if decoded.codec == "h264" and idc is not None and declared_idc.lower() != f"{idc:02x}":
        return [f"{declared.where} declares {video[0]} for {name}, but its H.264 profile is {decoded.profile} "
                f"(avc1.{idc:02x}....); players may refuse it"]
    return []


def _bandwidth_problems(name: str, declared: Declared) -> list[str]:
    measured = declared.measured
    if measured is None or declared.bandwidth is None:
        return []
    problems = []
    if declared.bandwidth < measured.peak * (1 - BANDWIDTH_TOLERANCE):
        problems.append(
            f"{declared.where} declares BANDWIDTH={declared.bandwidth} for {name}, but its busiest segment "
            f"(with audio) needs {measured.peak:.0f} bit/s; players would pick it on links too slow for it"
        )
    average = declared.average_bandwidth
    if average is not None and abs(average - measured.average) > BANDWIDTH_TOLERANCE * measured.average:
        problems.append(
            f"{declared.where} declares AVERAGE-BANDWIDTH={average} for {name}, but it averages "
            f"{measured.average:.0f} bit/s (with audio)"
        )
    return problems


def _first_difference(ours: Sequence[float], theirs: Sequence[float], tolerance: float) -> tuple[str, str] | None:
    """The first time in one list and not in the other (as text, ``-`` for nothing), or None if they match."""
    for index in range(max(len(ours), len(theirs))):
        mine = ours[index] if index < len(ours) else None
        other = theirs[index] if index < len(theirs) else None
        if mine is None or other is None or abs(mine - other) > tolerance:
            return (f"{mine:.3f} s" if mine is not None else "none",
                    f"{other:.3f} s" if other is not None else "none")
    return None


def _misaligned(
    decoded: Sequence[tuple[Pair, Decoded]], times: Callable[[Pair, Decoded], Sequence[float]], tolerance: float,
) -> list[tuple[Pair, Pair, tuple[str, str]]]:
    """Each rung whose ``times`` differ from the first rung's over the time both last, with the first difference."""
    if not decoded:
        return []
    (reference, first), *others = decoded
    found = []
    for pair, mine in others:
        within = min(mine.duration, first.duration) - tolerance
        difference = _first_difference([t for t in times(pair, mine) if t < within],
                                        [t for t in times(reference, first) if t < within], tolerance)
        if difference is not None:
            found.append((pair, reference, difference))
    return found


def alignment_problems(pairs: Sequence[Pair]) -> list[str]:
    """Keyframes at the same times in every rung; every segment starting on a keyframe, at the same time in all.

    Times may differ by up to half a frame of the fastest rung: the same
    frame, written with each rung's time base. Two rungs are compared over
    the time both last, so a short rung is reported once, for its duration.
    """
    decoded = [(pair, pair.decoded) for pair in pairs if pair.decoded is not None]
    if not decoded:
        return []
    tolerance = 0.5 / max(pair.rung.fps for pair, _ in decoded)
    problems = [
        f"keyframes of {pair.name} are not aligned with {reference.name}: the first differing keyframe is at "
        f"{ours} against {theirs}; players switch rungs only at shared keyframes, so encode every rung with "
        "the same fixed keyframe interval"
        for pair, reference, (ours, theirs) in _misaligned(decoded, lambda _, d: d.key_times, tolerance)
    ]
    for pair, mine in decoded:
        for index, start in enumerate(pair.track.segment_starts()):
            if not any(abs(start - key) <= tolerance for key in mine.key_times):
                problems.append(f"segment {index + 1} of {pair.name} starts at {start:.3f} s, which is not a keyframe; "
                                "players cannot start decoding there")
                break
    segmented = [(pair, mine) for pair, mine in decoded if pair.track.segments]
    problems += [
        f"segment boundaries of {pair.name} are not aligned with {reference.name}: a segment starts at {ours} "
        f"against {theirs}; players switch rungs at segment boundaries"
        for pair, reference, (ours, theirs) in _misaligned(segmented, lambda p, _: p.track.segment_starts(), tolerance)
    ]
    return problems


# --- the check -----------------------------------------------------------------------------------


async def check_package(
    directory: Path,
    kind: PackageKind,
    rungs: Sequence[ExpectedRung],
    *,
    ffmpeg: str,
    duration: float | None,
    audio: bool,
    guardian: Guardian | None = None,
) -> list[str]:
    """Read ``directory`` as a player would and decode every rendition; one sentence per problem.

    Args:
        directory: the package, as it will be delivered.
        kind: ``hls`` (a master playlist at its top), ``dash`` (an MPD at its
            top) or ``files`` (one ``.mp4`` or ``.webm`` per rung at its top).
        rungs: the ladder; each is matched with the rendition of its size,
            so the order of the variants in the manifest does not matter.
        ffmpeg: the binary, from :func:`~agent.worker.engines.ffmpeg.find_ffmpeg`.
        duration: the seconds every rung must last (within
            :data:`DURATION_TOLERANCE_S`); None compares them with the longest rung.
        audio: the input has audio, so the package must carry it (an HLS audio
            group every variant names, a DASH audio AdaptationSet, an audio
            stream in each file).
        guardian: kills the decodes should the agent die; None outside an agent.

    Returns:
        Problems, each naming the rung or file and what is wrong; empty when
        a player would play every rung and switch between them.

    Raises:
        Cancelled: the decode running is killed first (no orphan).

    Example::

        problems = await check_package(out, "hls", [ExpectedRung.from_spec(s) for s in specs],
                                       ffmpeg=find_ffmpeg(), duration=10.0, audio=True)
    """
    with tempfile.TemporaryDirectory(prefix="package-check-") as scratch:
        if kind == "hls":
            reading = read_hls(directory, audio)
        elif kind == "dash":
            reading = read_dash(directory, audio, Path(scratch))
        else:
            reading = read_files(directory)
        problems = reading.problems
        if problems and not reading.video:
            return problems  # no manifest to follow: every rung missing would only repeat it
        decoded: list[tuple[Track, Decoded | None]] = []
        for track in reading.video:
            result = None
            if track.playable:
                try:
                    result = await decode_video(ffmpeg, track.source, guardian)
                except DecodeFailed as exc:
                    problems.append(f"{track.label} does not decode ({exc})")
            decoded.append((track, result))
        audio_durations = []
        for track in reading.audio:
            if track.playable:
                try:
                    audio_durations.append((track, await decode_audio(ffmpeg, track.source, guardian)))
                except DecodeFailed as exc:
                    problems.append(f"the audio rendition {track.label} does not decode ({exc})")
    pairs, unmatched = match_rungs(rungs, decoded)
    problems += unmatched
    playing = [pair for pair in pairs if pair.decoded is not None]
    expected = duration if duration is not None else max(
        (pair.decoded.duration for pair in playing if pair.decoded is not None), default=0.0)
    for pair in playing:
        problems += rung_problems(pair, expected)
        if kind == "files" and audio and pair.decoded is not None and not pair.decoded.has_audio:
            problems.append(f"{pair.name} has no audio, though the input has")
    for track, seconds in audio_durations:
        if abs(seconds - expected) > DURATION_TOLERANCE_S:
            problems.append(f"the audio rendition {track.label} lasts {seconds:.2f} s, not {expected:.2f} s")
    return problems + alignment_problems(pairs)
