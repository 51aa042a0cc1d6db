"""HLS playlists read and rewritten so that FFmpeg plays a local copy.

FFmpeg would fetch every segment, key and init section of a playlist by
itself, resolving each host again and reaching whatever the playlist names.
Instead the worker fetches each of them through its address check
(``agent.worker.fetch``) and hands FFmpeg a playlist whose every URI is a
local file name. This module is the plain part of that: which URIs a playlist
needs, and the same playlist pointing at local names.

What is supported, and why the rest is refused as the job's fault:

- a media playlist with ``#EXT-X-ENDLIST`` (video on demand): its segments,
  ``#EXT-X-KEY`` keys and ``#EXT-X-MAP`` init sections are fetched;
  byte ranges keep working, as they refer to the local copy;
- a master playlist: the variant with the highest ``BANDWIDTH`` is used,
  as a transcoding job wants the best picture; alternative renditions
  (``#EXT-X-MEDIA``) are not fetched, so audio that only exists there is lost;
- live playlists (no ``#EXT-X-ENDLIST``) are refused: FFmpeg would wait for
  a local copy to grow that nothing updates; stream live input over RTMP or SRT;
- low-latency parts, preload hints and rendition reports are dropped: the
  full segments carry the same media.

DASH manifests are refused (:func:`looks_like_dash`): a manifest's segment
addresses come from templates, nested base URLs and periods, and rewriting
that correctly is a large surface for little gain when MP4 and HLS inputs
cover the same media.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

__all__ = [
    "MAX_RESOURCES",
    "PlaylistRejected",
    "Resource",
    "best_variant",
    "looks_like_dash",
    "looks_like_playlist",
    "media_resources",
    "rewrite_media",
]

# Segments, keys and init sections one playlist may need: ten hours of 2 s
# segments, far past any job, and a bound on the requests one job makes.
MAX_RESOURCES = 20_000

_URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')
_BANDWIDTH = re.compile(r"(?:^|[:,])BANDWIDTH=(\d+)")
# Tags whose URI FFmpeg reads in a media playlist; other tags with a URI are dropped.
_FETCHED_TAGS = {"#EXT-X-KEY": "key", "#EXT-X-MAP": "map"}


class PlaylistRejected(ValueError):
    """The playlist is of a kind this worker does not play; the message says which and what to give instead."""


@attrs.frozen
class Resource:
    """A URI a media playlist needs, as written in it (maybe relative), and what it is."""

    uri: str
    kind: str  # "segment", "key" or "map"


def _strip(head: bytes) -> bytes:
    return head.removeprefix(b"\xef\xbb\xbf").lstrip()


def looks_like_playlist(head: bytes) -> bool:
    """Whether a body starting with ``head`` is an HLS playlist, whatever its URL or content type says.

    Sniffing the body, not trusting the name, means a playlist served as
    ``clip.mp4`` is still rewritten before FFmpeg sees it.
    """
    return _strip(head).startswith(b"#EXTM3U")


def looks_like_dash(head: bytes) -> bool:
    """Whether a body starting with ``head`` is a DASH manifest (an XML ``MPD`` element)."""
    body = _strip(head)
    return body.startswith(b"<") and b"<MPD" in body


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def best_variant(text: str) -> str | None:
    """The URI of the highest-bandwidth variant of a master playlist, or None for a media playlist.

    Raises:
        PlaylistRejected: a master playlist that lists no variant URI.
    """
    lines = _lines(text)
    if not any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        return None
    best: tuple[int, str] | None = None
    bandwidth: int | None = None
    for line in lines:
        if line.startswith("#EXT-X-STREAM-INF"):
            match = _BANDWIDTH.search(line)
            bandwidth = int(match[1]) if match else 0
        elif line and not line.startswith("#") and bandwidth is not None:
            if best is None or bandwidth > best[0]:
                best = (bandwidth, line)
            bandwidth = None
    if best is None:
        raise PlaylistRejected("the HLS master playlist lists no variant playlist")
    return best[1]


def media_resources(text: str) -> list[Resource]:
    """Every URI a video-on-demand media playlist needs, in order, each once.

    Raises:
        PlaylistRejected: a live playlist, a master playlist given as a
            variant, no segment at all, or more than :data:`MAX_RESOURCES`.
    """
    lines = _lines(text)
    if any(line.startswith("#EXT-X-STREAM-INF") for line in lines):
        raise PlaylistRejected("an HLS variant playlist is itself a master playlist; give a media playlist")
    if "#EXT-X-ENDLIST" not in lines:
        raise PlaylistRejected(
            "live HLS playlists (no #EXT-X-ENDLIST) are not supported; give a finished (VOD) playlist, "
            "or stream live input over rtmp or srt"
        )
    resources: list[Resource] = []
    seen: set[str] = set()
    for line in lines:
        tag = line.partition(":")[0]
        match = _URI_ATTRIBUTE.search(line) if tag in _FETCHED_TAGS else None
        if match:
            found = Resource(match[1], _FETCHED_TAGS[tag])
        elif line and not line.startswith("#"):
            found = Resource(line, "segment")
        else:
            continue
        if found.uri not in seen:
            seen.add(found.uri)
            resources.append(found)
    if not any(r.kind == "segment" for r in resources):
        raise PlaylistRejected("the HLS playlist lists no segment")
    if len(resources) > MAX_RESOURCES:
        raise PlaylistRejected(f"the HLS playlist needs {len(resources)} files; at most {MAX_RESOURCES} are fetched")
    return resources


def rewrite_media(text: str, names: Mapping[str, str]) -> str:
    """The media playlist with every fetched URI replaced by its local name from ``names``.

    Tags naming a URI that is not fetched (parts, preload hints, rendition
    reports) are dropped, so the local playlist names nothing but local files.
    """
    out: list[str] = []
    for line in _lines(text):
        tag = line.partition(":")[0]
        if line.startswith("#"):
            match = _URI_ATTRIBUTE.search(line)
            if match is None:
                out.append(line)
            elif tag in _FETCHED_TAGS:
                out.append(line[: match.start(1)] + names[match[1]] + line[match.end(1):])
        elif line:
            out.append(names[line])
    return "\n".join(out) + "\n"
