"""Hardware encoder detection by test encode, and the fall back to software (agent/worker/engines/hwaccel.py).

This machine has no NVENC, Quick Sync or VA-API device, so a stub FFmpeg
claims that one NVENC probe succeeds and hands every other run to the real
FFmpeg, where h264_nvenc then fails as it would on a broken driver.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import trio

from agent.config import AgentConfig
from agent.models import Job, JobStatus
from agent.worker.engines.ffmpeg import find_ffmpeg, probe_media
from agent.worker.engines.hwaccel import HardwareEncoder, candidates, detect_hardware_encoders
from agent.worker.inputs import InputCache
from agent.worker.jobrunner import JobRunner
from tests.support import run_job

STEP_TIMEOUT_S = 60


def ffmpeg_claiming(tmp_path: Path, encoder: str) -> str:
    """An FFmpeg whose one-frame probe of ``encoder`` succeeds; everything else runs the real one."""
    stub = tmp_path / "ffmpeg"
    stub.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -frames:v 1 "*" -c:v {encoder} "*) exit 0;; esac\n'
        f'exec {shlex.quote(find_ffmpeg())} "$@"\n'
    )
    stub.chmod(0o755)
    return str(stub)


async def test_without_devices_no_encoder_passes_the_probe() -> None:
    """The real FFmpeg lists h264_nvenc and friends, yet none can encode a frame here."""
    assert await detect_hardware_encoders(find_ffmpeg()) == ()


async def test_only_the_encoders_whose_probe_succeeds_are_reported(tmp_path: Path) -> None:
    """Detection runs every candidate and keeps the ones that exit 0."""
    assert await detect_hardware_encoders(ffmpeg_claiming(tmp_path, "hevc_vaapi")) == (HardwareEncoder("vaapi", "h265"),)


async def test_a_hanging_probe_counts_as_absent(tmp_path: Path) -> None:
    """A driver that never answers does not hold the agent's start."""
    stub = tmp_path / "ffmpeg-hangs"
    stub.write_text("#!/bin/sh\nexec sleep 30\n")
    stub.chmod(0o755)
    assert await detect_hardware_encoders(str(stub), candidates()[:2], timeout=0.5) == ()


async def test_a_failing_hardware_encoder_falls_back_to_software(tmp_path: Path) -> None:
    """The job tries h264_nvenc, which fails, then completes with libx264; the result records both."""
    ffmpeg = ffmpeg_claiming(tmp_path, "h264_nvenc")
    hardware = await detect_hardware_encoders(ffmpeg)
    assert [h.name for h in hardware] == ["h264_nvenc"]
    runner = JobRunner(settings=AgentConfig(work_dir=tmp_path / "work"), ffmpeg=ffmpeg,
                       inputs=InputCache(tmp_path / "inputs"), hardware=hardware)
    with trio.fail_after(STEP_TIMEOUT_S):
        result = await run_job(runner, Job(id="hw-1", scenario="144p30-h264", parameters={"duration": 1}))
    assert result.status is JobStatus.COMPLETED, result.error
    assert (result.metrics["engine"], result.metrics["encoder"]) == ("ffmpeg", "libx264")
    assert result.metrics["fallback_from"] == "h264_nvenc"
    assert "h264_nvenc exited with code" in result.metrics["fallback_error"]
    assert (await probe_media(find_ffmpeg(), result.metrics["output_file"])).codec == "h264"
