"""Runs one job's encode: check space, open the input, run the engines, measure.

:meth:`JobRunner.prepare` builds the job's spec once, when it is claimed;
:meth:`JobRunner.run` turns the spec into an :class:`EncodeOutcome`. Every
way an encode can go wrong ends as an outcome with a failure reason, never as
an exception: a bad job must not take the agent down. The job's result is
made from the outcome by :mod:`agent.worker.lifecycle`.

A job runs as a list of attempts (:func:`plan_attempts`): GStreamer when the
job asks for it, a hardware encoder when one was detected and the job allows
it, and software FFmpeg last. An attempt that fails hands the job to the next
one; the result's metrics say which engine finished it (``engine``,
``encoder``) and which gave up and why (``fallback_from``, ``fallback_error``).

A failure is the job's own (``user_error``: final, not counted by the
circuit breaker) only when that is clear — a local input that is not there,
or an encoder exit whose stderr says so (:mod:`agent.worker.failures`);
anything else is this worker's (``runtime_error``), and an encoder whose
output stopped advancing is ``stalled`` (:mod:`agent.worker.stall`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs
import trio

from agent.client import MasterClient
from agent.config import AgentConfig
from agent.models import Engine, FailureReason, Job
from agent.s3 import client_for
from agent.scenarios import ARTIFACT_PREFIX, EncodeSpec, JobRejected, build_spec
from agent.worker.artifacts import ArtifactCache, delivery_for
from agent.worker.encoder import EncoderWatch, StopPolicy, run_encoder
from agent.worker.engines.ffmpeg import ProbeFailed, encode_argv, probe_media
from agent.worker.engines.gstreamer import GStreamer, encoder_element, find_gstreamer, pipeline_argv
from agent.worker.engines.hwaccel import HardwareEncoder, detect_hardware_encoders
from agent.worker.failures import input_file_problem, job_fault
from agent.worker.fetch import open_http_input
from agent.worker.guardian import Guardian
from agent.worker.inputs import InputCache, InputGenerationFailed
from agent.worker.lifecycle import EncodeOutcome
from agent.worker.netguard import DestinationUnavailable, checked_url
from agent.worker.progress import ProgressSnapshot, percent
from agent.worker.s3input import open_s3_input

log = logging.getLogger(__name__)

# Bytes per pixel of the generated clip (near-lossless x264 of a noisy picture),
# used to estimate the space a job needs before the clip exists.
GENERATED_BYTES_PER_PIXEL = 0.15
# Muxing overhead and rate-control overshoot on top of the target bitrate.
OUTPUT_MARGIN = 1.25
# The audio bitrate the FFmpeg engine uses, counted in case the input has sound.
AUDIO_KBPS = 128


def bandwidth_mbps(input_bytes: int, output_bytes: int, seconds: float) -> float:
    """The original agent's figure: bytes read and written, in Mbit/s of 2**20 bits."""
    if seconds <= 0:
        return 0.0
    return (input_bytes + output_bytes) * 8 / (seconds * 1024 * 1024)


def estimated_bytes(spec: EncodeSpec) -> int:
    """Disk space a job will fill: its output file, plus the generated input when it needs one.

    The output of a whole input is not counted: its length is known only once the input is opened.
    """
    seconds = spec.duration or 0.0
    output = 0.0
    if spec.ladder is not None:
        # Every rung is staged, then copied into the package: twice the ladder's bitrate until the stage goes.
        output = 2 * (spec.ladder.total_kbps + AUDIO_KBPS) * 1000 / 8 * seconds * OUTPUT_MARGIN
    elif spec.output_mode == "file":
        output = (spec.bitrate_kbps + AUDIO_KBPS) * 1000 / 8 * seconds * OUTPUT_MARGIN
    generated = 0.0 if spec.input else spec.width * spec.height * spec.fps * seconds * GENERATED_BYTES_PER_PIXEL
    return int(output + generated)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@attrs.frozen
class Attempt:
    """One way to run a job; ``unavailable`` says why it cannot run here (it is then skipped)."""

    engine: Engine
    hardware: HardwareEncoder | None = None
    unavailable: str = ""

    @property
    def label(self) -> str:
        """``gstreamer``, ``ffmpeg``, or the hardware encoder's name (``h264_nvenc``)."""
        return self.hardware.name if self.hardware is not None else self.engine.value

    def encoder(self, spec: EncodeSpec) -> str:
        """What encoded the video: ``libx264``, ``h264_nvenc``, ``x264enc``."""
        if self.hardware is not None:
            return self.hardware.name
        return encoder_element(spec.codec) if self.engine is Engine.GSTREAMER else spec.encoder


def plan_attempts(
    job_engine: Engine,
    spec: EncodeSpec,
    *,
    gstreamer: GStreamer | None,
    hardware: Sequence[HardwareEncoder],
) -> list[Attempt]:
    """The attempts for one job, in order; the last is always software FFmpeg.

    ``auto`` and ``ffmpeg`` run FFmpeg, which reads every input and writes
    every codec; ``gstreamer`` runs GStreamer first and FFmpeg once after it.
    FFmpeg tries a detected hardware encoder for the codec first, unless the
    job's ``hardware`` parameter is ``none`` (a vendor name picks that vendor).
    """
    ffmpeg = [Attempt(Engine.FFMPEG)]
    usable = [
        h for h in hardware
        if h.codec == spec.codec and spec.hardware != "none" and spec.hardware in ("auto", h.vendor)
    ]
    if usable:
        ffmpeg.insert(0, Attempt(Engine.FFMPEG, hardware=usable[0]))
    if job_engine is not Engine.GSTREAMER:
        return ffmpeg
    if gstreamer is None:
        reason = "GStreamer (gst-launch-1.0) is not installed on this worker"
    else:
        reason = gstreamer.unsupported(spec, generated_input=not spec.input)
    return [Attempt(Engine.GSTREAMER, unavailable=reason), *ffmpeg]


@attrs.define
class JobRunner:
    """Runs jobs with the engines of one worker inside its work directory.

    Args:
        settings: the agent's settings; the runner reads the job-related ones
            (work dir, input and output dirs, private-address allow-lists,
            timeouts, space reserve, what to keep) and nothing else.
        ffmpeg: the encoder binary (see ``find_ffmpeg``).
        inputs: the cache of generated test inputs.
        guardian: kills every child process should the agent die without stopping them.
        gstreamer: the installed GStreamer, or None: jobs asking for it run on FFmpeg
            (see :meth:`detect_engines`).
        hardware: hardware encoders that passed the one-frame test at start.
        stop: how an encoder is stopped; quitting sets both waits to 0.
        master: the master, spoken to as this node: it serves ``artifact:`` inputs and
            takes outputs delivered to it. None (unit tests) fails such jobs.
        artifacts: the cache of inputs downloaded from the master.
    """

    settings: AgentConfig
    ffmpeg: str
    inputs: InputCache
    guardian: Guardian | None = None
    gstreamer: GStreamer | None = None
    hardware: tuple[HardwareEncoder, ...] = ()
    stop: StopPolicy = attrs.field()
    master: MasterClient | None = None
    artifacts: ArtifactCache = attrs.field()

    @artifacts.default
    def _artifacts_in_work_dir(self) -> ArtifactCache:
        # Uploaded inputs share the generated inputs' bound: both are inputs kept for reuse.
        return ArtifactCache(self.settings.work_dir / "artifacts", self.settings.input_cache_mb * 1024 * 1024)

    @stop.default
    def _stop_from_settings(self) -> StopPolicy:
        return StopPolicy.within(self.settings.kill_timeout)

    @property
    def work_dir(self) -> Path:
        return self.settings.work_dir

    @property
    def rtmp_host(self) -> str:
        """Host of the default RTMP URL: the master's, as the original agent does."""
        return urllib.parse.urlsplit(self.settings.master_url).hostname or "localhost"

    @property
    def min_free_bytes(self) -> int:
        return self.settings.min_free_mb * 1024 * 1024

    @property
    def job_timeout(self) -> float | None:
        return self.settings.job_timeout

    @property
    def engines(self) -> list[str]:
        """The engines this runner can start, FFmpeg first."""
        return [Engine.FFMPEG.value] + ([Engine.GSTREAMER.value] if self.gstreamer is not None else [])

    async def detect_engines(self, gst_launch: str = "") -> None:
        """Find GStreamer (``gst_launch`` overrides the one on PATH) and the working hardware encoders.

        Both run child processes, so the guardian must be serving first;
        they run together, and what they find replaces ``gstreamer`` and
        ``hardware``.
        """

        async def gstreamer() -> None:
            self.gstreamer = await find_gstreamer(gst_launch, guardian=self.guardian)

        async def hardware() -> None:
            self.hardware = await detect_hardware_encoders(self.ffmpeg, guardian=self.guardian)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gstreamer)
            nursery.start_soon(hardware)

    def prepare(self, job: Job) -> EncodeSpec:
        """The job's encode spec under this worker's rules, built once when the job is claimed.

        Raises:
            JobRejected: the job cannot run here or anywhere (a bad parameter, an
                input outside ``--input-dir`` or missing); the message names the field.
        """
        settings = self.settings
        spec = build_spec(
            job, input_dirs=settings.input_dirs, output_dir=settings.output_dir, default_rtmp_host=self.rtmp_host,
            # Not the check of literal addresses: _open_input checks every resolved address.
            allow_private_inputs=True,
        )
        if not spec.input and not settings.generate_input:
            raise JobRejected(
                "input", "this worker does not generate test inputs (--generate-input=false); give an input"
            )
        local = spec.input and "://" not in spec.input and not spec.input.startswith(ARTIFACT_PREFIX)
        if local and (problem := input_file_problem(spec.input)):
            raise JobRejected("input", problem)
        return spec

    async def run(
        self,
        job: Job,
        spec: EncodeSpec,
        on_progress: Callable[[float, ProgressSnapshot], None],
        stop: trio.CancelScope,
        on_launch: Callable[[], None] = lambda: None,
    ) -> EncodeOutcome:
        """Encode ``spec`` and say how it went; never raises for a problem of the job or this worker.

        Cancelling ``stop`` stops the encoder the graceful way and ends the run
        with ``stopped`` set. Only a cancellation from outside ``stop`` escapes.
        ``on_launch`` is called once the encoder process runs (for a ladder, as
        its encodes begin); not at all when the job fails before that.
        """
        with stop:
            return await self._run(job, spec, on_progress, on_launch)
        return EncodeOutcome(stopped=True)

    async def _run(
        self, job: Job, spec: EncodeSpec, on_progress: Callable[[float, ProgressSnapshot], None],
        on_launch: Callable[[], None],
    ) -> EncodeOutcome:
        shortage = self._space_shortage(spec)
        if shortage:
            log.warning("Job %s refused: %s", job.id, shortage)
            return EncodeOutcome.failed(FailureReason.RESOURCE_ERROR, shortage)
        try:
            spec = attrs.evolve(spec, rtmp_url=await self._output_url(job, spec))
            async with self._open_input(spec) as input_path:
                if spec.ladder is not None:
                    on_launch()
                    return await self._encode_ladder(job, spec, input_path, on_progress)
                return await self._encode(job, spec, input_path, on_progress, on_launch)
        except InputGenerationFailed as exc:
            return EncodeOutcome.failed(FailureReason.PLATFORM_ERROR, str(exc))
        except JobRejected as exc:
            log.warning("Job %s refused: %s", job.id, exc)
            return EncodeOutcome.failed(FailureReason.USER_ERROR, str(exc))
        except DestinationUnavailable as exc:
            log.warning("Job %s: %s", job.id, exc)
            return EncodeOutcome.failed(exc.reason, str(exc))

    def _space_shortage(self, spec: EncodeSpec) -> str:
        """Why the work dir cannot take this job, or ``""``."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.work_dir).free
        needed = estimated_bytes(spec) + self.min_free_bytes
        if free >= needed:
            return ""
        mib = 1024 * 1024
        return (
            f"not enough free space in {self.work_dir}: {free // mib} MiB free, the job needs about "
            f"{needed // mib} MiB (its files plus the {self.min_free_bytes // mib} MiB reserve of "
            "--min-free-mb); free some space, or run the job on another worker"
        )

    async def _output_url(self, job: Job, spec: EncodeSpec) -> str:
        """The RTMP URL to stream to, its host replaced by the address that passed the check.

        The default URL names the master's host, which the operator chose
        with ``--master``: it is used as is, even when private (127.0.0.1 in
        local mode and tests). A URL the job gives is resolved and checked
        against ``--allow-private-outputs``, and FFmpeg gets the checked
        address so that it cannot resolve the name to another one.
        """
        if spec.output_mode != "rtmp" or job.parameters.get("rtmp_url") is None:
            return spec.rtmp_url
        return await checked_url(
            spec.rtmp_url, self.settings.allow_private_outputs, field="rtmp_url", flag="--allow-private-outputs"
        )

    @contextlib.asynccontextmanager
    async def _open_input(self, spec: EncodeSpec) -> AsyncIterator[str]:
        """The input FFmpeg reads: a local file (downloaded, given or generated) or a checked stream URL."""
        scheme = spec.input.partition("://")[0].lower() if "://" in spec.input else ""
        if scheme in ("http", "https"):
            room = shutil.disk_usage(self.work_dir).free - self.min_free_bytes - estimated_bytes(spec)
            async with open_http_input(
                spec.input, self.work_dir, allow=self.settings.allow_private_inputs, max_bytes=max(room, 0),
                deadline=spec.timeout_sec or self.job_timeout,
            ) as path:
                yield str(path)
            return
        if scheme == "s3":
            async with open_s3_input(spec.input, self.work_dir, client_for(self.settings.s3_endpoint)) as path:
                yield str(path)
            return
        if spec.input.startswith(ARTIFACT_PREFIX):
            if self.master is None:
                raise DestinationUnavailable("this worker has no master to download artifacts from",
                                             FailureReason.PLATFORM_ERROR)
            async with self.artifacts.open_input(self.master, spec.input) as path:
                yield str(path)
            return
        if scheme:
            # rtmp and srt inputs: FFmpeg connects, but to the address checked here.
            allow = self.settings.allow_private_inputs
            yield await checked_url(spec.input, allow, field="input", flag="--allow-private-inputs")
            return
        if spec.input:
            yield spec.input
            return
        assert spec.duration is not None  # build_spec gives every generated clip a duration
        async with self.inputs.open_clip(
            self.ffmpeg, spec.width, spec.height, spec.fps, spec.duration, keep=self.settings.persist_inputs
        ) as path:
            # Absolute: encoders run in the output directory, and --work-dir may have been given relative.
            yield str(path.resolve())

    def _argv(self, attempt: Attempt, spec: EncodeSpec, input_path: str, target: str) -> list[str]:
        if attempt.engine is Engine.GSTREAMER:
            assert self.gstreamer is not None
            return pipeline_argv(self.gstreamer.launch, spec, input_path, target)
        return encode_argv(self.ffmpeg, spec, input_path, target, hardware=attempt.hardware)

    async def _encode(
        self,
        job: Job,
        spec: EncodeSpec,
        input_path: str,
        on_progress: Callable[[float, ProgressSnapshot], None],
        on_launch: Callable[[], None],
    ) -> EncodeOutcome:
        output_path = self._output_path(job, spec)
        target = str(output_path) if spec.output_mode == "file" else spec.rtmp_url
        attempts = plan_attempts(job.engine, spec, gstreamer=self.gstreamer, hardware=self.hardware)
        fallbacks: list[tuple[str, str]] = []
        timeout = spec.timeout_sec or self.job_timeout
        length = spec.duration or await self._input_length(input_path)
        with trio.move_on_after(timeout if timeout else float("inf")) as timer:
            for attempt in attempts:
                if attempt.unavailable:
                    fallbacks.append((attempt.label, attempt.unavailable))
                    continue
                watch = EncoderWatch(
                    on_progress=lambda snap: on_progress(percent(snap, length), snap), on_start=on_launch
                )
                started = time.monotonic()
                argv = self._argv(attempt, spec, input_path, target)
                log.debug("job %s: %s", job.id, argv)
                await run_encoder(
                    argv, watch, cwd=output_path.parent, stop=self.stop, guardian=self.guardian,
                    stall_timeout=self.settings.stall_timeout,
                )
                if watch.returncode == 0 or attempt is attempts[-1]:
                    break
                error = self._exit_error(attempt, watch, input_path)
                log.warning("Job %s: %s; trying the next engine", job.id, error)
                fallbacks.append((attempt.label, error))
        elapsed = time.monotonic() - started

        input_bytes = _file_size(Path(input_path)) if "://" not in input_path else 0
        output_bytes = _file_size(output_path) if spec.output_mode == "file" else 0
        succeeded = watch.returncode == 0 and not watch.stalled and not timer.cancelled_caught
        try:
            delivered = await self._deliver(spec, output_path) if succeeded else {}
        except DestinationUnavailable as exc:
            log.warning("Job %s: %s", job.id, exc)
            metrics = self._metrics(spec, attempt, watch, elapsed, input_bytes, output_bytes, output_path)
            return EncodeOutcome.failed(exc.reason, str(exc), logs=watch.stderr_tail, metrics=metrics)
        if not self.settings.persist_outputs:
            output_path.unlink(missing_ok=True)
            if not spec.output_dir:
                with contextlib.suppress(OSError):
                    output_path.parent.rmdir()
        metrics = self._metrics(spec, attempt, watch, elapsed, input_bytes, output_bytes, output_path) | delivered
        if fallbacks:
            metrics["fallback_from"] = ",".join(label for label, _ in fallbacks)
            metrics["fallback_error"] = "; ".join(error for _, error in fallbacks)
        common: dict[str, Any] = {"metrics": metrics, "logs": watch.stderr_tail}
        if timer.cancelled_caught:
            return EncodeOutcome.failed(
                FailureReason.TIMEOUT, f"encoder stopped after the job's timeout of {timeout:g}s", **common
            )
        if watch.stalled:
            return EncodeOutcome.failed(FailureReason.STALLED, self._exit_error(attempt, watch, input_path), **common)
        if watch.returncode != 0:
            fault = job_fault(watch.stderr_tail, input_path)
            reason = FailureReason.USER_ERROR if fault else FailureReason.RUNTIME_ERROR
            return EncodeOutcome.failed(reason, self._exit_error(attempt, watch, input_path), **common)
        return EncodeOutcome(**common)

    async def _encode_ladder(
        self, job: Job, spec: EncodeSpec, input_path: str, on_progress: Callable[[float, ProgressSnapshot], None]
    ) -> EncodeOutcome:
        """A ladder job: its rungs packaged into the directory its output names (see agent/worker/ladder.py)."""
        # Imported here: the ladder runner builds on this module's helpers.
        from agent.worker.ladder import LadderRunner

        runner = LadderRunner(
            ffmpeg=self.ffmpeg, mode=self.settings.ladder_mode, stop=self.stop, guardian=self.guardian,
            stall_timeout=self.settings.stall_timeout, stage_root=self.work_dir / "ladders",
            deliver=lambda package: self._deliver(spec, package), persist_outputs=self.settings.persist_outputs,
        )
        package_dir = self._output_path(job, spec)
        timeout = spec.timeout_sec or self.job_timeout
        outcome = await runner.run(job, spec, input_path, package_dir, on_progress, timeout)
        if not self.settings.persist_outputs and not spec.output_dir:
            with contextlib.suppress(OSError):
                package_dir.parent.rmdir()
        return outcome

    async def _input_length(self, input_path: str) -> float:
        """Seconds of a whole input, which progress is counted against; 0 (progress unknown) for a stream.

        A file FFmpeg cannot read also gives 0: its encode fails too, and says why.
        """
        if "://" in input_path:
            return 0.0
        try:
            return (await probe_media(self.ffmpeg, input_path, guardian=self.guardian)).duration
        except ProbeFailed as exc:
            log.debug("cannot measure %s for progress: %s", input_path, exc)
            return 0.0

    async def _deliver(self, spec: EncodeSpec, output_path: Path) -> dict[str, Any]:
        """Deliver the output where the job asked; the metrics that say where it went (none: kept here)."""
        delivery = delivery_for(
            spec.deliver, self.master, allow=self.settings.allow_private_outputs, s3_endpoint=self.settings.s3_endpoint
        )
        return await delivery.deliver(output_path) if delivery is not None else {}

    def _exit_error(self, attempt: Attempt, watch: EncoderWatch, input_path: str) -> str:
        """Why an attempt failed, in one line: a stall, the job's own fault, or FFmpeg's last word."""
        if watch.stalled:
            return (
                f"{attempt.label} made no progress for {self.settings.stall_timeout:g}s and was stopped "
                f"(--stall-timeout); last output: {last_line(watch.stderr_tail)}"
            )
        detail = job_fault(watch.stderr_tail, input_path) or last_line(watch.stderr_tail)
        return f"{attempt.label} exited with code {watch.returncode}: {detail}"

    def _output_path(self, job: Job, spec: EncodeSpec) -> Path:
        directory = Path(spec.output_dir) if spec.output_dir else self.work_dir / "outputs" / job.id
        directory.mkdir(parents=True, exist_ok=True)
        # Absolute, like the input: the encoder runs in this directory.
        return directory.resolve() / spec.output_name

    def _metrics(
        self,
        spec: EncodeSpec,
        attempt: Attempt,
        watch: EncoderWatch,
        elapsed: float,
        input_bytes: int,
        output_bytes: int,
        output_path: Path,
    ) -> dict[str, Any]:
        last = watch.last_progress
        duration = round(elapsed, 3)
        metrics: dict[str, Any] = {
            "duration": duration,
            "engine": attempt.engine.value,
            "encoder": attempt.encoder(spec),
            "scenario": spec.scenario,
            "codec": spec.codec,
            "resolution": f"{spec.width}x{spec.height}",
            "input_file_bytes": input_bytes,
            "output_file_bytes": output_bytes,
            # From the rounded duration, so that anyone can redo the sum from the result.
            "bandwidth_mbps": round(bandwidth_mbps(input_bytes, output_bytes, duration), 3),
            "exit_code": watch.returncode,
        }
        if spec.output_mode == "rtmp":
            metrics["rtmp_url"] = spec.rtmp_url
        elif self.settings.persist_outputs:
            metrics["output_file"] = str(output_path)
        # GStreamer reports only its position, and FFmpeg's last block of a short
        # encode may say fps 0: what the engine left out is worked out from the
        # frames, the media seconds and the output size over the attempt's time.
        # A generated clip that encoded without error was encoded whole.
        reported = last or ProgressSnapshot()
        media_s = reported.out_time_s if spec.input or spec.duration is None or watch.returncode else spec.duration
        frames = reported.frame or round(media_s * spec.fps)
        seconds = max(elapsed, 0.001)
        if last is not None or frames:
            metrics.update(
                frames=frames,
                fps=reported.fps or round(frames / seconds, 2),
                speed=reported.speed or round(media_s / seconds, 3),
                bitrate_kbps=reported.bitrate_kbps or (round(output_bytes * 8 / 1000 / media_s, 1) if media_s else 0.0),
            )
        return metrics


def last_line(text: str) -> str:
    """The last non-empty line of an encoder's stderr tail: usually why it failed."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"
