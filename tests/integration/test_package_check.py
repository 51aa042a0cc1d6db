"""Ladders packaged by FFmpeg itself, read and decoded by the player check (agent/worker/package_check/).

Each package is three tiny rungs (320x180, 256x144, 160x90 at 10 fps, one
keyframe a second, 1 s segments) of a 4 s clip with audio, made once per
module with FFmpeg directly, so the check is tested against FFmpeg's own
muxers and not against the ladder code it guards. Each broken package is a
copy of a good one with one fault; its problems must name that fault.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from agent.worker.package_check import ExpectedRung, PackageKind, check_package, measure_hls_bitrate

DURATION_S = 4.0
SIZES = ((320, 180), (256, 144), (160, 90))
RUNGS = [ExpectedRung(f"{height}p10-h264", width, height, 10.0, "h264") for width, height in SIZES]
# Generous for a few tiny decodes, tight enough to stop a hung one.
CHECK_TIMEOUT_S = 30


def encode_ladder(ffmpeg: str, *muxing: str, gop: Sequence[int] = (10, 10, 10), seconds: float = DURATION_S) -> None:
    """One FFmpeg process: a clip with audio split into the three rungs, then muxed as ``muxing`` says."""
    splits = "".join(f"[s{i}]" for i in range(len(SIZES)))
    scales = ";".join(f"[s{i}]scale={w}:{h}[v{i}]" for i, (w, h) in enumerate(SIZES))
    argv = [
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{seconds:g}",
        "-filter_complex", f"[0:v]split={len(SIZES)}{splits};{scales}",
    ]
    for index in range(len(SIZES)):
        argv += ["-map", f"[v{index}]"]
    argv += ["-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k"]
    for index, keyint in enumerate(gop):
        argv += [f"-g:v:{index}", str(keyint), f"-keyint_min:v:{index}", str(keyint), f"-b:v:{index}", f"{300 - 90 * index}k"]
    subprocess.run([*argv, *muxing], check=True, timeout=60)


def make_hls(ffmpeg: str, out: Path, gop: Sequence[int] = (10, 10, 10)) -> Path:
    """FFmpeg's HLS muxer, then the master playlist completed as a packager must: FRAME-RATE and measured bandwidths."""
    out.mkdir()
    stream_map = " ".join(f"v:{i},agroup:aud" for i in range(len(SIZES))) + " a:0,agroup:aud,name:audio"
    encode_ladder(
        ffmpeg, "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
        "-master_pl_name", "master.m3u8", "-var_stream_map", stream_map,
        "-hls_segment_filename", str(out / "stream_%v" / "seg_%03d.m4s"), str(out / "stream_%v" / "index.m3u8"),
        gop=gop,
    )
    audio = measure_hls_bitrate(out / "stream_audio" / "index.m3u8")
    master = out / "master.m3u8"

    def complete(match: re.Match[str]) -> str:
        measured = measure_hls_bitrate(out / match["uri"]) + audio
        return (f"#EXT-X-STREAM-INF:BANDWIDTH={round(measured.peak)},AVERAGE-BANDWIDTH={round(measured.average)},"
                f"{match['rest']},FRAME-RATE=10.000\n{match['uri']}")

    text = re.sub(r"#EXT-X-STREAM-INF:BANDWIDTH=\d+,AVERAGE-BANDWIDTH=\d+,(?P<rest>RESOLUTION=.*)\n(?P<uri>\S+)",
                  complete, master.read_text())
    master.write_text(text)
    return out


def make_dash(ffmpeg: str, out: Path) -> Path:
    out.mkdir()
    encode_ladder(ffmpeg, "-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "1",
                  "-adaptation_sets", "id=0,streams=v id=1,streams=a", str(out / "manifest.mpd"))
    return out


def make_files(ffmpeg: str, out: Path) -> Path:
    """One MP4 per rung, each with the audio, from separate encodes of the same clip."""
    out.mkdir()
    for index, (width, height) in enumerate(SIZES):
        subprocess.run([
            ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=10",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", f"{DURATION_S:g}",
            "-vf", f"scale={width}:{height}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "10",
            "-keyint_min", "10", "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k",
            str(out / f"rung{index}.mp4"),
        ], check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def packages(ffmpeg: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("packages")
    return {
        "hls": make_hls(ffmpeg, base / "hls"),
        "dash": make_dash(ffmpeg, base / "dash"),
        "files": make_files(ffmpeg, base / "files"),
    }


def copy_of(packages: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(packages[kind], tmp_path / kind))


async def check(ffmpeg: str, directory: Path, kind: PackageKind, rungs: Sequence[ExpectedRung] = RUNGS) -> list[str]:
    with trio.fail_after(CHECK_TIMEOUT_S):
        return await check_package(directory, kind, rungs, ffmpeg=ffmpeg, duration=DURATION_S, audio=True)


def the_one_about(problems: list[str], *words: str) -> str:
    """The problem that mentions every word; fails listing them all when none does."""
    found = [problem for problem in problems if all(word in problem for word in words)]
    assert found, f"no problem mentions {words}; problems: {problems}"
    return found[0]


@pytest.mark.parametrize("kind", ["hls", "dash", "files"])
async def test_a_good_ladder_passes_every_check(ffmpeg: str, packages: dict[str, Path], kind: PackageKind) -> None:
    """Three aligned rungs with audio, packaged by FFmpeg: no problem, in any order of the expected rungs."""
    assert await check(ffmpeg, packages[kind], kind, list(reversed(RUNGS))) == []


@pytest.mark.parametrize(("kind", "lost", "expected"), [
    ("hls", "stream_1/seg_002.m4s", ["stream_1/index.m3u8 names 'seg_002.m4s', which is missing from the package"]),
    ("dash", "chunk-stream1-*.m4s", [
        f"manifest.mpd Representation '1' names 'chunk-stream1-0000{n}.m4s', which is missing from the package"
        for n in range(1, 5)
    ]),
])
async def test_missing_segments_are_named_and_their_rung_not_decoded(
    ffmpeg: str, packages: dict[str, Path], tmp_path: Path, kind: PackageKind, lost: str, expected: list[str]
) -> None:
    """One HLS segment, or all of a DASH Representation's, deleted: each missing file is named, no decode noise."""
    package = copy_of(packages, kind, tmp_path)
    for segment in package.glob(lost):
        segment.unlink()
    assert await check(ffmpeg, package, kind) == expected


async def test_a_wrong_resolution_in_the_master_playlist_is_named(
    ffmpeg: str, packages: dict[str, Path], tmp_path: Path
) -> None:
    """RESOLUTION=256x140 for the 256x144 rung: the declared and the decoded sizes are both named."""
    package = copy_of(packages, "hls", tmp_path)
    master = package / "master.m3u8"
    master.write_text(master.read_text().replace("RESOLUTION=256x144", "RESOLUTION=256x140"))
    problems = await check(ffmpeg, package, "hls")
    assert problems == [
        "master.m3u8 declares 144p10-h264 (stream_1/index.m3u8) as 256x140, but it decodes as 256x144"
    ]


async def test_a_rung_with_another_keyframe_interval_is_not_aligned(ffmpeg: str, tmp_path: Path) -> None:
    """One rung with a keyframe every 1.5 s instead of 1 s: its keyframes and segment starts differ from the first rung's."""
    package = make_hls(ffmpeg, tmp_path / "hls", gop=(10, 15, 10))
    problems = await check(ffmpeg, package, "hls")
    keyframes = the_one_about(problems, "keyframes of 144p10-h264 (stream_1/index.m3u8) are not aligned")
    assert "180p10-h264 (stream_0/index.m3u8)" in keyframes and "1.500 s against 1.000 s" in keyframes
    the_one_about(problems, "segment boundaries of 144p10-h264", "not aligned")
    assert not any("90p10-h264 (stream_2" in problem for problem in problems), problems


async def test_a_rung_shorter_than_the_others_is_named_with_its_duration(
    ffmpeg: str, packages: dict[str, Path], tmp_path: Path
) -> None:
    """One file of 2 s among 4 s ones: the rung, its duration and the expected one are named."""
    package = copy_of(packages, "files", tmp_path)
    shorter = tmp_path / "short.mp4"
    subprocess.run([
        ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(package / "rung2.mp4"), "-t", "2", "-c", "copy",
        str(shorter),
    ], check=True, timeout=60)
    shorter.replace(package / "rung2.mp4")
    problems = await check(ffmpeg, package, "files")
    assert problems == ["90p10-h264 (rung2.mp4) lasts 2.00 s, not 4.00 s like the others"]


async def test_a_ladder_without_its_audio_group_says_it_would_play_silent(
    ffmpeg: str, packages: dict[str, Path], tmp_path: Path
) -> None:
    """The master playlist's EXT-X-MEDIA line removed from an input with audio: the missing rendition is named."""
    package = copy_of(packages, "hls", tmp_path)
    master = package / "master.m3u8"
    master.write_text("".join(line for line in master.read_text().splitlines(keepends=True)
                              if not line.startswith("#EXT-X-MEDIA")))
    problems = await check(ffmpeg, package, "hls")
    the_one_about(problems, "master.m3u8 has no audio rendition")
    the_one_about(problems, "variant stream_0/index.m3u8", "would play silent")


async def test_codecs_that_do_not_match_the_stream_are_named(
    ffmpeg: str, packages: dict[str, Path], tmp_path: Path
) -> None:
    """CODECS saying High profile (avc1.64...) for a Constrained Baseline stream: players may refuse it."""
    package = copy_of(packages, "hls", tmp_path)
    master = package / "master.m3u8"
    master.write_text(re.sub(r"avc1\.42c00d", "avc1.64001f", master.read_text(), count=1))
    problems = await check(ffmpeg, package, "hls")
    assert len(problems) == 1 and "declares avc1.64001f for 180p10-h264" in problems[0], problems
    assert "Constrained Baseline" in problems[0]


async def test_a_missing_rung_and_an_extra_rendition_are_both_named(ffmpeg: str, packages: dict[str, Path]) -> None:
    """A ladder asking for 640x360 where the package has 320x180: the rung is missing, the rendition is no rung."""
    rungs = [ExpectedRung("360p10-h264", 640, 360, 10.0, "h264"), *RUNGS[1:]]
    problems = await check(ffmpeg, packages["files"], "files", rungs)
    assert problems == [
        "no rendition in the package plays 360p10-h264 (640x360)",
        "rung0.mp4 decodes as 320x180, which is no rung of the ladder (640x360, 256x144, 160x90)",
    ]
