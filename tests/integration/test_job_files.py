"""The job runner with real FFmpeg and its files: free space, kept and removed files, the operator's output dir."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.config import AgentConfig
from agent.models import FailureReason, Job, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from agent.worker.progress import ProgressSnapshot
from tests.support import run_job

STEP_TIMEOUT_S = 60


def runner(tmp_path: Path, **fields: Any) -> JobRunner:
    settings = AgentConfig(work_dir=tmp_path / "work", **fields)
    return JobRunner(settings=settings, ffmpeg=find_ffmpeg(), inputs=InputCache(tmp_path / "inputs"))


async def run(runner: JobRunner, scenario: str = "144p30-h264", **params: Any) -> Any:
    seen: list[float] = []

    def on_progress(percent: float, snapshot: ProgressSnapshot) -> None:
        seen.append(percent)

    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, Job(id="job-1", scenario=scenario, parameters={"duration": 1, **params}),
                               on_progress)
    return result


async def test_a_job_that_would_fill_the_disk_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """resource_error naming the free space, with no input generated and no output directory made."""
    free = shutil.disk_usage(tmp_path).free
    result = await run(runner(tmp_path, min_free_mb=free // 2**20 + 2**20))
    assert (result.status, result.failure_reason) == (JobStatus.FAILED, FailureReason.RESOURCE_ERROR.value)
    assert "not enough free space" in result.error and "--min-free-mb" in result.error
    assert not (tmp_path / "inputs").exists() and not (tmp_path / "work" / "outputs").exists()


async def test_the_launch_is_told_once_the_encoder_runs_and_never_for_a_refused_job(tmp_path: Path) -> None:
    """What the poller waits for before its next claim: told once, before the encoder's first progress."""
    events: list[str] = []
    job = Job(id="job-1", scenario="144p30-h264", parameters={"duration": 1})
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner(tmp_path), job, lambda percent, snapshot: events.append("progress"),
                               lambda: events.append("launched"))
    assert result.status is JobStatus.COMPLETED, result.error
    assert events[0] == "launched" and events.count("launched") == 1 and "progress" in events
    events.clear()
    free = shutil.disk_usage(tmp_path).free
    refused = await run_job(runner(tmp_path, min_free_mb=free // 2**20 + 2**20), job, on_launch=lambda: events.append("launched"))
    assert refused.failure_reason == FailureReason.RESOURCE_ERROR.value and events == []


async def test_without_persistence_the_files_are_measured_then_removed(tmp_path: Path) -> None:
    """PERSIST_OUTPUTS/PERSIST_INPUTS false: sizes are in the metrics, the files are gone."""
    result = await run(runner(tmp_path, persist_outputs=False, persist_inputs=False))
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.metrics["output_file_bytes"] > 0 and result.metrics["input_file_bytes"] > 0
    assert "output_file" not in result.metrics
    assert list((tmp_path / "work" / "outputs").iterdir()) == []
    assert list((tmp_path / "inputs").iterdir()) == []


async def test_with_persistence_the_output_and_the_input_stay(tmp_path: Path) -> None:
    """The default: the output is where the result says, the input is cached for the next job."""
    result = await run(runner(tmp_path))
    assert Path(result.metrics["output_file"]).stat().st_size == result.metrics["output_file_bytes"]
    assert len(list((tmp_path / "inputs").iterdir())) == 1


async def test_outputs_go_to_the_operator_directory_when_one_is_allowed(tmp_path: Path) -> None:
    """A path inside --output-dir is honoured; the file there is the job's video."""
    out = tmp_path / "published"
    out.mkdir()
    result = await run(runner(tmp_path, output_dir=out), output="shows/clip.mp4")
    assert result.status is JobStatus.COMPLETED, result.error
    assert result.metrics["output_file"] == str(out.resolve() / "shows" / "clip.mp4")
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert (info.codec, info.width, info.height) == ("h264", 256, 144)


async def test_audio_of_a_given_input_is_kept(tmp_path: Path) -> None:
    """An input with sound gives an output with sound; the generated input has none."""
    inputs = tmp_path / "media"
    inputs.mkdir()
    clip = inputs / "talk.mp4"
    argv = [find_ffmpeg(), "-hide_banner", "-nostdin", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "aac", str(clip)]
    await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
    result = await run(runner(tmp_path, input_dirs=[inputs]), input="talk.mp4")
    assert result.status is JobStatus.COMPLETED, result.error
    assert (await probe_media(find_ffmpeg(), result.metrics["output_file"])).audio_codec == "aac"
    generated = await run(runner(tmp_path))
    assert (await probe_media(find_ffmpeg(), generated.metrics["output_file"])).audio_codec == ""


@pytest.mark.parametrize("bad", [{"output": "../x.mp4"}, {"input": "/etc/passwd"}])
async def test_a_bad_parameter_fails_the_job_as_a_user_error(tmp_path: Path, bad: dict[str, str]) -> None:
    """The runner reports the rejection; nothing is run."""
    result = await run(runner(tmp_path), **bad)
    assert result.failure_reason == FailureReason.USER_ERROR.value


async def test_a_given_file_without_a_duration_is_encoded_whole_and_its_progress_counts_to_its_end(
    tmp_path: Path,
) -> None:
    """No duration with an input file: no -t, an output as long as the input with its audio, progress up to 100%."""
    media = tmp_path / "media"
    media.mkdir()
    clip = media / "clip.mp4"
    await trio.run_process([
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x90",
        "-f", "lavfi", "-i", "sine", "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip),
    ])
    seen: list[float] = []
    job = Job(id="job-1", scenario="144p30-h264", parameters={"input": str(clip)})
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner(tmp_path, input_dirs=[media]), job, lambda percent, _: seen.append(percent))
    assert result.status is JobStatus.COMPLETED, result.error
    info = await probe_media(find_ffmpeg(), result.metrics["output_file"])
    assert info.duration == pytest.approx(3.0, abs=0.1) and info.audio_codec == "aac", info
    assert seen and max(seen) == pytest.approx(100.0, abs=5), seen
