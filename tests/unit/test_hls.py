"""Reading and rewriting HLS playlists (agent/worker/hls.py)."""

from __future__ import annotations

import pytest

from agent.worker.hls import (
    PlaylistRejected,
    Resource,
    best_variant,
    looks_like_dash,
    looks_like_playlist,
    media_resources,
    rewrite_media,
)

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MAP:URI="init.mp4"
#EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/k1",IV=0x01
#EXTINF:2.0,
seg0.m4s
#EXT-X-PART:DURATION=1,URI="part0.m4s"
#EXTINF:2.0,
http://cdn.example/seg1.m4s
#EXT-X-BYTERANGE:100@0
#EXTINF:2.0,
seg0.m4s
#EXT-X-ENDLIST
"""


def test_a_playlist_is_known_by_its_body_not_its_name() -> None:
    """#EXTM3U, after a BOM or blank lines, is a playlist; an MPD element is DASH."""
    assert looks_like_playlist(b"\xef\xbb\xbf\n#EXTM3U\n") and not looks_like_playlist(b"\x00\x00\x00\x18ftypmp42")
    assert looks_like_dash(b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">')
    assert not looks_like_dash(b"#EXTM3U")


def test_the_master_playlist_gives_its_highest_bandwidth_variant() -> None:
    """The best picture wins; a media playlist has no variant."""
    master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow.m3u8\n" \
             "#EXT-X-STREAM-INF:AVERAGE-BANDWIDTH=1,BANDWIDTH=5000000\nhigh/index.m3u8\n"
    assert best_variant(master) == "high/index.m3u8"
    assert best_variant(MEDIA) is None


def test_a_media_playlist_needs_its_segments_keys_and_init_section_once_each() -> None:
    """In order, duplicates (byte ranges of one file) once; parts are not fetched."""
    assert media_resources(MEDIA) == [
        Resource("init.mp4", "map"), Resource("https://keys.example/k1", "key"),
        Resource("seg0.m4s", "segment"), Resource("http://cdn.example/seg1.m4s", "segment"),
    ]


def test_the_rewritten_playlist_names_only_local_files() -> None:
    """Every URI replaced, attributes kept, tags with unfetched URIs dropped."""
    names = {"init.mp4": "map0.mp4", "https://keys.example/k1": "key1.key", "seg0.m4s": "segment2.m4s",
             "http://cdn.example/seg1.m4s": "segment3.m4s"}
    local = rewrite_media(MEDIA, names)
    assert '#EXT-X-MAP:URI="map0.mp4"' in local and '#EXT-X-KEY:METHOD=AES-128,URI="key1.key",IV=0x01' in local
    assert "part0" not in local and "example" not in local
    assert local.count("segment2.m4s") == 2 and "#EXT-X-BYTERANGE:100@0" in local


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#EXTM3U\n#EXTINF:2,\na.ts\n", "live HLS playlists"),
        ("#EXTM3U\n#EXT-X-ENDLIST\n", "no segment"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n#EXT-X-ENDLIST\n", "master playlist"),
    ],
)
def test_playlists_we_do_not_play_are_refused_with_the_reason(text: str, message: str) -> None:
    """Live, empty, and nested master playlists."""
    with pytest.raises(PlaylistRejected, match=message):
        media_resources(text)
