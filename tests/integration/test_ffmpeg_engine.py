"""Real FFmpeg encodes built by the engine, checked by the engine's own probes (agent/worker/engines/ffmpeg.py).

Tiny pictures and one-second clips keep each encode well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from agent.models import Job
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines import ffmpeg as ff
from agent.worker.inputs import InputCache
from agent.worker.progress import ProgressParser, ProgressSnapshot

# Generous for a one-second clip at 160x90, tight enough to stop a hung encoder.
STEP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def ffmpeg_exe() -> str:
    return ff.find_ffmpeg()


@pytest.fixture
async def source(ffmpeg_exe: str, tmp_path: Path) -> Path:
    """One second of generated 320x240 at 30 fps, made through the cache as the runner does."""
    with trio.fail_after(STEP_TIMEOUT_S):
        return await InputCache(tmp_path / "inputs").get(ffmpeg_exe, 320, 240, 30, 1)


async def encode(ffmpeg_exe: str, spec: EncodeSpec, source: Path, output: Path) -> list[ProgressSnapshot]:
    """Run the engine's argv; return the progress it reported, failing on a non-zero exit."""
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await trio.run_process(
            ff.encode_argv(ffmpeg_exe, spec, str(source), str(output)),
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert result.returncode == 0, ff.stderr_tail(result.stderr)
    return ProgressParser().feed(result.stdout)


def spec_for(scenario: str, **params: Any) -> EncodeSpec:
    return build_spec(Job(id="it-1", scenario=scenario, parameters={"duration": 1, **params}))


async def test_the_generated_input_is_the_size_rate_and_length_asked_for(ffmpeg_exe: str, source: Path) -> None:
    """The synthetic clip is H.264 320x240, 30 fps, one second, and decodes without errors."""
    info = await ff.probe_media(ffmpeg_exe, source)
    assert (info.codec, info.width, info.height, info.fps) == ("h264", 320, 240, 30.0)
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert info.size_bytes == source.stat().st_size > 0
    assert await ff.decodes_cleanly(ffmpeg_exe, source)


@pytest.mark.parametrize(("scenario", "probed_codec", "extension"), [
    ("240p30-h264", "h264", ".mp4"),
    ("240p30-h265", "hevc", ".mp4"),
    ("240p30-vp9", "vp9", ".webm"),
])
async def test_each_codec_encodes_to_a_clean_file_of_the_spec(
    ffmpeg_exe: str, source: Path, tmp_path: Path, scenario: str, probed_codec: str, extension: str
) -> None:
    """The output has the codec, size and rate asked for, decodes cleanly, and progress reached the end."""
    spec = spec_for(scenario, resolution="160x90", preset="ultrafast")
    output = tmp_path / spec.output_name
    snapshots = await encode(ffmpeg_exe, spec, source, output)

    assert output.suffix == extension
    info = await ff.probe_media(ffmpeg_exe, output)
    assert (info.codec, info.width, info.height, info.fps) == (probed_codec, 160, 90, 30.0)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert await ff.decodes_cleanly(ffmpeg_exe, output)
    assert snapshots and snapshots[-1].done and snapshots[-1].frame == 30
    assert snapshots[-1].total_size == info.size_bytes


async def test_rate_and_duration_overrides_change_the_output(ffmpeg_exe: str, source: Path, tmp_path: Path) -> None:
    """fps=15 and duration=0.5 give 8 frames at 15 fps (the first frame at 0, then every 1/15 s)."""
    spec = spec_for("240p30-h264", resolution="128x72", fps=15, duration=0.5)
    output = tmp_path / spec.output_name
    snapshots = await encode(ffmpeg_exe, spec, source, output)
    info = await ff.probe_media(ffmpeg_exe, output)
    assert (info.width, info.height, info.fps) == (128, 72, 15.0)
    assert snapshots[-1].frame == 8


async def test_rtmp_mode_muxes_flv_that_reads_back(ffmpeg_exe: str, source: Path, tmp_path: Path) -> None:
    """The stream format is valid FLV; written to a file here instead of a server."""
    spec = spec_for("240p30-h264", resolution="160x90", output_mode="rtmp", realtime=False)
    output = tmp_path / "stream.flv"
    await encode(ffmpeg_exe, spec, source, output)
    info = await ff.probe_media(ffmpeg_exe, output)
    assert (info.codec, info.width, info.height) == ("h264", 160, 90)
    assert await ff.decodes_cleanly(ffmpeg_exe, output)


async def test_a_truncated_file_fails_the_probe_and_the_decode_check(
    ffmpeg_exe: str, source: Path, tmp_path: Path
) -> None:
    """Half an MP4 has no index: probe_media says so, decodes_cleanly is False."""
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(ff.ProbeFailed) as info:
        await ff.probe_media(ffmpeg_exe, broken)
    assert "moov atom not found" in info.value.stderr_tail
    assert not await ff.decodes_cleanly(ffmpeg_exe, broken)


async def test_corrupt_packets_pass_the_probe_but_not_the_decode_check(
    ffmpeg_exe: str, source: Path, tmp_path: Path
) -> None:
    """Zeroed bytes inside the frame data leave the container readable but the picture broken."""
    data = bytearray(source.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20_000] = bytes(20_000)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert (await ff.probe_media(ffmpeg_exe, damaged)).codec == "h264"
    assert not await ff.decodes_cleanly(ffmpeg_exe, damaged)


async def test_a_missing_file_fails_the_probe(ffmpeg_exe: str, tmp_path: Path) -> None:
    """The error names the file and carries FFmpeg's reason."""
    with pytest.raises(ff.ProbeFailed, match="nothing.mp4") as info:
        await ff.probe_media(ffmpeg_exe, tmp_path / "nothing.mp4")
    assert info.value.returncode != 0
    assert "No such file" in str(info.value)
