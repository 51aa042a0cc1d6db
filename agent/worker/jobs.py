"""The trio driver of job lifecycles: one task per claimed job, from claim to delivered result.

:mod:`agent.worker.lifecycle` decides; this module feeds it events and
carries out its actions. For one job::

    JobTasks.run(job, slot)                 the job task
     ├─ slot.acquire()                      a prefetched job waits here for a slot (stage "prefetched")
     ├─ runner.prepare(job)                 the spec, built once -> Claimed
     └─ nursery
         ├─ encode         runner.run(...)  progress callbacks -> Progressed; its end -> EncoderExited
         └─ progress       sends SendProgress updates one at a time; a 409 -> StopRequested(LEASE_LOST);
                           against a master without the progress route, polls the job's status instead
    then: metrics, the circuit breaker, the slot freed, reporter.deliver(result)

The slot bounds encoders, so it is freed as soon as the result is made: the
next job starts while this one's result is on its way (the reporter still
holds the job, and heartbeats list it, until the master has it).

Stops come from outside through :meth:`JobTasks.stop` (the agent calls it for
a pushed cancel, a heartbeat reply and a shutdown) and all become one
:class:`~agent.worker.lifecycle.StopRequested` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

import attrs
import trio

from agent.client import MasterError, StateConflict, UnknownToMaster
from agent.models import Job, JobProgress, JobResult, JobStatus
from agent.scenarios import EncodeSpec, JobRejected
from agent.worker.breaker import CircuitBreaker
from agent.worker.lifecycle import (
    Action,
    Claimed,
    EncodeOutcome,
    EncoderExited,
    JobLife,
    Progressed,
    Report,
    SendProgress,
    StartEncoder,
    StopEncoder,
    StopReason,
    StopRequested,
)
from agent.worker.metrics import AgentMetrics, EncoderTally
from agent.worker.progress import ProgressSnapshot

__all__ = ["LAUNCH_WAIT_S", "EncodeRunner", "JobTasks", "ProgressCalls", "ResultSink", "RunningJob", "Slot"]

log = logging.getLogger(__name__)

# Without the progress route (the Go master), how often a running job's status is read.
STATUS_POLL_INTERVAL_S = 5.0
# A prefetched job still waiting for a slot after this long is shown as such on the master;
# one that waits less costs no request (most wait a fraction of a job's length).
PREFETCH_SHOWN_AFTER_S = 1.0
# A claim, or a result, waits until the encoders of the jobs holding slots run, this long at most:
# starting one is a few milliseconds, fetching or generating its input may take longer.
LAUNCH_WAIT_S = 0.05


class EncodeRunner(Protocol):
    """What runs the encodes (:class:`~agent.worker.jobrunner.JobRunner`; a fake in tests)."""

    def prepare(self, job: Job) -> EncodeSpec: ...

    async def run(
        self, job: Job, spec: EncodeSpec, on_progress: Any, stop: trio.CancelScope, on_launch: Callable[[], None]
    ) -> EncodeOutcome: ...


class ProgressCalls(Protocol):
    """The master calls a running job makes (:class:`~agent.client.MasterClient`)."""

    async def send_progress(self, job_id: str, progress: JobProgress) -> None: ...

    async def get_job(self, job_id: str) -> Job: ...


class ResultSink(Protocol):
    """Where results go (:class:`~agent.worker.reporter.ResultReporter`)."""

    async def deliver(self, result: JobResult) -> None: ...


@attrs.define(eq=False)  # the limiter's borrower: hashed by identity
class Slot:
    """One of the poller's slots (``limiter``) for one job: taken before the claim, or, prefetched, after it."""

    limiter: trio.CapacityLimiter
    held: bool = False

    @classmethod
    async def taken(cls, limiter: trio.CapacityLimiter) -> Slot:
        """A slot, waiting for one to be free."""
        slot = cls(limiter)
        await slot.acquire()
        return slot

    async def acquire(self) -> None:
        await self.limiter.acquire_on_behalf_of(self)
        self.held = True

    def release(self) -> None:
        """Free the slot; a no-op when not held."""
        if self.held:
            self.held = False
            self.limiter.release_on_behalf_of(self)


@attrs.define
class RunningJob:
    """A claimed job between its claim and its result: the lifecycle and what drives it."""

    life: JobLife
    stop_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    started_monotonic: float = attrs.field(factory=time.monotonic)
    tally: EncoderTally = attrs.field()
    report: Report | None = None
    _nursery: trio.Nursery | None = None
    _progress_due: trio.Event = attrs.field(factory=trio.Event)
    _pending_progress: JobProgress | None = None
    # While prefetched: cancelled to stop waiting for a slot (a drain, a cancel).
    _slot_wait: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _shown_prefetched: bool = False
    _encode_started: float | None = None
    # Set once its encoder runs, or once it ended without one.
    _launched: trio.Event = attrs.field(factory=trio.Event)

    @property
    def prefetched(self) -> bool:
        """Claimed, waiting for a slot: its encoder has not started."""
        return self._encode_started is None and self.report is None

    def mark_started(self) -> None:
        """Its slot is held: from now on it encodes (or ends unstarted), it no longer waits."""
        self._encode_started = time.monotonic()

    @property
    def launching(self) -> bool:
        """Holding its slot, its encoder not running yet."""
        return self._encode_started is not None and not self._launched.is_set()

    def ends_within(self, lead: float) -> bool:
        """Whether its encode is expected to end within ``lead`` seconds (see ``JobLife.ends_within``)."""
        if self._encode_started is None:
            return False
        return self.life.ends_within(lead, time.monotonic() - self._encode_started)

    @tally.default
    def _tally_from_claim(self) -> EncoderTally:
        return EncoderTally(claimed_at=self.started_monotonic)

    @property
    def job(self) -> Job:
        return self.life.job

    @property
    def spec(self) -> EncodeSpec | None:
        return self.life.spec

    @property
    def last_snapshot(self) -> ProgressSnapshot | None:
        return self.life.last_snapshot

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "scenario": self.job.scenario,
            "progress": round(self.life.progress, 1),
            "running_s": round(time.monotonic() - self.started_monotonic, 1),
            "stage": JobProgress.PREFETCHED if self.prefetched else JobProgress.ENCODING,
        }


@attrs.define
class JobTasks:
    """Runs claimed jobs through their lifecycles; ``running`` lists them for the agent.

    Args:
        runner: prepares and runs encodes.
        client: the master, for progress updates and status reads.
        reporter: delivers results (or keeps them in the outbox).
        breaker: learns from each job that ended by itself.
        metrics: the agent's metrics.
        running: the jobs between claim and result, by id; read by heartbeats,
            ``/jobs`` and ``--adaptive``, changed only here.
    """

    runner: EncodeRunner
    client: ProgressCalls
    reporter: ResultSink
    breaker: CircuitBreaker
    metrics: AgentMetrics
    running: dict[str, RunningJob] = attrs.field(factory=dict)
    # False once the master answered 404 to a progress update: it is the Go master.
    progress_supported: bool = True
    _ended: trio.Event = attrs.field(factory=trio.Event)
    _busy_changed: trio.Event = attrs.field(factory=trio.Event)
    _idle: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._idle.set()
        self.metrics.follow_jobs(lambda: [running.tally for running in self.running.values()])

    @property
    def job_ended(self) -> trio.Event:
        """Set when the next job ends (a half-open breaker waits for its probe)."""
        return self._ended

    @property
    def busy_changed(self) -> trio.Event:
        """Set when the next job ends or a prefetched one starts (the poller's prefetch waits for it)."""
        return self._busy_changed

    def _note_busy_changed(self) -> None:
        self._busy_changed.set()
        self._busy_changed = trio.Event()

    async def wait_idle(self) -> None:
        """Until no job is running."""
        await self._idle.wait()

    def stop(self, job_id: str, reason: StopReason) -> None:
        """Stop a running job for ``reason``; a no-op for a job not running here (any more)."""
        running = self.running.get(job_id)
        if running is not None and running.life.stop_reason is None:
            log.info("Job %s: %s; stopping its encoder", job_id, _said(reason))
            self._apply(running, running.life.handle(StopRequested(reason)))
            running._slot_wait.cancel()  # prefetched: it must not start

    def stop_all(self, reason: StopReason) -> None:
        for job_id in list(self.running):
            self.stop(job_id, reason)

    @property
    def prefetched(self) -> int:
        """Jobs claimed and waiting for a slot."""
        return sum(running.prefetched for running in self.running.values())

    def ending_within(self, lead: float) -> int:
        """Encodes expected to end within ``lead`` seconds: the slots a prefetch may wait for."""
        return sum(running.ends_within(lead) for running in self.running.values())

    async def until_launched(self) -> None:
        """Until every job holding a slot has its encoder running (or has ended).

        The poller's claims wait for it: a process starts in a worker thread,
        which waits for the event loop to let go of the GIL, so a claim sent
        meanwhile delays the encoder.
        """
        while (launching := next((r for r in self.running.values() if r.launching), None)) is not None:
            await launching._launched.wait()

    def hand_back_prefetched(self) -> None:
        """Stop every prefetched job's wait for a slot: each goes back to the master unstarted."""
        for running in self.running.values():
            running._slot_wait.cancel()

    async def run(self, job: Job, node_id: str, *, draining: bool, slot: Slot | None = None) -> None:
        """The whole life of one claimed job; returns once its result is delivered or kept.

        ``slot`` is held already, or else (a prefetched job) taken here first;
        it is freed once the result is made (None: the caller manages it). A drain or a cancel while the job
        waits for it ends the job unstarted. Also when cancelled from outside
        (the agent quitting): the job is then reported as stopped by a
        shutdown (or handed back unstarted), and the cancel goes on.
        """
        log.info("Received job: %s (scenario: %s)", job.id, job.scenario)
        running = RunningJob(JobLife(job, node_id))
        self._track(running)
        try:
            waiting = slot is not None and not slot.held
            if waiting and not draining:
                assert slot is not None
                await self._wait_for_slot(running, slot)
                waiting = not slot.held
            running.mark_started()
            self._count_active()
            self._note_busy_changed()
            async with trio.open_nursery() as nursery:
                running._nursery = nursery
                claimed = self._claimed(job, draining or waiting, running._shown_prefetched)
                self._apply(running, running.life.handle(claimed))
        finally:
            if running.report is None:
                self._apply(running, running.life.handle(StopRequested(StopReason.SHUTDOWN)))
                self._apply(running, running.life.handle(Claimed(draining=True)))  # never started
                self._apply(running, running.life.handle(EncoderExited(EncodeOutcome(stopped=True))))
            running._launched.set()
            self._untrack(running)
            assert running.report is not None
            # Before the slot is freed: a breaker this opens hands the prefetched jobs back first.
            self._account(running, running.report)
            if slot is not None:
                next_up = self._longest_waiting()
                slot.release()
                if next_up is not None:
                    await self._let_launch(next_up)
            await self.reporter.deliver(running.report.result)

    def _longest_waiting(self) -> RunningJob | None:
        """The prefetched job that has waited longest: a freed slot goes to it (the limiter is FIFO)."""
        return next((running for running in self.running.values() if running.prefetched), None)

    async def _let_launch(self, running: RunningJob) -> None:
        """Let the job the freed slot went to start its encoder before the result is sent.

        Building and sending the result would otherwise hold up its process
        start (see :meth:`until_launched`). The slot is free already, so the
        result waits a few milliseconds, :data:`LAUNCH_WAIT_S` at most.
        Shielded, as the delivery after it: a cancel (the agent quitting)
        must not skip the result.
        """
        with trio.move_on_after(LAUNCH_WAIT_S, shield=True):
            await running._launched.wait()

    async def _wait_for_slot(self, running: RunningJob, slot: Slot) -> None:
        """Wait for a slot; after a while, tell the master that the job waits (stage ``prefetched``).

        In this one task: a freed slot resumes it at once, where a sibling task
        to cancel first would hold the next encoder back for two more turns of
        the event loop. A slot freed while the stage is sent may go to a fresh
        claim instead; the job then takes the next one.
        """
        with running._slot_wait:
            with trio.move_on_after(PREFETCH_SHOWN_AFTER_S):
                await slot.acquire()
            if not slot.held:
                await self._show_prefetched(running)
                await slot.acquire()

    async def _show_prefetched(self, running: RunningJob) -> None:
        if not self.progress_supported:
            return
        update = JobProgress(node_id=running.life.node_id, progress=0.0, stage=JobProgress.PREFETCHED)
        try:
            await self.client.send_progress(running.job.id, update)
        except StateConflict:
            self.stop(running.job.id, StopReason.LEASE_LOST)
            running._slot_wait.cancel()
        except MasterError as exc:
            log.debug("stage of job %s not sent: %s", running.job.id, exc)
        else:
            running._shown_prefetched = True

    def _claimed(self, job: Job, draining: bool, shown_prefetched: bool) -> Claimed:
        if draining:
            return Claimed(draining=True)
        try:
            return Claimed(spec=self.runner.prepare(job), shown_prefetched=shown_prefetched)
        except JobRejected as exc:
            log.warning("Job %s rejected: %s", job.id, exc)
            return Claimed(rejection=str(exc))

    def _apply(self, running: RunningJob, actions: list[Action]) -> None:
        """Carry out a lifecycle's actions; none of them blocks."""
        for action in actions:
            if isinstance(action, StartEncoder):
                assert running._nursery is not None
                running._nursery.start_soon(self._encode, running, action.spec)
                running._nursery.start_soon(self._watch, running)
            elif isinstance(action, SendProgress):
                running._pending_progress = action.update
                running._progress_due.set()
            elif isinstance(action, StopEncoder):
                running.stop_scope.cancel()
            else:
                running.report = action
                if running._nursery is not None:
                    running._nursery.cancel_scope.cancel()  # the watcher has nothing left to do

    async def _encode(self, running: RunningJob, spec: EncodeSpec) -> None:
        def on_progress(percent: float, snapshot: ProgressSnapshot) -> None:
            self.metrics.encoder_progressed(running.tally, snapshot, time.monotonic())
            self._apply(running, running.life.handle(Progressed(percent, snapshot, trio.current_time())))

        outcome = await self.runner.run(running.job, spec, on_progress, running.stop_scope, running._launched.set)
        self._apply(running, running.life.handle(EncoderExited(outcome)))

    async def _watch(self, running: RunningJob) -> NoReturn:
        """Send progress updates one at a time; or, against a master without them, poll the job's status."""
        while self.progress_supported:
            await running._progress_due.wait()
            running._progress_due = trio.Event()
            update = running._pending_progress
            assert update is not None
            try:
                await self.client.send_progress(running.job.id, update)
            except StateConflict:
                self.stop(running.job.id, StopReason.LEASE_LOST)
            except UnknownToMaster:
                if self.progress_supported:
                    log.info("The master has no progress endpoint; progress stays local, job status is polled")
                self.progress_supported = False
            except MasterError as exc:
                log.debug("progress for job %s not sent: %s", running.job.id, exc)
        while True:
            await trio.sleep(STATUS_POLL_INTERVAL_S)
            try:
                job = await self.client.get_job(running.job.id)
            except MasterError as exc:
                log.debug("status of job %s not read: %s", running.job.id, exc)
                continue
            if job.status is JobStatus.CANCELED:
                self.stop(job.id, StopReason.CANCELED)
            elif job.status is JobStatus.PAUSED:
                self.stop(job.id, StopReason.PAUSED)

    def _track(self, running: RunningJob) -> None:
        self.running[running.job.id] = running
        self._idle = trio.Event()
        self._count_active()

    def _untrack(self, running: RunningJob) -> None:
        del self.running[running.job.id]
        self._count_active()
        if not self.running:
            self._idle.set()

    def _count_active(self) -> None:
        """The gauge counts jobs holding a slot: a prefetched one waits for its slot, so it never passes the limit."""
        self.metrics.active_jobs.set(sum(not running.prefetched for running in self.running.values()))

    def _account(self, running: RunningJob, report: Report) -> None:
        """Metrics for every result; the breaker only for jobs that ended by themselves."""
        result = report.result
        if report.counts_for_health:
            self.breaker.job_finished(trio.current_time(), result)
        self._ended.set()
        self._ended = trio.Event()
        self._note_busy_changed()
        self.metrics.job_finished(running.tally, result, time.monotonic() - running.started_monotonic)


def _said(reason: StopReason) -> str:
    return "the worker is shutting down" if reason is StopReason.SHUTDOWN else f"{reason.value} on the master"
