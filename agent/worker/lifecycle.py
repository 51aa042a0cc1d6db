"""One job's life on a worker, as plain decisions: events in, actions out.

This is the worker's counterpart of :mod:`agent.master.scheduler`: no trio, no
I/O. A :class:`JobLife` is told what happened to its job and answers with what
to do; the trio driver (:mod:`agent.worker.jobs`) turns events from the
encoder, the master and the agent into calls of :meth:`JobLife.handle` and
carries out the actions it returns. Every result a worker reports is built
here, and every way a job is stopped — a cancel pushed by the master, a
heartbeat reply, a refused progress update, a status poll, a shutdown — is one
event, :class:`StopRequested`, with its reason.

States and events (see "The job lifecycle" in docs/architecture.rst)::

    CLAIMED --Claimed(draining)--------------------------> DONE  (handed back unstarted)
    CLAIMED --Claimed(rejection)-------------------------> DONE  (user_error)
    CLAIMED --StopRequested--> CLAIMED --Claimed---------> DONE  (stopped before it started: canceled,
                                                                  or handed back unstarted by a shutdown)
    CLAIMED --Claimed(spec)--> ENCODING --EncoderExited--> DONE  (the encode's own outcome)
                                  |  Progressed: SendProgress, at most one per interval
                                  '--StopRequested--> STOPPING --EncoderExited--> DONE (canceled / shutdown)

A job stays ``CLAIMED`` while it waits for a slot (prefetched, see "The worker
agent" in docs/architecture.rst); :meth:`JobLife.ends_within` says whether a
running job is about to free its slot, which is when a prefetch is worth it.

Actions: :class:`StartEncoder`, :class:`SendProgress`, :class:`StopEncoder`,
:class:`Report`. A job reaches ``DONE`` exactly once, with exactly one
:class:`Report`; events after that are ignored.
"""

from __future__ import annotations

import enum
from typing import Any, Union

import attrs

from agent.models import FailureReason, Job, JobProgress, JobResult, JobStatus
from agent.scenarios import EncodeSpec
from agent.worker.progress import ProgressSnapshot

__all__ = [
    "SHORT_JOB_S",
    "PROGRESS_INTERVAL_S",
    "Action",
    "Claimed",
    "EncodeOutcome",
    "EncoderExited",
    "Event",
    "JobLife",
    "Phase",
    "Progressed",
    "Report",
    "SendProgress",
    "StartEncoder",
    "StopEncoder",
    "StopReason",
    "StopRequested",
]

# Progress is a nicety: at most one update per job per interval reaches the master.
PROGRESS_INTERVAL_S = 1.0

# Before its first progress report, a job counts as ending soon only if it asks for at
# most this many seconds of media: such jobs mostly end before any report, while a long
# transcode, a whole input or a stream without a duration may run for hours.
SHORT_JOB_S = 2.0

# The error of a job handed back unstarted; the Go master reads only this text.
NOT_STARTED_ERROR = "not started: worker draining"


class Phase(enum.Enum):
    CLAIMED = "claimed"
    ENCODING = "encoding"
    STOPPING = "stopping"
    DONE = "done"


class StopReason(str, enum.Enum):
    """Why a running job is stopped from outside; the first reason given wins."""

    CANCELED = "canceled"  # canceled (or paused, or timed out) on the master: push, heartbeat
    PAUSED = "paused"  # seen paused by a status poll (a master without push)
    LEASE_LOST = "no longer leased to this node"  # the master refused its progress (409)
    SHUTDOWN = "shutdown"  # the worker stops and the job's grace is over

    @property
    def from_master(self) -> bool:
        return self is not StopReason.SHUTDOWN


@attrs.frozen
class EncodeOutcome:
    """What one encode came to, as the runner saw it; :class:`JobLife` makes the result of it.

    ``failure`` is ``None`` for an encode that succeeded; ``stopped`` marks an
    encode ended by :class:`StopEncoder` before it could finish.
    """

    failure: FailureReason | None = None
    error: str = ""
    metrics: dict[str, Any] = attrs.field(factory=dict)
    logs: str = ""
    stopped: bool = False

    @classmethod
    def failed(cls, reason: FailureReason, error: str, **fields: Any) -> EncodeOutcome:
        return cls(failure=reason, error=error, **fields)


# --- events -------------------------------------------------------------------------


@attrs.frozen
class Claimed:
    """The job may start: ``spec`` is built once, here, or ``rejection`` says why not.

    ``draining``: the worker stops, so the job goes back unstarted.
    ``shown_prefetched``: the master was told the job waits for a slot, so it
    is told at once that it runs (progress 0, stage ``encoding``).
    """

    spec: EncodeSpec | None = None
    rejection: str = ""
    draining: bool = False
    shown_prefetched: bool = False


@attrs.frozen
class Progressed:
    percent: float
    snapshot: ProgressSnapshot
    now: float


@attrs.frozen
class StopRequested:
    reason: StopReason


@attrs.frozen
class EncoderExited:
    outcome: EncodeOutcome


Event = Union[Claimed, Progressed, StopRequested, EncoderExited]


# --- actions ------------------------------------------------------------------------


@attrs.frozen
class StartEncoder:
    spec: EncodeSpec


@attrs.frozen
class SendProgress:
    update: JobProgress


@attrs.frozen
class StopEncoder:
    reason: StopReason


@attrs.frozen
class Report:
    """Deliver ``result``. ``counts_for_health``: the job ended by itself, so the circuit breaker learns from it."""

    result: JobResult
    counts_for_health: bool


Action = Union[StartEncoder, SendProgress, StopEncoder, Report]


@attrs.define
class JobLife:
    """The state of one claimed job on this worker."""

    job: Job
    node_id: str
    phase: Phase = Phase.CLAIMED
    spec: EncodeSpec | None = None
    progress: float = 0.0
    last_snapshot: ProgressSnapshot | None = None
    stop_reason: StopReason | None = None
    _progress_sent_at: float | None = None

    def handle(self, event: Event) -> list[Action]:
        """The actions ``event`` calls for; none when it comes too late to matter."""
        if self.phase is Phase.DONE:
            return []
        if isinstance(event, Claimed):
            return self._claimed(event)
        if isinstance(event, Progressed):
            return self._progressed(event)
        if isinstance(event, StopRequested):
            return self._stop(event.reason)
        return self._exited(event.outcome)

    def ends_within(self, lead: float, running_s: float) -> bool:
        """Whether this job is expected to free its slot within ``lead`` seconds.

        From its progress when it has some (time so far over the share done);
        before any, only a job of at most :data:`SHORT_JOB_S` seconds of media.
        A job not encoding holds no slot, or is already stopping.
        """
        if self.phase is not Phase.ENCODING or self.spec is None:
            return False
        if self.progress <= 0:
            return self.spec.duration is not None and self.spec.duration <= SHORT_JOB_S
        return running_s * (100.0 - self.progress) / self.progress <= lead

    def _claimed(self, event: Claimed) -> list[Action]:
        if self.phase is not Phase.CLAIMED:
            return []
        if self.stop_reason is not None and self.stop_reason.from_master:
            # Canceled on the master while it waited for a slot: it never started.
            result = JobResult(
                job_id=self.job.id, node_id=self.node_id, status=JobStatus.CANCELED, progress=0.0,
                error=f"{self.stop_reason.value} on the master",
            )
            return self._done(result, counts_for_health=False)
        if event.draining or self.stop_reason is StopReason.SHUTDOWN:
            result = self._failure(FailureReason.PLATFORM_ERROR, NOT_STARTED_ERROR, not_started=True)
            return self._done(result, counts_for_health=False)
        if event.spec is None:
            return self._done(self._failure(FailureReason.USER_ERROR, event.rejection), counts_for_health=True)
        self.phase, self.spec = Phase.ENCODING, event.spec
        if event.shown_prefetched:
            return [StartEncoder(event.spec), SendProgress(self._update(0.0, ProgressSnapshot()))]
        return [StartEncoder(event.spec)]

    def _progressed(self, event: Progressed) -> list[Action]:
        self.progress, self.last_snapshot = event.percent, event.snapshot
        due = self._progress_sent_at is None or event.now - self._progress_sent_at >= PROGRESS_INTERVAL_S
        if self.phase is not Phase.ENCODING or not due:
            return []
        self._progress_sent_at = event.now
        return [SendProgress(self._update(event.percent, event.snapshot))]

    def _update(self, percent: float, snapshot: ProgressSnapshot) -> JobProgress:
        return JobProgress(
            node_id=self.node_id, progress=percent, fps=snapshot.fps, speed=snapshot.speed,
            bitrate_kbps=snapshot.bitrate_kbps, out_time_s=snapshot.out_time_s, stage=JobProgress.ENCODING,
        )

    def _stop(self, reason: StopReason) -> list[Action]:
        if self.phase is Phase.CLAIMED and self.stop_reason is None:
            self.stop_reason = reason  # decided when it would start (Claimed)
            return []
        if self.phase is not Phase.ENCODING:
            return []
        self.phase, self.stop_reason = Phase.STOPPING, reason
        return [StopEncoder(reason)]

    def _exited(self, outcome: EncodeOutcome) -> list[Action]:
        if self.phase not in (Phase.ENCODING, Phase.STOPPING):
            return []
        kept: dict[str, Any] = {"metrics": outcome.metrics, "logs": outcome.logs}
        if outcome.stopped and self.stop_reason is not None and self.stop_reason.from_master:
            result = JobResult(
                job_id=self.job.id, node_id=self.node_id, status=JobStatus.CANCELED, progress=self.progress,
                error=f"{self.stop_reason.value} on the master", **kept,
            )
            return self._done(result, counts_for_health=False)
        if outcome.stopped:
            # Cut short by the worker's own shutdown: the master runs it again elsewhere.
            result = self._failure(FailureReason.PLATFORM_ERROR, "worker shutdown", progress=self.progress, **kept)
            return self._done(result, counts_for_health=False)
        if outcome.failure is not None:
            return self._done(self._failure(outcome.failure, outcome.error, **kept), counts_for_health=True)
        result = JobResult(
            job_id=self.job.id, node_id=self.node_id, status=JobStatus.COMPLETED, progress=100.0, **kept
        )
        return self._done(result, counts_for_health=True)

    def _failure(self, reason: FailureReason, error: str, **fields: Any) -> JobResult:
        return JobResult.failure(self.job, self.node_id, reason, error, **fields)

    def _done(self, result: JobResult, *, counts_for_health: bool) -> list[Action]:
        self.phase = Phase.DONE
        return [Report(result, counts_for_health)]
