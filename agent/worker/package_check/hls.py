"""An HLS package read as a player reads it: the master playlist, its variants and audio, their segments."""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from pathlib import Path

from agent.worker.hls import PlaylistRejected, media_resources

from .manifest import int_or_none, locate, number_or_none
from .model import VIDEO_CODECS, Bitrate, Declared, Reading, Segment, Track

# RFC 6381 sample entries of audio: a variant that plays an audio group must list one in CODECS.
_AUDIO_CODECS = ("mp4a", "opus", "ac-3", "ec-3", "flac", "mp3")

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_EXTINF = re.compile(r"^#EXTINF:\s*(\d+(?:\.\d+)?)")


def attribute_list(text: str) -> dict[str, str]:
    """An HLS attribute list (``BANDWIDTH=1,CODECS="a,b"``) as a dict in its order, values as written (quoted)."""
    return dict(_ATTRIBUTE.findall(text))


def _attributes(text: str) -> dict[str, str]:
    """An HLS attribute list's values, quotes removed."""
    return {key: value.strip('"') for key, value in attribute_list(text).items()}


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
    missing = [found for r in resources if isinstance(found := locate(package, label, base, r.uri), str)]
    problems += missing
    return tuple(_media_segments(text, base)), not missing


def _is_video(codecs: str, resolution: str | None) -> bool:
    return resolution is not None or any(c.strip()[:4] in VIDEO_CODECS for c in codecs.split(",") if c.strip())


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
        path = locate(package, master.name, package, uri)
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
        path = locate(package, master.name, package, uri)
        if isinstance(path, str):
            reading.problems.append(path)
            continue
        segments, complete = _read_media_playlist(package, path, uri, reading.problems)
        measured = _bitrate(segments) if complete else None
        if measured is not None and group in groups and all(u in audio_bitrates for u in groups[group]):
            measured += max((audio_bitrates[u] for u in groups[group]), key=lambda b: b.peak)
        width, height = _size(attributes.get("RESOLUTION"))
        declared = Declared(
            where=master.name, width=width, height=height, fps=number_or_none(attributes.get("FRAME-RATE")),
            codecs=attributes.get("CODECS", ""), bandwidth=int_or_none(attributes.get("BANDWIDTH")),
            average_bandwidth=int_or_none(attributes.get("AVERAGE-BANDWIDTH")), measured=measured,
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
    init section is left out, as players fetch it once. The ladder writes
    these values into its master playlist
    (:func:`~agent.worker.engines.ffmpeg_ladder.finish_master_playlist`), and
    :func:`read_hls` measures the same way, so the two cannot disagree.

    Raises:
        OSError: the playlist or a segment cannot be read.
    """
    return _bitrate(_media_segments(media_playlist.read_text(), media_playlist.parent))
