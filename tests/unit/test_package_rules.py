"""The player check's plain parts: manifests read from small hand-written files, decodes given as facts.

The decodes themselves (FFmpeg) are tested in tests/integration/test_package_check.py.
"""

from __future__ import annotations

from pathlib import Path

from agent.worker import package_check
from agent.worker.package_check import (
    Decoded,
    ExpectedRung,
    Pair,
    Segment,
    Track,
    alignment_problems,
    match_rungs,
    read_dash,
    rung_problems,
)

TOP = ExpectedRung("720p30-h264", 1280, 720, 30.0, "h264")
LOW = ExpectedRung("360p30-h264", 640, 360, 30.0, "h264")


def decoded(width: int, height: int, keys: tuple[float, ...] = (0.0, 2.0, 4.0), duration: float = 6.0) -> Decoded:
    return Decoded(codec="h264", profile="High", width=width, height=height, frames=round(30 * duration),
                   duration=duration, key_times=keys, has_audio=False)


def track(label: str, starts: tuple[float, ...] = ()) -> Track:
    segments = tuple(Segment(Path(f"{label}-{i}.m4s"), 2.0) for i, _ in enumerate(starts))
    return Track(label, Path(label), segments=segments)


def test_rungs_of_the_same_size_are_matched_in_ladder_order() -> None:
    """Two 640x360 rungs (two bitrates) take the two 640x360 renditions in turn; nothing is left over."""
    second = ExpectedRung("360p30-h264@400k", 640, 360, 30.0, "h264")
    tracks = [(track("a"), decoded(640, 360)), (track("b"), decoded(640, 360))]
    pairs, problems = match_rungs([LOW, second], tracks)
    assert problems == []
    assert [(pair.rung.name, pair.track.label) for pair in pairs] == [("360p30-h264", "a"), ("360p30-h264@400k", "b")]


def test_keyframes_within_half_a_frame_are_the_same_keyframe() -> None:
    """10 ms apart at 30 fps (half a frame is 16.7 ms): aligned; two rungs cut alike pass."""
    pairs = [
        Pair(TOP, track("top", (0.0, 2.0, 4.0)), decoded(1280, 720)),
        Pair(LOW, track("low", (0.0, 2.0, 4.0)), decoded(640, 360, keys=(0.0, 2.01, 4.0))),
    ]
    assert alignment_problems(pairs) == []


def test_a_keyframe_a_frame_late_is_named_with_both_times() -> None:
    """One keyframe 33 ms late: the rung, the reference and both times; its segment starting there is named too."""
    pairs = [
        Pair(TOP, track("top", (0.0, 2.0, 4.0)), decoded(1280, 720)),
        Pair(LOW, track("low", (0.0, 2.0, 4.0)), decoded(640, 360, keys=(0.0, 2.033, 4.0))),
    ]
    assert alignment_problems(pairs) == [
        "keyframes of 360p30-h264 (low) are not aligned with 720p30-h264 (top): the first differing keyframe is at "
        "2.033 s against 2.000 s; players switch rungs only at shared keyframes, so encode every rung with the same "
        "fixed keyframe interval",
        "segment 2 of 360p30-h264 (low) starts at 2.000 s, which is not a keyframe; players cannot start decoding there",
    ]


def test_a_short_rung_is_reported_for_its_duration_only() -> None:
    """A rung that stops at 3 s: its duration is wrong, its keyframes up to there are not called misaligned."""
    short = Pair(LOW, track("low", (0.0, 2.0)), decoded(640, 360, keys=(0.0, 2.0), duration=3.0))
    pairs = [Pair(TOP, track("top", (0.0, 2.0, 4.0)), decoded(1280, 720)), short]
    assert alignment_problems(pairs) == []
    assert rung_problems(short, 6.0) == ["360p30-h264 (low) lasts 3.00 s, not 6.00 s like the others"]


MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT5.0S">
  <Period>
    <AdaptationSet contentType="video" frameRate="30000/1001">
      <SegmentTemplate timescale="1000" initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/$Time$-$$.m4s">
        <SegmentTimeline><S t="0" d="2000" r="-1"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="v1" width="1280" height="720" bandwidth="2500000" codecs="avc1.64001f"/>
    </AdaptationSet>
  </Period>
</MPD>
"""


def test_an_mpd_template_with_time_an_escaped_dollar_and_a_repeat_to_the_end_is_expanded(tmp_path: Path) -> None:
    """$Time$, $$ and r=-1 over a 5 s period: three segments at 0, 2000 and 4000; the frame rate inherited."""
    (tmp_path / "manifest.mpd").write_text(MPD)
    (tmp_path / "v1").mkdir()
    for name in ("init.mp4", "0-$.m4s", "2000-$.m4s", "4000-$.m4s"):
        (tmp_path / "v1" / name).write_bytes(b"x")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    reading = read_dash(tmp_path, audio=False, scratch=scratch)
    assert reading.problems == []
    [video] = reading.video
    assert [segment.path.name for segment in video.segments] == ["0-$.m4s", "2000-$.m4s", "4000-$.m4s"]
    assert video.declared is not None and round(video.declared.fps or 0, 3) == 29.97
    playlist = video.source.read_text()
    assert f'#EXT-X-MAP:URI="{tmp_path.resolve() / "v1" / "init.mp4"}"' in playlist and playlist.endswith(
        "#EXT-X-ENDLIST\n")


def test_an_mpd_naming_a_file_outside_the_package_is_refused(tmp_path: Path) -> None:
    """A template reaching ../ : a player of the package could not fetch it, so it is a problem, never read."""
    (tmp_path / "manifest.mpd").write_text(MPD.replace("$RepresentationID$/$Time$", "../$Time$"))
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "init.mp4").write_bytes(b"x")
    reading = read_dash(tmp_path, audio=False, scratch=tmp_path)
    assert reading.problems[0] == (
        "manifest.mpd Representation 'v1' names '../0-$.m4s', which is not a file inside the package; "
        "players could not fetch it"
    )
    assert not reading.video[0].playable


def test_the_public_names_are_pinned() -> None:
    """The package's surface is its __all__; adding or dropping an export is a deliberate change."""
    assert sorted(package_check.__all__) == [
        "BANDWIDTH_TOLERANCE", "Bitrate", "DURATION_TOLERANCE_S", "Declared", "DecodeFailed", "Decoded",
        "ExpectedRung", "FPS_TOLERANCE", "PackageKind", "Pair", "Reading", "Segment", "Track", "alignment_problems",
        "check_package", "decode_audio", "decode_video", "match_rungs", "measure_hls_bitrate", "read_dash",
        "read_files", "read_hls", "rung_problems",
    ]
    assert all(hasattr(package_check, name) for name in package_check.__all__)
