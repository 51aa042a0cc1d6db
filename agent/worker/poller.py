"""The claim loop and the life of each job task.

The poller takes a slot of the ``CapacityLimiter`` *before* it claims, so it
never holds a job it has no room for, and it goes straight back for the next
slot after each claim: a queue of N jobs fills N free slots in N round trips,
not N poll intervals. It sleeps only when the master has no work.

A job task holds its slot from claim to result. Whatever happens to the job —
success, failure, cancel from the master, shutdown — the task ends by
reporting a result, in a shielded scope with a deadline of its own.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, NoReturn

import attrs
import trio

from agent.client import Conflict, MasterClient, MasterError, MasterUnavailable, NotFound
from agent.models import FailureReason, Job, JobProgress, JobResult, JobStatus
from agent.worker.backoff import Backoff
from agent.worker.jobrunner import JobRunner
from agent.worker.metrics import AgentMetrics
from agent.worker.state import AgentState, RunningJob

log = logging.getLogger(__name__)

# A result is the one thing that must reach the master; give it time to.
REPORT_TIMEOUT_S = 30.0
# Progress is a nicety: at most one update per job per interval.
PROGRESS_INTERVAL_S = 1.0


@attrs.define
class Poller:
    client: MasterClient
    runner: JobRunner
    state: AgentState
    metrics: AgentMetrics
    limiter: trio.CapacityLimiter
    poll_interval: float
    reregister: Callable[[], Awaitable[None]]
    backoff: Backoff = attrs.field(factory=Backoff)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _progress_supported: bool = True

    def wake(self) -> None:
        """Cut short an idle wait: the master says work is waiting."""
        self._wake.set()

    async def poll(self, job_nursery: trio.Nursery) -> NoReturn:
        limit = int(self.limiter.total_tokens)
        log.info("Starting job polling loop (max concurrent jobs: %d)...", limit)
        while True:
            if self.limiter.available_tokens == 0:
                # Logged once each time the slots fill up, not on every wait.
                log.info("At max concurrent jobs (%d/%d), waiting...", limit, limit)
            try:
                job = await job_nursery.start(self._job_slot)
            except MasterUnavailable as exc:
                await self._back_off(exc)
                continue
            except NotFound:
                log.warning("The master no longer knows node %s; registering again", self.state.node_id)
                await self.reregister()
                continue
            self.backoff.reset()
            if job is None:
                await self._wait_for_work()

    async def _back_off(self, exc: MasterError) -> None:
        delay = self.backoff.next()
        level = logging.WARNING if self.backoff.failures == 1 else logging.DEBUG
        log.log(level, "%s; polling again in %.1fs", exc, delay)
        await trio.sleep(delay)

    async def _wait_for_work(self) -> None:
        self._wake = trio.Event()
        with trio.move_on_after(self.poll_interval):
            await self._wake.wait()

    async def _job_slot(self, *, task_status: trio.TaskStatus[Job | None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.limiter:
            # A claim in flight when the drain starts is finished, never dropped:
            # the master has leased the job to us, so we must answer for it.
            with trio.CancelScope(shield=True):
                job = await self.client.claim_next(self.state.node_id)
            task_status.started(job)
            if job is not None:
                await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        log.info("Received job: %s (scenario: %s)", job.id, job.scenario)
        node_id = self.state.node_id
        if self.state.draining:
            await self._report(
                JobResult.failure(job, node_id, FailureReason.PLATFORM_ERROR, "not started: worker draining")
            )
            return
        running = RunningJob(job=job, scope=trio.CancelScope())
        self.state.running[job.id] = running
        self.metrics.active_jobs.set(len(self.state.running))
        result: JobResult | None = None
        try:
            with running.scope:
                async with trio.open_nursery() as nursery:
                    if self._progress_supported:
                        nursery.start_soon(self._forward_progress, running, node_id)
                    result = await self.runner.run(job, node_id, running.update_progress)
                    nursery.cancel_scope.cancel()
        finally:
            del self.state.running[job.id]
            self.metrics.active_jobs.set(len(self.state.running))
            if result is None:
                result = self._interrupted(running, node_id)
            self._count(result, time.monotonic() - running.started_monotonic)
            await self._report(result)

    @staticmethod
    def _interrupted(running: RunningJob, node_id: str) -> JobResult:
        if running.stop_reason == "canceled":
            return JobResult(
                job_id=running.job.id, node_id=node_id, status=JobStatus.CANCELED,
                progress=running.progress, error="canceled on the master",
            )
        return JobResult.failure(
            running.job, node_id, FailureReason.PLATFORM_ERROR, "worker shutdown",
            progress=running.progress,
        )

    def _count(self, result: JobResult, seconds: float) -> None:
        self.metrics.jobs_finished.labels(result.status.value, result.failure_reason).inc()
        self.metrics.job_duration.observe(seconds)
        self.metrics.input_bytes.inc(result.metrics.get("input_file_bytes", 0))
        self.metrics.output_bytes.inc(result.metrics.get("output_file_bytes", 0))

    async def _report(self, result: JobResult) -> None:
        """Deliver a result, retrying transient failures; shielded so shutdown cannot lose it."""
        backoff = Backoff()
        with trio.move_on_after(REPORT_TIMEOUT_S, shield=True) as deadline:
            while True:
                try:
                    ack = await self.client.send_result(result)
                except MasterUnavailable as exc:
                    delay = backoff.next()
                    log.warning("Could not report job %s (%s); retrying in %.1fs", result.job_id, exc, delay)
                    await trio.sleep(delay)
                    continue
                except Conflict:
                    log.warning("Job %s is no longer leased to this node; result dropped", result.job_id)
                except MasterError as exc:
                    log.error("The master refused the result of job %s: %s", result.job_id, exc)
                else:
                    log.info(
                        "Job %s %s%s (master: %s)", result.job_id, result.status.value,
                        f" [{result.failure_reason}] {result.error}" if result.error else "", ack.status,
                    )
                return
        if deadline.cancelled_caught:
            log.error("Gave up reporting job %s after %.0fs", result.job_id, REPORT_TIMEOUT_S)

    async def _forward_progress(self, running: RunningJob, node_id: str) -> None:
        sent = -1.0
        while self._progress_supported:
            await trio.sleep(PROGRESS_INTERVAL_S)
            snapshot = running.last_snapshot
            if snapshot is None or running.progress == sent:
                continue
            update = JobProgress(
                node_id=node_id, progress=running.progress, fps=snapshot.fps,
                speed=snapshot.speed, bitrate_kbps=snapshot.bitrate_kbps, out_time_s=snapshot.out_time_s,
            )
            try:
                await self.client.send_progress(running.job.id, update)
            except NotFound:
                log.info("The master has no progress endpoint; progress stays local")
                self._progress_supported = False
            except MasterError as exc:
                log.debug("progress for job %s not sent: %s", running.job.id, exc)
            sent = running.progress

