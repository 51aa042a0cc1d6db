"""A DASH package read as a player reads it: the MPD, its Representations and their segments.

Each Representation gets a scratch HLS media playlist that lists its init
section and segments by absolute path, so FFmpeg decodes it with the same
demuxer as an HLS rendition, from exactly the files the MPD names.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from .manifest import int_or_none, locate, number_or_none
from .model import Declared, Reading, Segment, Track

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
    rate = number_or_none(numerator)
    divisor = number_or_none(denominator) if denominator else 1.0
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
        duration = int_or_none(template.get("duration"))
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
    located = [locate(package, label, package, name) for name in ([_fill(init, rep_id, number, 0, bandwidth)] if init
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
        where=where, width=int_or_none(_inherited(representation, adaptation, "width")),
        height=int_or_none(_inherited(representation, adaptation, "height")),
        fps=_frame_rate(_inherited(representation, adaptation, "frameRate") or None),
        codecs=_inherited(representation, adaptation, "codecs"), bandwidth=int_or_none(bandwidth or None),
    )
    return Track(label, source, declared, segments, playable=not missing)
