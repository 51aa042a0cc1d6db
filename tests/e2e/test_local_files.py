"""``python -m agent local --input``: a user's own files, transcoded where they are, into an output directory.

Real processes and the real FFmpeg: each test makes its clips with FFmpeg
(a test pattern with a sine tone, so they have audio), runs ``local`` as a
user would, from the test's own directory, and reads what it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.worker.engines.ffmpeg import decodes_cleanly, probe_media
from tests.support import Answer, make_clip_with_audio, run_command

pytestmark = pytest.mark.timeout(120)

SCENARIO = "144p30-h264"
CLIP_SECONDS = 2.0


async def local(cwd: Path, *args: str) -> Answer:
    """``python -m agent local ARGS`` run from ``cwd`` to its end, with its own work dir."""
    return await run_command("local", "--work-dir", str(cwd / "work"), *args, cwd=cwd)


async def make_clip(ffmpeg: str, path: Path) -> Path:
    """A small clip with a video and an audio stream, CLIP_SECONDS long."""
    return await make_clip_with_audio(ffmpeg, path, size="160x90", seconds=CLIP_SECONDS)


async def assert_transcoded_whole_with_audio(ffmpeg: str, output: Path) -> None:
    info = await probe_media(ffmpeg, output)
    assert (info.codec, info.height, info.audio_codec) == ("h264", 144, "aac"), info
    assert info.duration == pytest.approx(CLIP_SECONDS, abs=0.1), info
    assert await decodes_cleanly(ffmpeg, output)


async def test_a_clip_with_audio_is_transcoded_whole_with_its_audio_into_the_output_directory(
    tmp_path: Path, ffmpeg: str
) -> None:
    """<stem>.<scenario>.mp4 in ./ffrtmp-output by default: as long as the input, with sound, listed in the table."""
    clip = await make_clip(ffmpeg, tmp_path / "media" / "holiday clip.mov")
    answer = await local(tmp_path, "--input", str(clip), "--scenario", SCENARIO)
    output = tmp_path / "ffrtmp-output" / f"holiday_clip.{SCENARIO}.mp4"
    assert answer.code == 0, answer
    assert str(output) in answer.out and "whole input" in answer.out, answer.out
    await assert_transcoded_whole_with_audio(ffmpeg, output)
    # Read in place: the input was not copied into the work dir.
    assert not [p for p in (tmp_path / "work").rglob("*") if p.is_file() and p.suffix == ".mov"]


async def test_each_media_file_in_a_directory_is_one_job(tmp_path: Path, ffmpeg: str) -> None:
    """Two clips and a text file in a directory: two outputs in --output-dir, each whole with audio."""
    media = tmp_path / "media"
    for name in ("first.mp4", "second.MKV"):
        await make_clip(ffmpeg, media / name)
    (media / "notes.txt").write_text("not media")
    out = tmp_path / "out"
    answer = await local(tmp_path, "--input", str(media), "--output-dir", str(out), "--scenario", SCENARIO)
    assert answer.code == 0, answer
    assert "Running 2 files" in answer.out and "2/2 jobs completed" in answer.out, answer.out
    assert sorted(p.name for p in out.iterdir()) == [f"first.{SCENARIO}.mp4", f"second.{SCENARIO}.mp4"]
    for output in out.iterdir():
        await assert_transcoded_whole_with_audio(ffmpeg, output)


async def test_a_local_file_given_as_a_param_runs_as_an_input(tmp_path: Path, ffmpeg: str) -> None:
    """--param input=PATH is --input PATH: no longer 'local files are not allowed'; --duration cuts it."""
    clip = await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    out = tmp_path / "out"
    answer = await local(tmp_path, "--param", f"input={clip}", "--output-dir", str(out), "--scenario", SCENARIO,
                         "--duration", "1")
    assert answer.code == 0, answer
    info = await probe_media(ffmpeg, out / f"clip.{SCENARIO}.mp4")
    assert info.duration == pytest.approx(1.0, abs=0.1) and info.audio_codec == "aac", info


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--input", "{tmp}/missing.mp4"], "--input {tmp}/missing.mp4: no such file or directory"),
        (["--input", "{tmp}/docs"], "--input {tmp}/docs: no media files directly in this directory"),
        (["--input", "{tmp}/docs/readme.txt", "--jobs", "2"], "--jobs 2: counts jobs on the generated clip"),
        (["--input", "{tmp}/docs/readme.txt", "--output-dir", "{tmp}/docs/readme.txt/out"],
         "--output-dir {tmp}/docs/readme.txt/out: cannot create it"),
        (["--input", "{tmp}/docs/a/clip.mp4", "--input", "{tmp}/docs/b/clip.mov"], "would both write"),
    ],
    ids=["missing-input", "no-media-in-directory", "jobs-with-input", "unwritable-output-dir", "same-stem"],
)
async def test_a_bad_input_or_output_directory_is_one_error_line_before_anything_runs(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """Exit 2, one line naming the flag and the path, nothing on stdout, no job run."""
    docs = tmp_path / "docs"
    for path in (docs / "readme.txt", docs / "a" / "clip.mp4", docs / "b" / "clip.mov"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("text")
    answer = await local(tmp_path, *(arg.format(tmp=tmp_path) for arg in args))
    [line] = answer.err.strip().splitlines()
    assert answer.code == 2 and answer.out == "", answer
    assert line.startswith("error: ") and says.format(tmp=tmp_path) in line, line
    assert not (tmp_path / "work").exists()
