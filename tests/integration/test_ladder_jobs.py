"""Ladder jobs through the job runner with the real FFmpeg: every package, both modes, checked like a player.

Each test encodes a 2 s clip with a test pattern and a tone (so it has
audio) into three small rungs; the job itself fails when its package does
not pass :func:`~agent.worker.package_check.check_package`, and the tests
check the package again from the outside. Deliveries go to a real nginx
with its WebDAV module and to moto's S3 server, on 127.0.0.1 and free ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from agent.config import AgentConfig
from agent.ladder import Ladder, Package
from agent.models import FailureReason, Job, JobResult, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.netguard import AllowList
from agent.worker.package_check import ExpectedRung, check_package
from agent.worker.progress import ProgressSnapshot
from tests.encoder_stubs import stalling
from tests.integration.test_deliver_http import DavServer, dav_server  # noqa: F401  (the fixture, by name)
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture, by name)
from tests.support import make_clip_with_audio, processes_mentioning, run_job

pytestmark = pytest.mark.timeout(120)

LADDER = "180p30-h264,144p30-h264@200k,90p30-h264@100k"
CLIP_SECONDS = 2.0


async def make_clip(ffmpeg: str, path: Path) -> Path:
    """CLIP_SECONDS of a 320x180 test pattern with a sine tone: the ladders' input."""
    return await make_clip_with_audio(ffmpeg, path, size="320x180", seconds=CLIP_SECONDS)


def runner(tmp_path: Path, **fields: Any) -> JobRunner:
    settings = AgentConfig(work_dir=tmp_path / "work", input_dirs=[tmp_path / "media"], **fields)
    return JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"))


async def run_ladder(tmp_path: Path, ffmpeg: str, mode: str, *, clip: bool = True, **params: Any) -> JobResult:
    inputs = {"input": str(await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4"))} if clip else {"duration": 2}
    job = Job(id="job-1", scenario="180p30-h264", parameters={"ladder": LADDER, **inputs, **params})
    with trio.fail_after(90):
        return await run_job(runner(tmp_path, ladder_mode=mode), job)


async def assert_plays(result: JobResult, ffmpeg: str, package: Package, audio: bool = True) -> Path:
    """The job completed with its package checked, and the package passes the checks again from outside."""
    assert result.status is JobStatus.COMPLETED, (result.error, result.logs)
    assert result.metrics["package_check"] == "passed" and result.metrics["package"] == package
    directory = Path(result.metrics["output_file"])
    rungs = [ExpectedRung(r.text, r.width, r.height, r.fps, r.codec) for r in Ladder.parse(LADDER).rungs]
    assert await check_package(directory, package, rungs, ffmpeg=ffmpeg, duration=CLIP_SECONDS, audio=audio) == []
    return directory


@pytest.mark.parametrize("mode", ["single", "split"])
async def test_a_three_rung_hls_ladder_plays_in_either_mode(tmp_path: Path, ffmpeg: str, mode: str) -> None:
    """master.m3u8 names three variants in one audio group; the result says which mode ran; the stage is gone."""
    result = await run_ladder(tmp_path, ffmpeg, mode)
    directory = await assert_plays(result, ffmpeg, "hls")
    assert result.metrics["ladder_mode"] == mode and result.metrics["ladder_rungs"] == 3
    master = (directory / "master.m3u8").read_text()
    assert master.count("#EXT-X-STREAM-INF:") == 3 and master.count('AUDIO="group_audio"') == 3
    assert "FRAME-RATE=30.000" in master and "RESOLUTION=256x144" in master
    assert sorted(p.name for p in directory.iterdir()) == ["1-180p30", "2-144p30", "3-90p30", "audio", "master.m3u8"]
    assert [rung["rung"] for rung in result.metrics["rungs"]] == LADDER.split(",")
    assert list((tmp_path / "work" / "ladders").iterdir()) == []


async def test_a_dash_ladder_has_one_video_and_one_audio_adaptation_set(tmp_path: Path, ffmpeg: str) -> None:
    """manifest.mpd: three video representations, one audio; it passes the checks."""
    result = await run_ladder(tmp_path, ffmpeg, "single", package="dash")
    directory = await assert_plays(result, ffmpeg, "dash")
    mpd = (directory / "manifest.mpd").read_text()
    assert mpd.count('contentType="video"') == 1 and mpd.count('contentType="audio"') == 1
    assert mpd.count('mimeType="video/mp4"') == 3


async def test_a_files_ladder_is_one_mp4_per_rung_each_with_the_audio(tmp_path: Path, ffmpeg: str) -> None:
    """Split mode into package=files: 1-180p30.mp4, 2-144p30.mp4, 3-90p30.mp4."""
    result = await run_ladder(tmp_path, ffmpeg, "split", package="files")
    directory = await assert_plays(result, ffmpeg, "files")
    assert sorted(p.name for p in directory.iterdir()) == ["1-180p30.mp4", "2-144p30.mp4", "3-90p30.mp4"]


async def test_a_ladder_of_the_generated_clip_has_no_audio_group(tmp_path: Path, ffmpeg: str) -> None:
    """No input: the scenario's test source is encoded; the package has no audio and still plays."""
    result = await run_ladder(tmp_path, ffmpeg, "auto", clip=False)
    directory = await assert_plays(result, ffmpeg, "hls", audio=False)
    assert result.metrics["ladder_mode"] == "single" and result.metrics["ladder_mode_reason"].startswith("auto")
    assert "#EXT-X-MEDIA" not in (directory / "master.m3u8").read_text()


async def test_progress_is_one_stream_up_to_the_whole_clip(tmp_path: Path, ffmpeg: str) -> None:
    """Split mode reports the slowest rung's position, never going back, and reaches 100 %."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": LADDER, "input": str(tmp_path / "media" / "clip.mp4")})
    seen: list[float] = []

    def on_progress(percent: float, snapshot: ProgressSnapshot) -> None:
        seen.append(percent)

    with trio.fail_after(90):
        result = await run_job(runner(tmp_path, ladder_mode="split"), job, on_progress)
    assert result.status is JobStatus.COMPLETED, result.error
    assert seen and seen[-1] == 100.0


async def test_a_bad_rung_fails_the_job_as_a_user_error_naming_the_rung(tmp_path: Path, ffmpeg: str) -> None:
    """Nothing runs; the error says which rung and what is wrong with it."""
    result = await run_ladder(tmp_path, ffmpeg, "auto", ladder="180p30-h264,144p30-h264@abc")
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "rung 2 (144p30-h264@abc): bitrate 'abc' must look like" in result.error
    assert not (tmp_path / "work" / "ladders").exists()


async def test_an_input_that_is_not_media_is_a_user_error_and_leaves_no_process(tmp_path: Path, ffmpeg: str) -> None:
    """Split mode: every rung's FFmpeg fails to open it; the job says so as the input's fault."""
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "notes.mp4").write_text("not a video")
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": LADDER, "input": str(tmp_path / "media" / "notes.mp4")})
    with trio.fail_after(60):
        result = await run_job(runner(tmp_path, ladder_mode="split"), job)
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value), result.error
    assert result.error.startswith("rung ") and "Invalid data found when processing input" in result.error
    assert processes_mentioning(str(tmp_path)) == []


async def test_without_persistence_the_package_is_removed_after_delivery(tmp_path: Path, ffmpeg: str) -> None:
    """--persist-outputs=false: the sizes are in the result, the package and the stage are gone."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": LADDER, "input": str(tmp_path / "media" / "clip.mp4")})
    with trio.fail_after(90):
        result = await run_job(runner(tmp_path, persist_outputs=False), job)
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.metrics["output_file_bytes"] > 0 and "output_file" not in result.metrics
    assert list((tmp_path / "work" / "outputs").iterdir()) == []
    assert list((tmp_path / "work" / "ladders").iterdir()) == []


async def test_a_stalled_rung_stops_every_rung_and_the_job_fails_as_stalled(tmp_path: Path) -> None:
    """Split mode with encoders that report once then hang: stalled, retried elsewhere, no process left."""
    stub = stalling(tmp_path / "stub")
    settings = AgentConfig(work_dir=tmp_path / "work", stall_timeout=1.5, kill_timeout=3, ladder_mode="split")
    runner = JobRunner(settings=settings, ffmpeg=str(stub.path), inputs=InputCache(tmp_path / "inputs"))
    job = Job(id="job-1", scenario="180p30-h264", parameters={"ladder": LADDER, "duration": 30})
    with trio.fail_after(60):
        result = await run_job(runner, job)
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.STALLED.value), result.error
    assert result.error.startswith("rung ") and "made no progress for 1.5s" in result.error
    assert result.metrics["ladder_mode"] == "split"
    assert len(stub.entries) == 3, "one encoder per rung, each run once"
    assert processes_mentioning(str(stub.path)) == []


@pytest.mark.parametrize("package", ["hls", "dash"])
async def test_h265_rungs_name_their_codec_in_the_playlist_or_manifest(
    tmp_path: Path, ffmpeg: str, package: Package
) -> None:
    """FFmpeg names no codec for H.265 it copies; the package does (hvc1...), and it plays."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    ladder = "180p30-h265,90p30-h264"
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": ladder, "package": package, "input": str(tmp_path / "media" / "clip.mp4")})
    with trio.fail_after(90):
        result = await run_job(runner(tmp_path), job)
    assert result.status is JobStatus.COMPLETED, (result.error, result.logs)
    directory = Path(result.metrics["output_file"])
    entry = directory / ("master.m3u8" if package == "hls" else "manifest.mpd")
    assert "hvc1.1." in entry.read_text() and 'codecs=""' not in entry.read_text()
    rungs = [ExpectedRung(r.text, r.width, r.height, r.fps, r.codec) for r in Ladder.parse(ladder).rungs]
    assert await check_package(directory, package, rungs, ffmpeg=ffmpeg, duration=CLIP_SECONDS, audio=True) == []


async def delivered_ladder(tmp_path: Path, ffmpeg: str, deliver: str, **settings: Any) -> JobResult:
    """The 3-rung HLS ladder of a clip with audio, delivered to ``deliver`` and not kept on the worker."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": LADDER, "input": str(tmp_path / "media" / "clip.mp4"), "deliver": deliver})
    with trio.fail_after(90):
        result = await run_job(runner(tmp_path, persist_outputs=False, **settings), job)
    assert result.status is JobStatus.COMPLETED, (result.error, result.logs)
    return result


async def assert_arrived_and_plays(directory: Path, ffmpeg: str) -> None:
    rungs = [ExpectedRung(r.text, r.width, r.height, r.fps, r.codec) for r in Ladder.parse(LADDER).rungs]
    assert await check_package(directory, "hls", rungs, ffmpeg=ffmpeg, duration=CLIP_SECONDS, audio=True) == []


@pytest.mark.slow
async def test_a_ladder_delivered_by_http_put_arrives_whole_and_plays(
    tmp_path: Path, ffmpeg: str, dav_server: DavServer  # noqa: F811
) -> None:
    """deliver=http://…/dav/farm/ PUTs every file under job-1.hls/; the directory on the server passes the checks."""
    result = await delivered_ladder(tmp_path, ffmpeg, f"{dav_server.url}/dav/farm/",
                                    allow_private_outputs=AllowList.parse([dav_server.netloc]))
    assert result.metrics["delivered_to"] == f"{dav_server.url}/dav/farm/job-1.hls/"
    await assert_arrived_and_plays(dav_server.www / "dav" / "farm" / "job-1.hls", ffmpeg)


@pytest.mark.slow
async def test_a_ladder_delivered_to_s3_arrives_whole_and_plays(
    tmp_path: Path, ffmpeg: str, s3_server: S3Server  # noqa: F811
) -> None:
    """deliver=s3://media-out/shows/ puts every file under shows/job-1.hls/; fetched back, it passes the checks."""
    await delivered_ladder(tmp_path, ffmpeg, "s3://media-out/shows/", s3_endpoint=s3_server.endpoint)
    listed = s3_server.client.list_objects_v2(Bucket="media-out", Prefix="shows/job-1.hls/")["Contents"]
    back = tmp_path / "back"
    for item in listed:
        target = back / item["Key"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3_server.get("media-out", item["Key"]))
    await assert_arrived_and_plays(back / "shows" / "job-1.hls", ffmpeg)


@pytest.mark.slow
async def test_a_ladder_the_server_refuses_is_a_user_error_and_the_package_stays(
    tmp_path: Path, ffmpeg: str, dav_server: DavServer  # noqa: F811
) -> None:
    """A 403 at deliver=http://…/forbidden/: user_error naming the answer; the package is kept on the worker."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    job = Job(id="job-1", scenario="180p30-h264", parameters={
        "ladder": LADDER, "input": str(tmp_path / "media" / "clip.mp4"), "deliver": f"{dav_server.url}/forbidden/",
    })
    settings: dict[str, Any] = {"persist_outputs": False, "allow_private_outputs": AllowList.parse([dav_server.netloc])}
    with trio.fail_after(90):
        result = await run_job(runner(tmp_path, **settings), job)
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "403" in result.error
    assert (tmp_path / "work" / "outputs" / "job-1" / "job-1.hls" / "master.m3u8").is_file()


async def test_a_ladder_stopped_midway_stops_every_rung_and_leaves_no_process(tmp_path: Path, ffmpeg: str) -> None:
    """Stopped after its first progress (split mode, read in real time): the outcome says stopped, no FFmpeg remains."""
    await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    ladder_runner = runner(tmp_path, ladder_mode="split", kill_timeout=3)
    job = Job(id="job-1", scenario="180p30-h264",
              parameters={"ladder": LADDER, "input": str(tmp_path / "media" / "clip.mp4"), "realtime": True})
    stop = trio.CancelScope()

    def on_progress(percent: float, snapshot: ProgressSnapshot) -> None:
        stop.cancel()

    with trio.fail_after(60):
        outcome = await ladder_runner.run(job, ladder_runner.prepare(job), on_progress, stop)
    assert outcome.stopped
    assert processes_mentioning(str(tmp_path)) == []
    assert list((tmp_path / "work" / "ladders").iterdir()) == []
