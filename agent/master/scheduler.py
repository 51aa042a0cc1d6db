"""Lease, retry and node-liveness rules of the master, as plain functions.

Nothing here does I/O or imports trio: a store reads a job, asks a function
below what becomes of it, and writes the answer back inside one transaction.
That keeps every rule testable with plain objects, and lets another store
(PostgreSQL) reuse them unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..hardware import HARDWARE_VENDORS
from ..models import (
    FailureReason,
    HeartbeatReport,
    Job,
    JobAttempt,
    JobProgress,
    JobResult,
    JobStatus,
    LiveProgress,
    Node,
    NodeRegistration,
    ResultAck,
)

__all__ = [
    "DRAINING",
    "OFFLINE",
    "OFFLINE_AFTER_BEATS",
    "FREE_HANDBACKS",
    "Conflict",
    "Lease",
    "NameTaken",
    "ResultOutcome",
    "apply_heartbeat",
    "can_run",
    "cancel",
    "claim",
    "claim_key",
    "decide_result",
    "drain",
    "expire",
    "hand_back_lost",
    "is_live",
    "is_overdue",
    "is_silent",
    "is_prunable",
    "jobs_to_cancel",
    "lease_ended",
    "mark_offline",
    "mark_seen",
    "merge_registration",
    "node_max_jobs",
    "pause",
    "record_progress",
    "result_outcome",
    "resume",
    "retry",
    "runnable",
    "timeout_of",
    "undrain",
    "unreported_leases",
    "waiting_reason",
    "with_job",
    "without_job",
]

# A node that misses this many heartbeats in a row is offline: one late beat is
# network jitter, three are a dead or partitioned agent.
OFFLINE_AFTER_BEATS = 3

# Hand-backs of a job that never started (a draining node, a node restarted before
# it began) cost no retry this many times; after that each one does, so that no
# node can bounce a job for ever.
FREE_HANDBACKS = 3

# Status of a live node the operator drained: it finishes its jobs and is given no more.
DRAINING = "draining"
OFFLINE = "offline"


class Conflict(Exception):
    """The job's current state forbids the change: it is final, or leased to another node.

    The HTTP layer answers 409 with this message; the caller should re-read the job.
    """


class NameTaken(Conflict):
    """A registration names a node that a running agent holds, and cannot prove it is that agent."""

    def __init__(self, node: Node, now: dt.datetime) -> None:
        seen = node.last_heartbeat or node.registered_at or now
        super().__init__(
            f"node name {node.address!r} is held by a running agent (last heard from "
            f"{(now - seen).total_seconds():.0f}s ago); give this agent another --node-name, or stop the "
            f"other one: its name is free once it has missed {OFFLINE_AFTER_BEATS} heartbeats. An agent "
            "restarted with the same --work-dir keeps its name."
        )


@attrs.frozen
class ResultOutcome:
    """What a worker's result does: the job as it must be stored, and the answer to send."""

    job: Job
    ack: ResultAck
    changed: bool


# --- ordering and claims -----------------------------------------------------


def claim_key(job: Job) -> tuple[int, int, int]:
    """Dispatch order: queue (live first), then priority (high first), then age."""
    return (job.queue.rank, job.priority.rank, job.sequence_number)


def _hardware_codec(job: Job) -> str:
    """The GPU family a job insists on: ``hardware: nvenc`` or a codec such as ``h264_nvenc``."""
    wanted = f"{job.parameters.get('hardware', '')} {job.parameters.get('codec', '')}".lower()
    return next((vendor for vendor in HARDWARE_VENDORS if vendor in wanted), "")


def can_run(job: Job, node: Node) -> bool:
    """Whether ``node`` can encode ``job``: a hardware codec needs a GPU that offers it."""
    return _offers(node, _hardware_codec(job))


def _offers(node: Node, codec: str) -> bool:
    """Whether ``node`` offers the GPU family ``codec`` (``""``: none needed).

    A GPU node that lists no capabilities is trusted with any hardware codec,
    as the Go agent reports none.
    """
    if not codec:
        return True
    if not node.has_gpu:
        return False
    return not node.gpu_capabilities or any(codec in cap.lower() for cap in node.gpu_capabilities)


def runnable(candidates: Iterable[Job], node: Node) -> list[Job]:
    """The jobs in ``candidates`` the node can run, in the order given (:func:`claim_key`).

    Skipping, not stopping, means a GPU job at the head of the queue does not
    block the CPU jobs behind it. A draining node runs nothing new.
    """
    if not takes_new_jobs(node):
        return []
    return [job for job in candidates if can_run(job, node)]


def takes_new_jobs(node: Node) -> bool:
    """Whether a claim by ``node`` may lease anything: a draining node runs nothing new."""
    return not _is_drained(node)


def waiting_reason(job: Job, nodes: Iterable[Node], now: dt.datetime, heartbeat_interval: float) -> str:
    """Why a pending job cannot start on any live node, or ``""`` when one could take it.

    The first reason that holds is given, so the operator reads what to change:
    no node at all, no node with the hardware codec the job names, or only
    drained nodes that could run it. Every submit and every read of a pending
    job asks, so the nodes are gone through once and only until one could
    take the job: in a working farm, the first live node.
    """
    if job.status is not JobStatus.PENDING:
        return ""
    codec = _hardware_codec(job)
    any_live = any_capable = False
    for node in nodes:
        if not is_live(node, now, heartbeat_interval):
            continue
        any_live = True
        if _offers(node, codec):
            if not _is_drained(node):
                return ""
            any_capable = True
    if not any_live:
        return "waiting: no node is online"
    if not any_capable:
        return f"waiting: no node offers {codec}"
    return "waiting: every node that can run it is draining (ffrtmp nodes undrain NODE)"


def claim(job: Job, node: Node, now: dt.datetime) -> Job:
    """Lease a pending job to ``node``."""
    return attrs.evolve(
        job,
        status=JobStatus.PROCESSING,
        node_id=node.id,
        node_name=node.address,
        started_at=now,
        completed_at=None,
        progress=0.0,
        live=None,
    )


def _unleased(job: Job, **changes: Any) -> Job:
    """The job back in the queue, with no trace of the node that held it."""
    fields: dict[str, Any] = {
        "status": JobStatus.PENDING,
        "node_id": "",
        "node_name": "",
        "started_at": None,
        "completed_at": None,
        "progress": 0.0,
        "live": None,
    }
    fields.update(changes)
    return attrs.evolve(job, **fields)


def _is_leased_to(job: Job, node_id: str) -> bool:
    return job.status is JobStatus.PROCESSING and job.node_id == node_id


@attrs.frozen
class Lease:
    """Who holds a job, and since when: what a progress report is checked against, read without the rest of the job."""

    job_id: str
    sequence_number: int
    status: JobStatus
    node_id: str
    started_at: dt.datetime | None

    @classmethod
    def of(cls, job: Job) -> Lease:
        return cls(job.id, job.sequence_number, job.status, job.node_id, job.started_at)

    def check_held_by(self, node_id: str) -> None:
        """Raises:
            Conflict: the job is not leased to ``node_id``.
        """
        if not (self.status is JobStatus.PROCESSING and self.node_id == node_id):
            raise Conflict(f"job {self.job_id} is not leased to node {node_id}")


# --- results -----------------------------------------------------------------

_SUCCESS = ResultAck(status="success")


def decide_result(job: Job, result: JobResult, now: dt.datetime) -> ResultOutcome:
    """Apply a worker's final result to the job it names.

    * canceled on the master: accepted, the job stays canceled; the holder's logs are kept;
    * the same final result again from the node that finished it: accepted, nothing changes,
      so a worker may safely resend after a lost answer;
    * completed: final, progress 100;
    * canceled by the worker: final, never retried;
    * ``not_started`` (the node claimed it but never began, as when draining): back to the
      queue without counting a retry :data:`FREE_HANDBACKS` times, then like any failure;
      answered as ``retrying``, the shape agents already read;
    * failed with ``user_error``: final at once, a bad job does not get better;
    * any other failure: retried while ``retry_count < max_retries``, then final.

    Raises:
        Conflict: the job is not leased to ``result.node_id`` (another node holds it,
            or it went back to the queue); the worker should drop its result.
        ValueError: ``result.status`` is not a final status.
    """
    if not result.status.is_final:
        raise ValueError(
            f"status must be completed, failed or canceled in a result, not {result.status.value!r}"
        )
    if job.status is JobStatus.CANCELED:
        if job.node_id != result.node_id:
            return ResultOutcome(job, _SUCCESS, False)
        noted = attrs.evolve(
            job, logs=result.logs or job.logs, metrics=result.metrics or job.metrics
        )
        return ResultOutcome(noted, _SUCCESS, noted != job)
    if job.status.is_final and job.status is result.status and job.node_id == result.node_id:
        return ResultOutcome(job, _SUCCESS, False)
    if not _is_leased_to(job, result.node_id):
        holder = f"node {job.node_id}" if job.status is JobStatus.PROCESSING else job.status.value
        raise Conflict(f"job {job.id} is not leased to node {result.node_id} (it is {holder})")

    kept: dict[str, Any] = {"logs": result.logs, "metrics": result.metrics}
    if result.status is JobStatus.COMPLETED:
        done = attrs.evolve(
            job,
            status=JobStatus.COMPLETED,
            progress=100.0,
            completed_at=now,
            error="",
            failure_reason="",
            **kept,
        )
        return ResultOutcome(done, _SUCCESS, True)
    failure: dict[str, Any] = {
        "error": result.error,
        "failure_reason": result.failure_reason,
        **kept,
    }
    if result.status is JobStatus.CANCELED:
        done = attrs.evolve(
            job, status=JobStatus.CANCELED, progress=result.progress, completed_at=now, **failure
        )
        return ResultOutcome(done, _SUCCESS, True)

    if result.not_started:
        after = _handed_back(job, now, **failure)
    elif result.failure_reason == FailureReason.USER_ERROR.value:
        after = _failed(job, now, progress=result.progress, **failure)
    else:
        after = _retried(job, now, **failure)
    return ResultOutcome(after, _retrying(after) if after.status is JobStatus.PENDING else _SUCCESS, True)


def result_outcome(result: JobResult) -> str:
    """How a node's result ended its attempt, as the attempt history says it (``JobAttempt.outcome``)."""
    return JobAttempt.HANDED_BACK if result.not_started else result.status.value


def lease_ended(before: Job, after: Job) -> bool:
    """Whether a change from ``before`` to ``after`` ended an attempt: the job was running, and
    is no longer running on that node (a result, a cancel or pause, a hand-back, a timeout).

    The store then records the attempt (``JobAttempt.ended``) in the same transaction.
    """
    if before.status is not JobStatus.PROCESSING:
        return False
    return not _is_leased_to(after, before.node_id)


def _failed(job: Job, now: dt.datetime, **fields: Any) -> Job:
    return attrs.evolve(job, status=JobStatus.FAILED, completed_at=now, **fields)


def _retried(job: Job, now: dt.datetime, **failure: Any) -> Job:
    """Back to the queue while the retry budget lasts, else failed for good."""
    if job.retry_count < job.max_retries:
        return _unleased(job, retry_count=job.retry_count + 1, **failure)
    return _failed(job, now, **failure)


def _handed_back(job: Job, now: dt.datetime, **failure: Any) -> Job:
    """A job that never started goes back free of charge, :data:`FREE_HANDBACKS` times."""
    handbacks = job.handbacks + 1
    if handbacks > FREE_HANDBACKS:
        return _retried(attrs.evolve(job, handbacks=handbacks), now, **failure)
    return _unleased(job, handbacks=handbacks, **failure)


def timeout_of(job: Job, default: float | None) -> float | None:
    """Seconds the job may run: its ``resource_limits.timeout_sec``, else ``default``.

    A value the agent would reject counts as none here; the agent fails such a
    job as a user error before it starts.
    """
    limits = job.parameters.get("resource_limits")
    given = limits.get("timeout_sec") if isinstance(limits, dict) else None
    if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
        return float(given)
    return default


def is_overdue(job: Job, now: dt.datetime, default_timeout: float | None, grace: float) -> bool:
    """Whether a running job passed its timeout by ``grace`` seconds without a result.

    The agent enforces the timeout itself and reports ``timeout``; the grace
    gives that result time to arrive, so the master only acts for an agent
    that hangs or lost its way while still heartbeating.
    """
    timeout = timeout_of(job, default_timeout)
    if job.status is not JobStatus.PROCESSING or job.started_at is None or timeout is None:
        return False
    return (now - job.started_at).total_seconds() > timeout + grace


def expire(job: Job, now: dt.datetime) -> ResultOutcome:
    """An overdue job, failed on its node's behalf with reason ``timeout``.

    It follows the retry rules of any failure; the node's own result, if it
    still comes, then gets 409, and its next heartbeat is told to stop the job.
    """
    overdue = JobResult.failure(
        job,
        job.node_id,
        FailureReason.TIMEOUT,
        f"no result from node {job.node_name or job.node_id} within the job's timeout; "
        "timed out on the master",
        progress=job.progress,
        completed_at=now,
    )
    return decide_result(job, overdue, now)


def _retrying(job: Job) -> ResultAck:
    return ResultAck(status="retrying", retry=job.retry_count, max_retries=job.max_retries)


def record_progress(job: Job, report: JobProgress) -> Job:
    """Take a running job's progress, clamped to 0-100, and how fast it goes (``Job.live``).

    Raises:
        Conflict: the job is not leased to ``report.node_id``.
    """
    Lease.of(job).check_held_by(report.node_id)
    live = LiveProgress(
        fps=report.fps, speed=report.speed, bitrate_kbps=report.bitrate_kbps, out_time_s=report.out_time_s,
        stage=report.stage,
    )
    return attrs.evolve(job, progress=min(100.0, max(0.0, report.progress)), live=live)


# --- operator actions ----------------------------------------------------------


def cancel(job: Job, now: dt.datetime) -> Job:
    """Cancel a job that has not finished; its node learns it on the next heartbeat.

    The node stays recorded so its late result is recognised and its logs kept.

    Raises:
        Conflict: the job is already final.
    """
    if job.status.is_final:
        raise Conflict(f"job {job.id} is already {job.status.value}")
    return attrs.evolve(job, status=JobStatus.CANCELED, completed_at=now)


def pause(job: Job) -> Job:
    """Hold a job out of the queue; a running one is stopped and will restart from scratch.

    Raises:
        Conflict: the job is final or already paused.
    """
    if job.status not in (JobStatus.PENDING, JobStatus.PROCESSING):
        raise Conflict(f"job {job.id} is {job.status.value}; only pending or running jobs pause")
    return _unleased(job, status=JobStatus.PAUSED)


def resume(job: Job) -> Job:
    """Put a paused job back in the queue.

    Raises:
        Conflict: the job is not paused.
    """
    if job.status is not JobStatus.PAUSED:
        raise Conflict(f"job {job.id} is {job.status.value}, not paused")
    return _unleased(job)


def retry(job: Job) -> Job:
    """Run a failed or canceled job again, with a fresh retry budget.

    Raises:
        Conflict: the job is not failed or canceled.
    """
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
        raise Conflict(f"job {job.id} is {job.status.value}; only failed or canceled jobs retry")
    return _unleased(job, retry_count=0, error="", failure_reason="", logs="", metrics={})


# --- nodes ---------------------------------------------------------------------


def merge_registration(
    existing: Node | None,
    registration: NodeRegistration,
    new_id: str,
    now: dt.datetime,
    *,
    proven: bool,
    heartbeat_interval: float,
) -> Node:
    """The node a registration describes, as a new incarnation (one run of the agent process).

    The same address keeps its node id. An agent that proves it is the node
    (``proven``: it showed the token of the node's last run) takes over at once;
    one that cannot, only when the node is no longer live, so two running
    agents never share a name. A returning agent is alive: its status goes back
    to available, or stays draining when the operator drained it, so a
    restarted agent (systemd, Docker, Kubernetes) does not undo a drain.
    ``max_concurrent_jobs`` comes from the registration's label of that name
    until the first heartbeat reports it.

    Raises:
        NameTaken: the address belongs to a live node and the registration is not proven.
    """
    described = attrs.asdict(registration, recurse=False)
    del described["node_token"]
    slots = node_max_jobs(registration)
    if existing is None:
        return Node(
            id=new_id, registered_at=now, last_heartbeat=now, max_concurrent_jobs=slots, **described
        )
    if not proven and is_live(existing, now, heartbeat_interval):
        raise NameTaken(existing, now)
    held = registration.active_job_ids
    returned = attrs.evolve(
        existing,
        last_heartbeat=now,
        incarnation=existing.incarnation + 1,
        current_job_id=held[0] if held else "",
        max_concurrent_jobs=slots,
        **described,
    )
    return attrs.evolve(returned, status=_live_status(returned))


def node_max_jobs(registration: NodeRegistration) -> int:
    """The agent's own limit, from its ``max_concurrent_jobs`` label; 1 when it sends none (the Go agent)."""
    label = registration.labels.get("max_concurrent_jobs", "")
    return max(1, int(label)) if label.isascii() and label.isdigit() and len(label) < 7 else 1


def _is_drained(node: Node) -> bool:
    # A row written before the flag existed says so in its status only.
    return node.draining or node.status == DRAINING


def _live_status(node: Node) -> str:
    """The status of a node heard from: drained, every slot taken, or room for more."""
    if _is_drained(node):
        return DRAINING
    return "busy" if len(node.active_job_ids) >= node.max_concurrent_jobs else "available"


def with_job(node: Node, job_id: str) -> Node:
    """The node just leased ``job_id``: shown as running it before its next heartbeat says so."""
    if job_id in node.active_job_ids:
        return node
    return _running(node, [*node.active_job_ids, job_id])


def without_job(node: Node, job_id: str) -> Node:
    """The node no longer holds ``job_id`` (canceled, paused, timed out, or its result came in)."""
    if job_id not in node.active_job_ids:
        return node
    return _running(node, [held for held in node.active_job_ids if held != job_id])


def _running(node: Node, active: list[str]) -> Node:
    changed = attrs.evolve(node, active_job_ids=active, current_job_id=active[0] if active else "")
    return changed if node.status == OFFLINE else attrs.evolve(changed, status=_live_status(changed))


def apply_heartbeat(
    node: Node,
    report: HeartbeatReport | None,
    leased_job_ids: list[str],
    now: dt.datetime,
    stopping: Iterable[str] = (),
) -> Node:
    """The node after a heartbeat.

    Without a report (the Go agent sends none) the node's jobs are the ones the
    master leased to it. Jobs it is told to stop (``stopping``: canceled,
    paused, leased elsewhere) are no longer shown as its own. ``busy`` means
    every slot is taken, so an operator sees at a glance which nodes could
    take more work.
    """
    if report is None:
        active, slots = leased_job_ids, node.max_concurrent_jobs
    else:
        active, slots = list(report.active_job_ids), max(1, report.max_concurrent_jobs)
    stopped = set(stopping)
    active = [job_id for job_id in active if job_id not in stopped]
    beaten = attrs.evolve(
        node,
        active_job_ids=active,
        current_job_id=active[0] if active else "",
        max_concurrent_jobs=slots,
        last_heartbeat=now,
    )
    return attrs.evolve(beaten, status=_live_status(beaten))


def jobs_to_cancel(node_id: str, reported: Iterable[str], jobs: Mapping[str, Job]) -> list[str]:
    """Jobs a node runs that it should stop: canceled, unknown, or no longer its lease.

    A job this node has just finished is left alone: its result and the
    heartbeat may simply have crossed.
    """
    stop = []
    for job_id in reported:
        job = jobs.get(job_id)
        finished_here = (
            job is not None
            and job.node_id == node_id
            and job.status in (JobStatus.COMPLETED, JobStatus.FAILED)
        )
        if job is None or not (_is_leased_to(job, node_id) or finished_here):
            stop.append(job_id)
    return stop


def unreported_leases(
    leased: Iterable[Job], reported: Iterable[str], now: dt.datetime, grace: float
) -> list[Job]:
    """Jobs leased to a node that its heartbeat does not list, leased over ``grace`` seconds ago.

    The node lost them (it restarted, or its job task died); the grace covers a
    claim whose answer crossed the heartbeat.
    """
    listed = set(reported)
    return [
        job
        for job in leased
        if job.id not in listed
        and job.started_at is not None
        and (now - job.started_at).total_seconds() > grace
    ]


def is_silent(node: Node, now: dt.datetime, heartbeat_interval: float) -> bool:
    """Whether a node missed :data:`OFFLINE_AFTER_BEATS` heartbeats and counts as offline."""
    seen = node.last_heartbeat or node.registered_at
    if node.status == OFFLINE or seen is None:
        return False
    return (now - seen).total_seconds() > OFFLINE_AFTER_BEATS * heartbeat_interval


def is_live(node: Node, now: dt.datetime, heartbeat_interval: float) -> bool:
    """Whether an agent is running as this node: not offline, and heard from lately."""
    return node.status != OFFLINE and not is_silent(node, now, heartbeat_interval)


def mark_seen(node: Node, now: dt.datetime) -> Node:
    """The node after any sign of life: a claim proves it is alive as well as a heartbeat."""
    seen = attrs.evolve(node, last_heartbeat=now)
    return attrs.evolve(seen, status=_live_status(seen)) if node.status == OFFLINE else seen


def drain(node: Node) -> Node:
    """A node told to finish its jobs and take no more, until :func:`undrain`.

    The master keeps the drain: the agent stays connected and idle, and an
    agent restarted under the node's name (or an offline node coming back)
    is still drained.
    """
    drained = attrs.evolve(node, draining=True)
    return drained if node.status == OFFLINE else attrs.evolve(drained, status=DRAINING)


def undrain(node: Node) -> Node:
    """A drained node given jobs again.

    Raises:
        Conflict: the node is not drained.
    """
    if not _is_drained(node):
        raise Conflict(f"node {node.address} is not drained (it is {node.status})")
    if node.status == OFFLINE:
        return attrs.evolve(node, draining=False)
    undrained = attrs.evolve(node, draining=False, status="available")
    return attrs.evolve(undrained, status=_live_status(undrained))


def mark_offline(node: Node) -> Node:
    """A silent or departed node: offline, holding no jobs (they go back to the queue)."""
    return attrs.evolve(
        node, status=OFFLINE, active_job_ids=[], current_job_id="", draining=_is_drained(node)
    )


def is_prunable(node: Node, now: dt.datetime, retention: float) -> bool:
    """Whether an offline node was last heard from over ``retention`` seconds ago (0 keeps it)."""
    seen = node.last_heartbeat or node.registered_at
    return (
        retention > 0 and node.status == OFFLINE and seen is not None
        and (now - seen).total_seconds() > retention
    )


def hand_back_lost(job: Job, node: Node, why: str, now: dt.datetime) -> Job:
    """A job its node no longer runs (silent, restarted, or not in its heartbeat) goes back.

    One that never reported progress is handed back like an unstarted one
    (:func:`_handed_back`); one that did was an interrupted attempt and costs a
    retry, so a job that kills its node every time cannot loop for ever.
    """
    failure = {
        "error": f"node {node.address} {why}",
        "failure_reason": FailureReason.PLATFORM_ERROR.value,
    }
    if job.progress > 0:
        return _retried(job, now, **failure)
    return _handed_back(job, now, **failure)
