"""Jobs that read their input from S3 and deliver their output to it, against moto's S3 server.

The endpoint (``--s3-endpoint``) is on 127.0.0.1 and no allow-list names it:
it is the operator's choice, trusted like the master's host. The server is
moto's standalone S3 server (``tests/s3.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from agent.config import AgentConfig
from agent.models import FailureReason, Job, JobResult, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from tests.s3 import S3Server, s3_server  # noqa: F401  (the fixture)
from tests.support import run_job

STEP_TIMEOUT_S = 60


async def encode(tmp_path: Path, server: S3Server, **params: Any) -> tuple[JobResult, Path | None]:
    """One job on a worker whose --s3-endpoint is moto's; the result, and its kept output if there is one."""
    settings = AgentConfig(work_dir=tmp_path / "work", s3_endpoint=server.endpoint)
    runner = JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"))
    job = Job(id="s3job", scenario="144p30-h264", parameters=params)
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, job)
    outputs = tmp_path / "work" / "outputs" / job.id
    return result, next(outputs.iterdir(), None) if outputs.is_dir() else None


async def clip(tmp_path: Path) -> bytes:
    """One second of video with sound, made by FFmpeg."""
    path = tmp_path / "clip.mp4"
    argv = [find_ffmpeg(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", str(path)]
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
    return path.read_bytes()


async def test_an_s3_input_is_encoded_and_the_output_delivered_to_an_s3_prefix(
    tmp_path: Path, s3_server: S3Server  # noqa: F811
) -> None:
    """input=s3://media-in/clip.mp4 is downloaded and encoded whole; deliver=s3://media-out/renders/ stores the same bytes."""
    s3_server.put("media-in", "clips/clip.mp4", await clip(tmp_path))
    result, output = await encode(tmp_path, s3_server, input="s3://media-in/clips/clip.mp4", deliver="s3://media-out/renders/")
    assert result.status is JobStatus.COMPLETED, result.error
    assert output is not None
    assert result.metrics["delivered_to"] == f"s3://media-out/renders/{output.name}"
    assert s3_server.get("media-out", f"renders/{output.name}") == output.read_bytes()
    info = await probe_media(find_ffmpeg(), output)
    assert info.duration == pytest.approx(1.0, abs=0.25) and info.audio_codec == "aac"
    assert not list((tmp_path / "work" / "fetch").iterdir())  # the downloaded input is gone


async def test_a_missing_input_key_is_the_jobs_fault(tmp_path: Path, s3_server: S3Server) -> None:  # noqa: F811
    """An input key that is not in the bucket fails the job as user_error naming the key."""
    result, _ = await encode(tmp_path, s3_server, input="s3://media-in/nothing-here.mp4")
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "s3://media-in/nothing-here.mp4" in result.error


async def test_a_missing_bucket_for_the_output_is_the_jobs_fault_and_the_file_is_kept(
    tmp_path: Path, s3_server: S3Server  # noqa: F811
) -> None:
    """deliver=s3://no-such-bucket/ is user_error at once, naming NoSuchBucket; the encoded file stays."""
    result, output = await encode(tmp_path, s3_server, duration=1, deliver="s3://no-such-bucket/x/")
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.USER_ERROR.value)
    assert "NoSuchBucket" in result.error
    assert output is not None and output.stat().st_size > 0
