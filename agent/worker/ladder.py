"""Runs a ladder job: encode the rungs in the chosen mode, package them, check the package, deliver it.

The job runner hands a ladder job here once its input is open
(:meth:`~agent.worker.jobrunner.JobRunner.run`). The FFmpeg command lines
come from :mod:`agent.worker.engines.ffmpeg_ladder`; each process runs
through :func:`~agent.worker.encoder.run_encoder`, so it has its own
session, is guarded, stopped gracefully on cancel and stopped when its
output stops advancing (the stall detector watches each process).

Progress is one stream: the slowest encode's position, so in ``split`` mode
the job reaches 100 % when its last rung does. In ``split`` mode the rung
processes run at once inside the job's one slot, since one process alone
leaves a core idle while it decodes; ``single`` still beats them (see
:func:`~agent.ladder.choose_mode`). When one fails, the others are stopped.

Like the single-file path, every way this can go wrong ends as an
:class:`~agent.worker.lifecycle.EncodeOutcome`: an encoder exit that shows
the job's own fault is ``user_error`` and names the rung in ``split`` mode,
a package that fails the player checks is ``runtime_error``.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from agent.ladder import Ladder, choose_mode
from agent.models import FailureReason, Job
from agent.scenarios import EncodeSpec, JobRejected
from agent.worker.encoder import EncoderWatch, StopPolicy, run_encoder
from agent.worker.engines.ffmpeg import ProbeFailed, probe_media
from agent.worker.engines.ffmpeg_ladder import (
    LadderPlan,
    finish_manifest,
    finish_master_playlist,
    ladder_plan,
    staged_video,
)
from agent.worker.failures import job_fault
from agent.worker.guardian import Guardian
from agent.worker.jobrunner import bandwidth_mbps, last_line
from agent.worker.lifecycle import EncodeOutcome
from agent.worker.netguard import DestinationUnavailable
from agent.worker.package_check import ExpectedRung, check_package
from agent.worker.progress import ProgressSnapshot, percent

__all__ = ["LadderRunner"]

log = logging.getLogger(__name__)

Deliver = Callable[[Path], Awaitable[dict[str, Any]]]
OnProgress = Callable[[float, ProgressSnapshot], None]


class _Failed(Exception):
    """One step of the ladder failed; carries the outcome's reason and message."""

    def __init__(self, reason: FailureReason, message: str, watch: EncoderWatch | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.watch = watch


@attrs.define
class _Progress:
    """The slowest of several encodes, reported as the job's one progress stream."""

    on_progress: OnProgress
    length: float
    latest: list[ProgressSnapshot | None]

    def watch(self, index: int) -> EncoderWatch:
        return EncoderWatch(on_progress=lambda snapshot: self._update(index, snapshot))

    def _update(self, index: int, snapshot: ProgressSnapshot) -> None:
        self.latest[index] = snapshot
        slowest = min((s or ProgressSnapshot() for s in self.latest), key=lambda s: (s.done, s.out_time_s))
        self.on_progress(percent(slowest, self.length), slowest)

    @property
    def slowest(self) -> ProgressSnapshot | None:
        reported = [s for s in self.latest if s is not None]
        return min(reported, key=lambda s: (s.done, s.out_time_s)) if len(reported) == len(self.latest) else None


@attrs.frozen
class LadderRunner:
    """What a ladder needs from its worker: the FFmpeg binary, how to stop it, where to stage, how to deliver.

    Args:
        ffmpeg: the binary.
        mode: ``--ladder-mode`` (``auto``, ``single`` or ``split``).
        stop: how encoders are stopped.
        guardian: kills every child should the agent die.
        stall_timeout: ``--stall-timeout``; 0 never.
        stage_root: the work dir's directory for staged rungs (a directory per job, removed after).
        deliver: delivers the package directory where the job asked (the job runner's delivery).
        persist_outputs: keep the package on this worker after delivery.
    """

    ffmpeg: str
    mode: str
    stop: StopPolicy
    guardian: Guardian | None
    stall_timeout: float
    stage_root: Path
    deliver: Deliver
    persist_outputs: bool

    async def run(
        self, job: Job, spec: EncodeSpec, input_path: str, package_dir: Path, on_progress: OnProgress,
        timeout: float | None,
    ) -> EncodeOutcome:
        """Encode, package, check and deliver ``spec``'s ladder into ``package_dir``; never raises for a failure.

        ``timeout`` bounds the encodes and packaging (None: no bound). A
        cancel from outside stops every encoder and propagates.
        """
        ladder = spec.ladder
        assert ladder is not None
        mode, why = choose_mode(self.mode, ladder)
        started = time.monotonic()
        length, audio = await self._probe(spec, input_path)
        # Absolute: the encoders run in it, and the work dir may have been given relative.
        stage_dir = self.stage_root.resolve() / hashlib.sha256(job.id.encode()).hexdigest()[:16]
        for directory in (stage_dir, package_dir):
            # A retry on this node starts afresh: no segment of an earlier attempt may stay in the package.
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        plan = ladder_plan(self.ffmpeg, spec, input_path, stage_dir=stage_dir, mode=mode, audio=audio)
        progress = _Progress(on_progress, length, [None] * len(plan.encodes))
        metrics: dict[str, Any] = {"ladder_mode": mode, "ladder_mode_reason": why}
        logs = ""
        undelivered = False
        try:
            with trio.move_on_after(timeout if timeout else float("inf")) as timer:
                logs = await self._encode(plan, progress, input_path, stage_dir)
                metrics["rungs"] = _rung_metrics(ladder, stage_dir)
                logs = await self._package(plan, package_dir)
            if timer.cancelled_caught:
                raise _Failed(FailureReason.TIMEOUT, f"encoder stopped after the job's timeout of {timeout:g}s")
            if ladder.package == "hls":
                await trio.to_thread.run_sync(finish_master_playlist, package_dir, ladder.rungs, audio)
            elif ladder.package == "dash":
                await trio.to_thread.run_sync(finish_manifest, package_dir)
            await self._check(spec, ladder, package_dir, audio, length)
            metrics |= _output_metrics(job, spec, ladder, progress.slowest, input_path, package_dir, started)
            metrics["package_check"] = "passed"
            if self.persist_outputs:
                metrics["output_file"] = str(package_dir)
            try:
                metrics |= await self.deliver(package_dir)
            except (DestinationUnavailable, JobRejected):
                # Kept, as a single output is, for whoever retries it; a refusal (JobRejected) is the job runner's.
                undelivered = True
                raise
        except _Failed as exc:
            log.warning("Job %s: %s", job.id, exc)
            return EncodeOutcome.failed(exc.reason, str(exc), metrics=metrics,
                                        logs=exc.watch.stderr_tail if exc.watch else logs)
        except DestinationUnavailable as exc:
            log.warning("Job %s: %s", job.id, exc)
            return EncodeOutcome.failed(exc.reason, str(exc), metrics=metrics, logs=logs)
        finally:
            shutil.rmtree(stage_dir, ignore_errors=True)
            if not self.persist_outputs and not undelivered:
                shutil.rmtree(package_dir, ignore_errors=True)
        return EncodeOutcome(metrics=metrics, logs=logs)

    async def _probe(self, spec: EncodeSpec, input_path: str) -> tuple[float, bool]:
        """Seconds to encode (for progress) and whether the input has sound to share between rungs.

        The generated clip is known: silent, and as long as the job asked. An
        input FFmpeg cannot read is left to the encode, which fails and says why.
        """
        if not spec.input:
            return spec.duration or 0.0, False
        try:
            info = await probe_media(self.ffmpeg, input_path, guardian=self.guardian)
        except ProbeFailed as exc:
            log.debug("cannot probe %s: %s", input_path, exc)
            return spec.duration or 0.0, False
        length = min(spec.duration, info.duration) if spec.duration is not None else info.duration
        return length, bool(info.audio_codec)

    async def _encode(self, plan: LadderPlan, progress: _Progress, input_path: str, stage_dir: Path) -> str:
        """Run the encodes together; the first failure stops the others. Returns the stderr tail."""
        watches = [progress.watch(i) for i in range(len(plan.encodes))]
        failures: list[_Failed] = []

        async def encode(index: int, scope: trio.CancelScope) -> None:
            watch = watches[index]
            await self._run(plan.encodes[index], watch, cwd=stage_dir)
            if watch.returncode != 0 or watch.stalled:
                rungs = plan.encode_rungs[index]
                which = f"rung {rungs[0].index} ({rungs[0].text}): " if plan.mode == "split" else ""
                failures.append(self._failure(f"{which}ffmpeg", watch, input_path))
                scope.cancel()

        async with trio.open_nursery() as nursery:
            for index in range(len(plan.encodes)):
                nursery.start_soon(encode, index, nursery.cancel_scope)
        if failures:
            raise failures[0]
        return watches[0].stderr_tail

    async def _package(self, plan: LadderPlan, package_dir: Path) -> str:
        watch = EncoderWatch()
        await self._run(plan.package, watch, cwd=package_dir)
        if watch.returncode != 0 or watch.stalled:
            failure = self._failure("packaging (ffmpeg)", watch, "")
            # The encodes succeeded: a copy that fails is not the input's fault.
            raise _Failed(FailureReason.STALLED if watch.stalled else FailureReason.RUNTIME_ERROR, str(failure), watch)
        return watch.stderr_tail

    async def _run(self, argv: list[str], watch: EncoderWatch, cwd: Path) -> None:
        log.debug("ladder: %s", argv)
        await run_encoder(argv, watch, cwd=cwd, stop=self.stop, guardian=self.guardian,
                          stall_timeout=self.stall_timeout)

    def _failure(self, what: str, watch: EncoderWatch, input_path: str) -> _Failed:
        if watch.stalled:
            return _Failed(
                FailureReason.STALLED,
                f"{what} made no progress for {self.stall_timeout:g}s and was stopped (--stall-timeout); "
                f"last output: {last_line(watch.stderr_tail)}", watch,
            )
        fault = job_fault(watch.stderr_tail, input_path)
        reason = FailureReason.USER_ERROR if fault else FailureReason.RUNTIME_ERROR
        return _Failed(reason, f"{what} exited with code {watch.returncode}: {fault or last_line(watch.stderr_tail)}",
                       watch)

    async def _check(self, spec: EncodeSpec, ladder: Ladder, package_dir: Path, audio: bool, length: float) -> None:
        """Play the package as a player would; a package that fails is this worker's failure, not the job's."""
        rungs = [ExpectedRung(rung.text, rung.width, rung.height, rung.fps, rung.codec) for rung in ladder.rungs]
        problems = await check_package(package_dir, ladder.package, rungs, ffmpeg=self.ffmpeg,
                                       duration=length or None, audio=audio, guardian=self.guardian)
        if problems:
            raise _Failed(FailureReason.RUNTIME_ERROR, "the package failed the player checks: " + "; ".join(problems))


def _rung_metrics(ladder: Ladder, stage_dir: Path) -> list[dict[str, Any]]:
    """Each rung's size, as encoded (its staged video)."""
    return [
        {"rung": rung.text, "resolution": f"{rung.width}x{rung.height}", "fps": rung.fps, "bitrate": rung.bitrate,
         "video_bytes": staged_video(stage_dir, rung).stat().st_size}
        for rung in ladder.rungs
    ]


def _output_metrics(
    job: Job, spec: EncodeSpec, ladder: Ladder, last: ProgressSnapshot | None, input_path: str, package_dir: Path,
    started: float,
) -> dict[str, Any]:
    """The metrics every job has (as the single-file path records them), for the package as the output."""
    elapsed = max(time.monotonic() - started, 0.001)
    input_bytes = Path(input_path).stat().st_size if "://" not in input_path else 0
    output_bytes = sum(path.stat().st_size for path in package_dir.rglob("*") if path.is_file())
    top = ladder.rungs[0]
    metrics: dict[str, Any] = {
        "duration": round(elapsed, 3),
        "engine": "ffmpeg",
        "encoder": ladder.encoders,
        "scenario": spec.scenario,
        "codec": ",".join(dict.fromkeys(rung.codec for rung in ladder.rungs)),
        "resolution": f"{top.width}x{top.height}",
        "package": ladder.package,
        "ladder_rungs": len(ladder.rungs),
        "input_file_bytes": input_bytes,
        "output_file_bytes": output_bytes,
        "bandwidth_mbps": round(bandwidth_mbps(input_bytes, output_bytes, round(elapsed, 3)), 3),
        "exit_code": 0,
    }
    if last is not None:
        metrics.update(frames=last.frame, fps=last.fps or round(last.frame / elapsed, 2),
                       speed=last.speed or round(last.out_time_s / elapsed, 3), bitrate_kbps=last.bitrate_kbps)
    return metrics

