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
    CLAIMED --Claimed(spec)--> ENCODING --EncoderExited--> DONE  (the encode's own outcome)
                                  |  Progressed: SendProgress, at most one per interval
                                  '--StopRequested--> STOPPING --EncoderExited--> DONE (canceled / shutdown)

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
    """The job was leased to this node; ``spec`` is built once, here, or ``rejection`` says why not."""

    spec: EncodeSpec | None = None
    rejection: str = ""
    draining: bool = False


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

    def _claimed(self, event: Claimed) -> list[Action]:
        if self.phase is not Phase.CLAIMED:
            return []
        if event.draining:
            result = self._failure(FailureReason.PLATFORM_ERROR, NOT_STARTED_ERROR, not_started=True)
            return self._done(result, counts_for_health=False)
        if event.spec is None:
            return self._done(self._failure(FailureReason.USER_ERROR, event.rejection), counts_for_health=True)
        self.phase, self.spec = Phase.ENCODING, event.spec
        return [StartEncoder(event.spec)]

    def _progressed(self, event: Progressed) -> list[Action]:
        self.progress, self.last_snapshot = event.percent, event.snapshot
        due = self._progress_sent_at is None or event.now - self._progress_sent_at >= PROGRESS_INTERVAL_S
        if self.phase is not Phase.ENCODING or not due:
            return []
        self._progress_sent_at = event.now
        snapshot = event.snapshot
        update = JobProgress(
            node_id=self.node_id, progress=event.percent, fps=snapshot.fps, speed=snapshot.speed,
            bitrate_kbps=snapshot.bitrate_kbps, out_time_s=snapshot.out_time_s,
        )
        return [SendProgress(update)]

    def _stop(self, reason: StopReason) -> list[Action]:
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
