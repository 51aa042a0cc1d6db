"""Engine choice and space estimates of the job runner, without running encoders (agent/worker/jobrunner.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.models import Engine, Job, JobStatus
from agent.scenarios import EncodeSpec, build_spec
from agent.worker.engines.gstreamer import GStreamer, required_elements
from agent.worker.engines.hwaccel import HardwareEncoder
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import Attempt, JobRunner, bandwidth_mbps, estimated_bytes, plan_attempts
from tests.support import run_job


def spec_for(scenario: str = "720p30-h264", **params: Any) -> EncodeSpec:
    return build_spec(Job(id="job-1", scenario=scenario, parameters=params))


GST = GStreamer(launch="gst-launch-1.0", elements=frozenset(required_elements(spec_for())))
NVENC = HardwareEncoder("nvenc", "h264")
VAAPI = HardwareEncoder("vaapi", "h264")


def labels(attempts: list[Attempt]) -> list[str]:
    return [a.label + (" (skipped)" if a.unavailable else "") for a in attempts]


@pytest.mark.parametrize("engine", [Engine.AUTO, Engine.FFMPEG])
def test_auto_and_ffmpeg_run_software_ffmpeg_without_hardware(engine: Engine) -> None:
    """FFmpeg reads every input and writes every codec, so auto means FFmpeg."""
    assert labels(plan_attempts(engine, spec_for(), gstreamer=GST, hardware=())) == ["ffmpeg"]


def test_gstreamer_jobs_fall_back_to_ffmpeg_once() -> None:
    """GStreamer first, then FFmpeg; nothing is skipped when GStreamer can run the job."""
    assert labels(plan_attempts(Engine.GSTREAMER, spec_for(), gstreamer=GST, hardware=())) == [
        "gstreamer", "ffmpeg",
    ]


@pytest.mark.parametrize(("gstreamer", "spec", "reason"), [
    (None, spec_for(), "not installed on this worker"),
    (GST, spec_for(input="http://example.com/a.mp4"), "only encode generated inputs"),
    (GST, spec_for("480p30-vp9"), "not installed: vp9enc"),
])
def test_a_gstreamer_job_it_cannot_run_goes_to_ffmpeg_with_the_reason(
    gstreamer: GStreamer | None, spec: EncodeSpec, reason: str
) -> None:
    """The skipped attempt carries why, for the result's fallback_error."""
    skipped, ffmpeg = plan_attempts(Engine.GSTREAMER, spec, gstreamer=gstreamer, hardware=())
    assert reason in skipped.unavailable and skipped.engine is Engine.GSTREAMER
    assert ffmpeg == Attempt(Engine.FFMPEG)


def test_a_detected_hardware_encoder_for_the_codec_comes_before_software() -> None:
    """auto takes the first detected encoder for the job's codec; other codecs' encoders do not count."""
    hardware = (HardwareEncoder("nvenc", "h265"), NVENC, VAAPI)
    assert labels(plan_attempts(Engine.AUTO, spec_for(), gstreamer=None, hardware=hardware)) == [
        "h264_nvenc", "ffmpeg",
    ]
    assert labels(plan_attempts(Engine.GSTREAMER, spec_for(), gstreamer=GST, hardware=hardware)) == [
        "gstreamer", "h264_nvenc", "ffmpeg",
    ]


@pytest.mark.parametrize(("choice", "expected"), [
    ("none", ["ffmpeg"]), ("vaapi", ["h264_vaapi", "ffmpeg"]), ("qsv", ["ffmpeg"]),
])
def test_the_job_decides_whether_and_which_hardware_to_use(choice: str, expected: list[str]) -> None:
    """none is software only; a vendor name picks that vendor, or software when it is absent."""
    plan = plan_attempts(Engine.AUTO, spec_for(hardware=choice), gstreamer=None, hardware=(NVENC, VAAPI))
    assert labels(plan) == expected


def test_the_space_estimate_counts_the_output_at_its_bitrate_and_a_generated_input() -> None:
    """10 s at 2500k plus 128k audio is 3.3 MB, with a quarter more for overshoot and muxing."""
    given_input = spec_for(input="http://example.com/a.mp4", duration=10)
    assert estimated_bytes(given_input) == int((2500 + 128) * 1000 / 8 * 10 * 1.25)
    assert estimated_bytes(spec_for()) > estimated_bytes(given_input)
    # A whole input's length is not known before it is opened.
    assert estimated_bytes(spec_for(input="http://example.com/a.mp4")) == 0
    assert estimated_bytes(spec_for(input="http://example.com/a.mp4", output_mode="rtmp")) == 0


def test_bandwidth_is_the_original_agents_formula() -> None:
    """(input + output) bytes x 8 / (seconds x 2**20)."""
    assert bandwidth_mbps(1024 * 1024, 1024 * 1024, 2.0) == 8.0
    assert bandwidth_mbps(1, 1, 0.0) == 0.0


async def test_without_input_generation_a_job_must_name_its_input(tmp_path: Path) -> None:
    """--generate-input=false: a job with no input fails as user_error naming the field, before any encode."""
    runner = JobRunner(
        settings=AgentConfig(work_dir=tmp_path, generate_input=False),
        ffmpeg="/nonexistent/ffmpeg", inputs=InputCache(tmp_path / "inputs"),
    )
    result = await run_job(runner, Job(id="j", scenario="240p30-h264"))
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, "user_error")
    assert "input" in result.error and "--generate-input" in result.error
