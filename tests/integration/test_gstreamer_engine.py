"""GStreamer jobs through the job runner with the real gst-launch-1.0, and its fallback to FFmpeg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from agent.config import AgentConfig
from agent.models import Engine, Job, JobResult, JobStatus
from agent.worker.engines.ffmpeg import decodes_cleanly, find_ffmpeg, probe_media
from agent.worker.engines.gstreamer import GStreamer, find_gstreamer
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.progress import ProgressSnapshot
from tests.support import run_job

STEP_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def gstreamer() -> GStreamer:
    found = trio.run(find_gstreamer)
    assert found is not None, "gst-launch-1.0 missing: run tests/setup.sh (tests/apt-packages.txt)"
    return found


def failing_gst_launch(tmp_path: Path) -> str:
    """A gst-launch-1.0 that fails the way a broken pipeline does."""
    stub = tmp_path / "gst-launch-1.0"
    stub.write_text(
        "#!/bin/sh\necho 'ERROR: from element /GstPipeline:pipeline0/GstX264Enc:x264enc0: "
        "Could not initialise the encoder' >&2\nexit 1\n"
    )
    stub.chmod(0o755)
    return str(stub)


async def run(runner: JobRunner, scenario: str, progress: list[float], **params: Any) -> JobResult:
    def on_progress(percent: float, snapshot: ProgressSnapshot) -> None:
        progress.append(percent)

    job = Job(id="gst-1", scenario=scenario, engine=Engine.GSTREAMER, parameters={"duration": 2, **params})
    with trio.fail_after(STEP_TIMEOUT_S):
        return await run_job(runner, job, on_progress)


def runner(tmp_path: Path, gstreamer: GStreamer) -> JobRunner:
    # Jobs may stream to 127.0.0.1: one test names a port nothing listens on.
    settings = AgentConfig(work_dir=tmp_path / "work", allow_private_outputs=True)
    return JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"),
                     gstreamer=gstreamer)


@pytest.mark.parametrize(("scenario", "codec"), [("144p30-h264", "h264"), ("144p30-vp9", "vp9")])
async def test_a_gstreamer_job_makes_the_video_asked_for_and_reports_progress(
    tmp_path: Path, gstreamer: GStreamer, scenario: str, codec: str
) -> None:
    """Encoded by GStreamer, the file has the codec, size, rate and length, and progress reached its end."""
    progress: list[float] = []
    result = await run(runner(tmp_path, gstreamer), scenario, progress, preset="ultrafast")
    assert result.status is JobStatus.COMPLETED, result.logs
    assert result.metrics["engine"] == "gstreamer" and "fallback_from" not in result.metrics
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert (info.codec, info.width, info.height, info.fps) == (codec, 256, 144, 30.0)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert await decodes_cleanly(find_ffmpeg(), result.metrics["output_file"])
    assert progress and progress == sorted(progress) and progress[-1] == 100.0


async def test_a_failing_pipeline_falls_back_to_ffmpeg_once_and_the_result_says_so(
    tmp_path: Path, gstreamer: GStreamer
) -> None:
    """The job completes through FFmpeg; the result names GStreamer and its error."""
    broken = attrs.evolve(gstreamer, launch=failing_gst_launch(tmp_path))
    result = await run(runner(tmp_path, broken), "144p30-h264", [])
    assert result.status is JobStatus.COMPLETED, result.error
    assert (result.metrics["engine"], result.metrics["encoder"]) == ("ffmpeg", "libx264")
    assert result.metrics["fallback_from"] == "gstreamer"
    assert "Could not initialise the encoder" in result.metrics["fallback_error"]
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert (info.codec, info.width, info.height) == ("h264", 256, 144)


async def test_a_job_gstreamer_cannot_run_goes_to_ffmpeg_without_starting_it(
    tmp_path: Path, gstreamer: GStreamer
) -> None:
    """RTMP carries no VP9 in GStreamer: FFmpeg writes the file, the reason is recorded."""
    result = await run(runner(tmp_path, attrs.evolve(gstreamer, launch=failing_gst_launch(tmp_path))),
                       "144p30-h265", [], output_mode="rtmp", rtmp_url="rtmp://127.0.0.1:1/live", realtime=False)
    assert result.metrics["fallback_from"] == "gstreamer"
    assert "cannot put h265 into flv" in result.metrics["fallback_error"]
    assert "Could not initialise" not in result.metrics["fallback_error"], "the stub was never started"
