"""Turns one claimed job into one result: validate, prepare input, encode, measure.

Every way a job can go wrong inside the job itself ends as a ``JobResult``
with a failure reason, never as an exception: a bad job must not take the
agent down. Only cancellation (shutdown, cancel from the master) escapes, and
the job task reports that.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import trio

from agent.models import FailureReason, Job, JobResult, JobStatus
from agent.scenarios import EncodeSpec, JobRejected, build_spec
from agent.worker.encoder import EncoderWatch, StopPolicy, run_encoder
from agent.worker.engines.ffmpeg import encode_argv
from agent.worker.guardian import Guardian
from agent.worker.inputs import InputCache, InputGenerationFailed
from agent.worker.progress import ProgressSnapshot, percent

log = logging.getLogger(__name__)

ENGINE_NAME = "ffmpeg"


def bandwidth_mbps(input_bytes: int, output_bytes: int, seconds: float) -> float:
    """The original agent's figure: bytes read and written, in Mbit/s of 2**20 bits."""
    if seconds <= 0:
        return 0.0
    return (input_bytes + output_bytes) * 8 / (seconds * 1024 * 1024)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@attrs.define
class JobRunner:
    """Runs jobs with one FFmpeg binary inside one work directory.

    Args:
        ffmpeg: the encoder binary (see ``find_ffmpeg``).
        work_dir: outputs go to ``work_dir/outputs/<job id>/``.
        inputs: the cache of generated test inputs.
        input_dirs: directories a job may read local input files from.
        rtmp_host: host of the default RTMP URL (the master's, as the original does).
        job_timeout: seconds a job may run when it sets no ``timeout_sec``; None = no limit.
        guardian: kills the encoders should the agent die without stopping them.
    """

    ffmpeg: str
    work_dir: Path
    inputs: InputCache
    stop: StopPolicy = attrs.field(factory=StopPolicy)
    input_dirs: Sequence[Path] = ()
    rtmp_host: str = "localhost"
    job_timeout: float | None = None
    guardian: Guardian | None = None

    async def run(
        self, job: Job, node_id: str, on_progress: Callable[[float, ProgressSnapshot], None]
    ) -> JobResult:
        try:
            spec = build_spec(job, input_dirs=self.input_dirs, default_rtmp_host=self.rtmp_host)
        except JobRejected as exc:
            log.warning("Job %s rejected: %s", job.id, exc)
            return JobResult.failure(job, node_id, FailureReason.USER_ERROR, str(exc))
        try:
            input_path = await self._input_for(spec)
        except InputGenerationFailed as exc:
            return JobResult.failure(job, node_id, FailureReason.PLATFORM_ERROR, str(exc))

        output_path = self._output_path(job, spec)
        target = str(output_path) if spec.output_mode == "file" else spec.rtmp_url
        argv = encode_argv(self.ffmpeg, spec, input_path, target)
        watch = EncoderWatch(on_progress=lambda snap: on_progress(percent(snap, spec.duration), snap))
        timeout = spec.timeout_sec or self.job_timeout
        started = time.monotonic()
        log.debug("job %s: %s", job.id, argv)
        with trio.move_on_after(timeout if timeout else float("inf")) as timer:
            await run_encoder(argv, watch, cwd=output_path.parent, stop=self.stop, guardian=self.guardian)
        elapsed = time.monotonic() - started

        input_bytes = _file_size(Path(input_path)) if "://" not in input_path else 0
        output_bytes = _file_size(output_path) if spec.output_mode == "file" else 0
        metrics = self._metrics(spec, watch, elapsed, input_bytes, output_bytes, output_path)
        common: dict[str, Any] = {"metrics": metrics, "logs": watch.stderr_tail}
        if timer.cancelled_caught:
            return JobResult.failure(
                job, node_id, FailureReason.TIMEOUT,
                f"encoder stopped after the job's timeout of {timeout:g}s", **common,
            )
        if watch.returncode != 0:
            return JobResult.failure(
                job, node_id, FailureReason.RUNTIME_ERROR,
                f"ffmpeg exited with code {watch.returncode}: {_last_line(watch.stderr_tail)}",
                **common,
            )
        return JobResult(
            job_id=job.id, node_id=node_id, status=JobStatus.COMPLETED, progress=100.0, **common
        )

    async def _input_for(self, spec: EncodeSpec) -> str:
        if spec.input:
            return spec.input
        path = await self.inputs.get(self.ffmpeg, spec.width, spec.height, spec.fps, spec.duration)
        return str(path)

    def _output_path(self, job: Job, spec: EncodeSpec) -> Path:
        directory = self.work_dir / "outputs" / job.id
        directory.mkdir(parents=True, exist_ok=True)
        return directory / spec.output_name

    @staticmethod
    def _metrics(
        spec: EncodeSpec,
        watch: EncoderWatch,
        elapsed: float,
        input_bytes: int,
        output_bytes: int,
        output_path: Path,
    ) -> dict[str, Any]:
        last = watch.last_progress
        metrics: dict[str, Any] = {
            "duration": round(elapsed, 3),
            "engine": ENGINE_NAME,
            "scenario": spec.scenario,
            "codec": spec.codec,
            "resolution": f"{spec.width}x{spec.height}",
            "input_file_bytes": input_bytes,
            "output_file_bytes": output_bytes,
            "bandwidth_mbps": round(bandwidth_mbps(input_bytes, output_bytes, elapsed), 3),
            "exit_code": watch.returncode,
        }
        if spec.output_mode == "file":
            metrics["output_file"] = str(output_path)
        else:
            metrics["rtmp_url"] = spec.rtmp_url
        if last is not None:
            metrics.update(
                frames=last.frame, fps=last.fps, speed=last.speed, bitrate_kbps=last.bitrate_kbps
            )
        return metrics


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"
