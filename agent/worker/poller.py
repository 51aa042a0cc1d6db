"""The claim loop and the life of each job task.

The poller takes a slot of the ``CapacityLimiter`` *before* it claims, so it
never holds a job it has no room for, and it goes straight back for the next
slot after each claim: a queue of N jobs fills N free slots in N round trips,
not N poll intervals. It sleeps only when the master has no work, or while the
circuit breaker is open.

A job task holds its slot from claim to result. Whatever happens to the job —
success, failure, cancel from the master, shutdown — the task ends by handing
a result to the reporter, which delivers it or keeps it until it can.
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
from agent.worker.breaker import CircuitBreaker
from agent.worker.jobrunner import JobRunner
from agent.worker.metrics import AgentMetrics
from agent.worker.reporter import ResultReporter
from agent.worker.state import AgentState, RunningJob

log = logging.getLogger(__name__)

# Progress is a nicety: at most one update per job per interval. Its answer
# doubles as the cancel check (409 once the master has canceled the job).
PROGRESS_INTERVAL_S = 1.0
# Without the progress extension (the Go master), how often a running job's status is read.
STATUS_POLL_INTERVAL_S = 5.0
# Master states that mean "stop this job's encoder".
STOPPED_ON_MASTER = (JobStatus.CANCELED, JobStatus.PAUSED)
# Longest long-poll. A claim in flight is finished even during a drain (the
# master may lease a job to it), so this also bounds how long an idle agent's
# drain can wait for one.
LONG_POLL_MAX_S = 5.0


@attrs.define
class Poller:
    client: MasterClient
    runner: JobRunner
    reporter: ResultReporter
    breaker: CircuitBreaker
    state: AgentState
    metrics: AgentMetrics
    limiter: trio.CapacityLimiter
    poll_interval: float
    reregister: Callable[[], Awaitable[None]]
    backoff: Backoff = attrs.field(factory=Backoff)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _job_ended: trio.Event = attrs.field(factory=trio.Event)
    _progress_supported: bool = True
    _long_poll_supported: bool = True
    _master_failing: bool = False

    @property
    def limit(self) -> int:
        """Jobs at once now: --max-concurrent-jobs, or what --adaptive set since."""
        return int(self.limiter.total_tokens)

    def wake(self) -> None:
        """Cut short an idle wait: the master says work is waiting."""
        self._wake.set()

    def stop_job(self, job_id: str, reason: str) -> None:
        """Stop a running job's encoder because the master says so (canceled, paused)."""
        running = self.state.running.get(job_id)
        if running is not None and not running.stop_reason:
            log.info("Job %s was %s on the master; stopping its encoder", job_id, reason)
            running.stop_reason = reason
            running.scope.cancel()

    async def poll(self, job_nursery: trio.Nursery) -> NoReturn:
        log.info("Starting job polling loop (max concurrent jobs: %d)...", self.limit)
        while True:
            if self.limiter.available_tokens == 0:
                # Logged once each time the slots fill up, not on every wait.
                log.info("At max concurrent jobs (%d/%d), waiting...", self.limit, self.limit)
            try:
                job = await job_nursery.start(self._job_slot)
            except MasterUnavailable as exc:
                self.breaker.claim_failed(trio.current_time(), str(exc))
                await self._back_off(exc)
                continue
            except NotFound:
                log.warning("The master no longer knows node %s; registering again", self.state.node_id)
                await self.reregister()
                continue
            self.breaker.claim_succeeded(got_job=job is not None)
            if self._master_failing:
                log.info("The master at %s answers again", self.client.base_url)
                self._master_failing = False
            self.backoff.reset()
            if job is None and not self._long_poll_supported:
                await self._wait_for_work()

    async def _back_off(self, exc: MasterError) -> None:
        delay = self.backoff.next()
        if not self._master_failing:
            log.warning("%s; retrying with backoff", exc)
            self._master_failing = True
        else:
            log.debug("%s; polling again in %.1fs", exc, delay)
        await trio.sleep(delay)

    async def _wait_for_work(self) -> None:
        self._wake = trio.Event()
        with trio.move_on_after(self.poll_interval):
            await self._wake.wait()

    async def _wait_for_breaker(self) -> None:
        while (delay := self.breaker.claim_delay(trio.current_time())) > 0:
            with trio.move_on_after(delay):
                await self._job_ended.wait()  # a probe job's end decides sooner

    async def _job_slot(self, *, task_status: trio.TaskStatus[Job | None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.limiter:
            await self._wait_for_breaker()
            self.breaker.claim_started()
            # A claim in flight when the drain starts is finished, never dropped:
            # the master has leased the job to us, so we must answer for it.
            with trio.CancelScope(shield=True):
                job = await self._claim()
            task_status.started(job)
            if job is not None:
                await self._run_job(job)

    async def _claim(self) -> Job | None:
        """Claim, long-polling while the master supports it (it holds the request until work comes)."""
        wait = min(self.poll_interval, LONG_POLL_MAX_S) if self._long_poll_supported else 0.0
        started = trio.current_time()
        job = await self.client.claim_next(self.state.node_id, wait=wait)
        # A master with long-poll answers "no job" only at the deadline; the
        # original Go master ignores ``wait`` and answers at once.
        if job is None and wait > 0 and trio.current_time() - started < wait / 2:
            log.info(
                "The master does not hold long-polls; falling back to plain polling every %gs",
                self.poll_interval,
            )
            self._long_poll_supported = False
        return job

    async def _run_job(self, job: Job) -> None:
        log.info("Received job: %s (scenario: %s)", job.id, job.scenario)
        node_id = self.state.node_id
        if self.state.draining:
            error = "not started: worker draining"
            handed_back = JobResult.failure(job, node_id, FailureReason.PLATFORM_ERROR, error, not_started=True)
            await self.reporter.deliver(handed_back)
            return
        running = RunningJob(job=job, scope=trio.CancelScope())
        self.state.running[job.id] = running
        self.metrics.active_jobs.set(len(self.state.running))
        result: JobResult | None = None
        try:
            with running.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_job, running, node_id)
                    result = await self.runner.run(job, node_id, running.update_progress)
                    nursery.cancel_scope.cancel()
        finally:
            del self.state.running[job.id]
            self.metrics.active_jobs.set(len(self.state.running))
            if result is None:
                result = self._interrupted(running, node_id)
            elif not self.state.draining:
                # Shutdown results say nothing about this node's health.
                self.breaker.job_finished(trio.current_time(), result)
            self._job_ended.set()
            self._job_ended = trio.Event()
            self._count(result, time.monotonic() - running.started_monotonic)
            await self.reporter.deliver(result)

    @staticmethod
    def _interrupted(running: RunningJob, node_id: str) -> JobResult:
        if running.stop_reason:
            return JobResult(
                job_id=running.job.id, node_id=node_id, status=JobStatus.CANCELED,
                progress=running.progress, error=f"{running.stop_reason} on the master",
            )
        return JobResult.failure(
            running.job, node_id, FailureReason.PLATFORM_ERROR, "worker shutdown", progress=running.progress
        )

    def _count(self, result: JobResult, seconds: float) -> None:
        self.metrics.jobs_finished.labels(result.status.value, result.failure_reason).inc()
        self.metrics.job_duration.observe(seconds)
        self.metrics.input_bytes.inc(result.metrics.get("input_file_bytes", 0))
        self.metrics.output_bytes.inc(result.metrics.get("output_file_bytes", 0))

    async def _watch_job(self, running: RunningJob, node_id: str) -> NoReturn:
        """Send progress while the job runs, and stop it once the master no longer wants it."""
        since_status_check = 0.0
        while True:
            await trio.sleep(PROGRESS_INTERVAL_S)
            since_status_check += PROGRESS_INTERVAL_S
            if self._progress_supported and running.last_snapshot is not None:
                if not await self._send_progress(running, node_id):
                    await self._check_status(running)
            elif since_status_check >= STATUS_POLL_INTERVAL_S:
                await self._check_status(running)
                since_status_check = 0.0

    async def _send_progress(self, running: RunningJob, node_id: str) -> bool:
        """False when the master refused it because the job is no longer ours."""
        snapshot = running.last_snapshot
        assert snapshot is not None
        update = JobProgress(
            node_id=node_id, progress=running.progress, fps=snapshot.fps, speed=snapshot.speed,
            bitrate_kbps=snapshot.bitrate_kbps, out_time_s=snapshot.out_time_s,
        )
        try:
            await self.client.send_progress(running.job.id, update)
        except Conflict:
            return False
        except NotFound:
            log.info("The master has no progress endpoint; progress stays local, job status is polled")
            self._progress_supported = False
        except MasterError as exc:
            log.debug("progress for job %s not sent: %s", running.job.id, exc)
        return True

    async def _check_status(self, running: RunningJob) -> None:
        try:
            job = await self.client.get_job(running.job.id)
        except MasterError as exc:
            log.debug("status of job %s not read: %s", running.job.id, exc)
            return
        if job.status in STOPPED_ON_MASTER:
            self.stop_job(job.id, job.status.value)
