"""The master's lease, retry and liveness rules, on plain objects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
import pytest

from agent.master import scheduler
from agent.master.scheduler import Conflict
from agent.models import (
    FailureReason,
    HeartbeatReport,
    Job,
    JobAttempt,
    JobProgress,
    JobResult,
    JobStatus,
    Node,
    NodeRegistration,
    Priority,
    Queue,
)

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
NODE = Node(id="n1", address="host:9091")
OTHER = Node(id="n2", address="other:9091")


def job(seq: int = 1, **fields: Any) -> Job:
    fields.setdefault("scenario", "720p30-h264")
    return Job(id=f"j{seq}", sequence_number=seq, **fields)


def leased(seq: int = 1, node: Node = NODE, **fields: Any) -> Job:
    return scheduler.claim(job(seq, **fields), node, T0)


def result(status: JobStatus, node: Node = NODE, **fields: Any) -> JobResult:
    return JobResult(job_id="j1", node_id=node.id, status=status, completed_at=T0, **fields)


def failed(reason: FailureReason, error: str = "boom", node: Node = NODE) -> JobResult:
    return result(JobStatus.FAILED, node, failure_reason=reason.value, error=error)


# --- ordering and claims --------------------------------------------------------


def test_claim_order_is_queue_then_priority_then_age() -> None:
    """live before default before batch; high before low within a queue; older first."""
    jobs = [
        job(1, queue=Queue.BATCH, priority=Priority.HIGH),
        job(2, queue=Queue.DEFAULT, priority=Priority.LOW),
        job(3, queue=Queue.DEFAULT, priority=Priority.HIGH),
        job(4, queue=Queue.LIVE, priority=Priority.LOW),
        job(5, queue=Queue.DEFAULT, priority=Priority.HIGH),
        job(6, queue=Queue.DEFAULT, priority=Priority.MEDIUM),
    ]
    ordered = sorted(jobs, key=scheduler.claim_key)
    assert [j.sequence_number for j in ordered] == [4, 3, 5, 6, 2, 1]


def test_a_gpu_job_does_not_block_the_cpu_jobs_behind_it() -> None:
    """runnable skips what the node cannot run instead of stopping there."""
    gpu_job = job(1, parameters={"codec": "h264_nvenc"})
    assert scheduler.runnable([gpu_job, job(2), job(3)], NODE) == [job(2), job(3)]


def test_a_draining_node_is_given_nothing_and_keeps_draining() -> None:
    """Heartbeats, a restart under the name and an offline spell all keep the drain; undrain ends it."""
    draining = scheduler.drain(NODE)
    assert scheduler.runnable([job(1)], draining) == []
    beaten = scheduler.apply_heartbeat(draining, HeartbeatReport(), [], T0)
    assert beaten.status == scheduler.DRAINING
    again = scheduler.merge_registration(
        beaten, NodeRegistration(address=NODE.address), "new", T0, proven=True, heartbeat_interval=30.0
    )
    assert again.status == scheduler.DRAINING and again.draining
    gone = scheduler.mark_offline(again)
    assert gone.status == scheduler.OFFLINE and gone.draining
    assert scheduler.mark_seen(gone, T0).status == scheduler.DRAINING
    undrained = scheduler.undrain(again)
    assert (undrained.status, undrained.draining) == ("available", False)
    assert scheduler.runnable([job(1)], undrained) == [job(1)]
    with pytest.raises(Conflict, match="not drained"):
        scheduler.undrain(undrained)


def test_an_offline_node_can_be_drained_before_it_comes_back() -> None:
    """The drain is kept on the row; the node stays offline until it is heard from."""
    drained = scheduler.drain(scheduler.mark_offline(NODE))
    assert (drained.status, drained.draining) == (scheduler.OFFLINE, True)


def test_a_node_row_shows_leases_and_releases_at_once() -> None:
    """with_job on a claim, without_job on a cancel; busy when every slot is taken."""
    one_slot = attrs.evolve(NODE, max_concurrent_jobs=1)
    running = scheduler.with_job(one_slot, "j1")
    assert (running.current_job_id, running.active_job_ids, running.status) == ("j1", ["j1"], "busy")
    released = scheduler.without_job(running, "j1")
    assert (released.current_job_id, released.active_job_ids, released.status) == ("", [], "available")
    assert scheduler.without_job(released, "j1") is released


def test_a_heartbeat_does_not_show_jobs_the_node_is_told_to_stop() -> None:
    """A canceled job still in the node's report is not its current job."""
    report = HeartbeatReport(active_job_ids=["j1", "j2"], max_concurrent_jobs=2)
    beaten = scheduler.apply_heartbeat(NODE, report, [], T0, stopping=["j1"])
    assert (beaten.current_job_id, beaten.active_job_ids) == ("j2", ["j2"])


def test_a_registration_takes_the_agents_limit_from_its_label() -> None:
    """MAX_JOBS is the agent's real limit from the start, also for a node registered anew."""
    registration = NodeRegistration(address="fresh:9091", labels={"max_concurrent_jobs": "2"})
    fresh = scheduler.merge_registration(None, registration, "n9", T0, proven=False, heartbeat_interval=30.0)
    assert fresh.max_concurrent_jobs == 2
    for label in ("", "two", "-3", "0", "99999999999"):
        registration = NodeRegistration(address="x", labels={"max_concurrent_jobs": label})
        assert scheduler.node_max_jobs(registration) == 1


def test_offline_nodes_are_prunable_after_the_retention() -> None:
    """Only offline nodes, only past the retention, never with retention 0."""
    old = attrs.evolve(scheduler.mark_offline(NODE), last_heartbeat=T0)
    later = T0 + dt.timedelta(hours=25)
    assert scheduler.is_prunable(old, later, 24 * 3600)
    assert not scheduler.is_prunable(old, T0 + dt.timedelta(hours=23), 24 * 3600)
    assert not scheduler.is_prunable(old, later, 0)
    assert not scheduler.is_prunable(attrs.evolve(NODE, last_heartbeat=T0), later, 24 * 3600)


def test_a_pending_job_says_why_no_node_takes_it() -> None:
    """No node; no node with the codec; only drained nodes; nothing when a node could take it."""
    nvenc = job(1, parameters={"hardware": "nvenc"})
    live = attrs.evolve(NODE, last_heartbeat=T0)
    assert scheduler.waiting_reason(nvenc, [], T0, 30.0) == "waiting: no node is online"
    assert scheduler.waiting_reason(nvenc, [live], T0, 30.0) == "waiting: no node offers nvenc"
    silent_gpu = attrs.evolve(live, has_gpu=True, last_heartbeat=T0 - dt.timedelta(minutes=5))
    assert scheduler.waiting_reason(nvenc, [live, silent_gpu], T0, 30.0) == "waiting: no node offers nvenc"
    assert scheduler.waiting_reason(job(2), [scheduler.drain(live)], T0, 30.0).startswith(
        "waiting: every node that can run it is draining"
    )
    assert scheduler.waiting_reason(job(2), [live], T0, 30.0) == ""
    assert scheduler.waiting_reason(leased(3), [], T0, 30.0) == ""
    # Any order of nodes: a drained or unable one before the one that can take it changes nothing.
    gpu = attrs.evolve(live, has_gpu=True, gpu_capabilities=["h264_nvenc"])
    assert scheduler.waiting_reason(nvenc, [scheduler.drain(gpu), live, gpu], T0, 30.0) == ""
    assert scheduler.waiting_reason(nvenc, [live, scheduler.drain(gpu)], T0, 30.0).startswith(
        "waiting: every node that can run it is draining"
    )


def test_hardware_codecs_need_a_gpu_that_offers_them() -> None:
    """nvenc goes to an NVIDIA node, not to a CPU node or a QSV-only one."""
    nvenc = job(1, scenario="1080p60-h264", parameters={"codec": "h264_nvenc"})
    assert not scheduler.can_run(nvenc, NODE)
    assert not scheduler.can_run(job(3, parameters={"hardware": "qsv"}), NODE)
    assert scheduler.can_run(
        nvenc, attrs.evolve(NODE, has_gpu=True, gpu_capabilities=["h264_nvenc"])
    )
    assert not scheduler.can_run(nvenc, attrs.evolve(NODE, has_gpu=True, gpu_capabilities=["qsv"]))
    assert scheduler.can_run(nvenc, attrs.evolve(NODE, has_gpu=True))
    assert scheduler.can_run(job(2), NODE)


def test_claim_leases_the_job_to_the_node() -> None:
    """status processing, node id and address, started now."""
    claimed = leased()
    assert (claimed.status, claimed.node_id, claimed.node_name) == (
        JobStatus.PROCESSING,
        "n1",
        "host:9091",
    )
    assert claimed.started_at == T0


# --- results --------------------------------------------------------------------


def test_completed_result_finishes_the_job() -> None:
    """progress 100, completed_at set, metrics and logs kept, answer success."""
    outcome = scheduler.decide_result(
        leased(), result(JobStatus.COMPLETED, metrics={"fps": 30.0}, logs="tail"), T0
    )
    assert outcome.changed
    assert outcome.job.status is JobStatus.COMPLETED
    assert (outcome.job.progress, outcome.job.completed_at) == (100.0, T0)
    assert (outcome.job.metrics, outcome.job.logs) == ({"fps": 30.0}, "tail")
    assert outcome.ack.status == "success"


def test_a_failure_is_retried_while_retries_remain() -> None:
    """retry_count grows, the job is pending and unleased, the error is kept."""
    outcome = scheduler.decide_result(
        leased(max_retries=2), failed(FailureReason.RUNTIME_ERROR), T0
    )
    back = outcome.job
    assert (back.status, back.node_id, back.node_name, back.started_at) == (
        JobStatus.PENDING,
        "",
        "",
        None,
    )
    assert (back.retry_count, back.error, back.failure_reason) == (1, "boom", "runtime_error")
    assert outcome.ack.to_json() == {"status": "retrying", "retry": 1, "max_retries": 2}


def test_a_failure_is_final_once_retries_are_used_up() -> None:
    """retry_count == max_retries: failed, and the count stays."""
    outcome = scheduler.decide_result(
        leased(retry_count=3, max_retries=3), failed(FailureReason.RUNTIME_ERROR), T0
    )
    assert outcome.job.status is JobStatus.FAILED
    assert outcome.job.retry_count == 3
    assert outcome.ack.status == "success"


def test_a_user_error_fails_at_once() -> None:
    """a bad job does not get better with retries."""
    outcome = scheduler.decide_result(leased(), failed(FailureReason.USER_ERROR), T0)
    assert outcome.job.status is JobStatus.FAILED
    assert outcome.job.retry_count == 0


def handed_back() -> JobResult:
    return attrs.evolve(failed(FailureReason.PLATFORM_ERROR, "not started: worker draining"), not_started=True)


def test_a_job_handed_back_unstarted_is_requeued_without_counting_a_retry() -> None:
    """not_started is a drain, not a failure of the job."""
    outcome = scheduler.decide_result(leased(retry_count=3, max_retries=3), handed_back(), T0)
    assert outcome.job.status is JobStatus.PENDING
    assert (outcome.job.retry_count, outcome.job.handbacks) == (3, 1)
    assert outcome.ack.status == "retrying"


def test_the_not_started_text_alone_is_an_ordinary_failure() -> None:
    """the master reads the structured field, never the error text."""
    text_only = failed(FailureReason.PLATFORM_ERROR, "not started: worker draining")
    outcome = scheduler.decide_result(leased(), text_only, T0)
    assert (outcome.job.retry_count, outcome.job.handbacks) == (1, 0)


def test_past_a_few_free_hand_backs_each_one_costs_a_retry_until_the_job_fails() -> None:
    """no node can bounce a job for ever."""
    current = leased(max_retries=1)
    history = []
    for _ in range(scheduler.FREE_HANDBACKS + 2):
        current = scheduler.decide_result(current, handed_back(), T0).job
        history.append((current.status, current.retry_count))
        if current.status is JobStatus.PENDING:
            current = scheduler.claim(current, NODE, T0)
    free = [(JobStatus.PENDING, 0)] * scheduler.FREE_HANDBACKS
    assert history == [*free, (JobStatus.PENDING, 1), (JobStatus.FAILED, 1)]


def test_a_platform_error_that_ran_counts_as_a_retry() -> None:
    """ "worker shutdown" interrupted a running encode: that is a retry."""
    outcome = scheduler.decide_result(
        leased(), failed(FailureReason.PLATFORM_ERROR, "worker shutdown"), T0
    )
    assert (outcome.job.status, outcome.job.retry_count) == (JobStatus.PENDING, 1)


def test_a_canceled_result_is_final() -> None:
    """canceled by the worker is never retried."""
    outcome = scheduler.decide_result(leased(), result(JobStatus.CANCELED), T0)
    assert outcome.job.status is JobStatus.CANCELED


def test_a_result_from_a_node_without_the_lease_is_a_conflict() -> None:
    """another node holds the job, or it went back to the queue."""
    with pytest.raises(Conflict, match="not leased to node n2"):
        scheduler.decide_result(leased(), result(JobStatus.COMPLETED, OTHER), T0)
    with pytest.raises(Conflict):
        scheduler.decide_result(job(), result(JobStatus.COMPLETED), T0)


def test_the_same_final_result_again_changes_nothing() -> None:
    """a worker resending after a lost answer gets success, and the job stays as it was."""
    done = scheduler.decide_result(leased(), result(JobStatus.COMPLETED), T0).job
    later = T0 + dt.timedelta(minutes=1)
    again = scheduler.decide_result(done, result(JobStatus.COMPLETED), later)
    assert not again.changed
    assert again.job == done
    assert again.ack.status == "success"


def test_a_different_result_for_a_finished_job_is_a_conflict() -> None:
    """only the identical final result is idempotent."""
    done = scheduler.decide_result(leased(), result(JobStatus.COMPLETED), T0).job
    with pytest.raises(Conflict):
        scheduler.decide_result(done, failed(FailureReason.RUNTIME_ERROR), T0)
    with pytest.raises(Conflict):
        scheduler.decide_result(done, result(JobStatus.COMPLETED, OTHER), T0)


def test_a_result_for_a_job_canceled_on_the_master_keeps_it_canceled() -> None:
    """accepted, still canceled; the holder's logs are kept."""
    canceled = scheduler.cancel(leased(), T0)
    outcome = scheduler.decide_result(canceled, failed(FailureReason.RUNTIME_ERROR), T0)
    assert outcome.job.status is JobStatus.CANCELED
    assert outcome.ack.status == "success"
    with_logs = scheduler.decide_result(canceled, result(JobStatus.COMPLETED, logs="tail"), T0)
    assert (with_logs.job.status, with_logs.job.logs) == (JobStatus.CANCELED, "tail")


def test_a_job_s_own_timeout_wins_over_the_default() -> None:
    """timeout_sec from resource_limits; else the default; nonsense counts as none."""
    assert scheduler.timeout_of(job(parameters={"resource_limits": {"timeout_sec": 5}}), 60) == 5
    assert scheduler.timeout_of(job(), 60) == 60
    assert scheduler.timeout_of(job(), None) is None
    assert scheduler.timeout_of(job(parameters={"resource_limits": {"timeout_sec": "x"}}), None) is None


def test_a_running_job_is_overdue_only_past_its_timeout_and_the_grace() -> None:
    """started at T0 with timeout 10 s and grace 5 s: overdue after 15 s, not at 14 s."""
    running = leased(parameters={"resource_limits": {"timeout_sec": 10}})
    assert not scheduler.is_overdue(running, T0 + dt.timedelta(seconds=14), None, 5)
    assert scheduler.is_overdue(running, T0 + dt.timedelta(seconds=16), None, 5)
    assert not scheduler.is_overdue(job(), T0 + dt.timedelta(days=1), 10, 5), "pending jobs are not running"
    assert not scheduler.is_overdue(leased(), T0 + dt.timedelta(days=1), None, 5), "no timeout, no limit"


def test_an_overdue_job_is_retried_then_failed_with_reason_timeout() -> None:
    """A timeout counts as a try; the last one fails the job, naming the node."""
    first = scheduler.expire(leased(max_retries=1), T0)
    assert (first.job.status, first.job.retry_count, first.job.node_id) == (JobStatus.PENDING, 1, "")
    assert first.job.failure_reason == FailureReason.TIMEOUT.value
    last = scheduler.expire(scheduler.claim(first.job, NODE, T0), T0)
    assert (last.job.status, last.job.retry_count) == (JobStatus.FAILED, 1)
    assert NODE.address in last.job.error and "timed out on the master" in last.job.error


def test_a_result_must_have_a_final_status() -> None:
    """processing is progress, not a result."""
    with pytest.raises(ValueError, match="status must be"):
        scheduler.decide_result(leased(), result(JobStatus.PROCESSING), T0)


def test_progress_is_taken_only_from_the_lease_holder_and_clamped() -> None:
    """0-100, and a 409 for any other node."""
    report = JobProgress(node_id="n1", progress=140.0)
    assert scheduler.record_progress(leased(), report).progress == 100.0
    with pytest.raises(Conflict):
        scheduler.record_progress(leased(node=OTHER), report)


# --- operator actions -----------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.PAUSED])
def test_unfinished_jobs_can_be_canceled(status: JobStatus) -> None:
    """canceled, with completed_at set."""
    canceled = scheduler.cancel(job(status=status), T0)
    assert (canceled.status, canceled.completed_at) == (JobStatus.CANCELED, T0)


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED])
def test_final_jobs_cannot_be_canceled(status: JobStatus) -> None:
    """already final -> Conflict (409)."""
    with pytest.raises(Conflict, match=f"already {status.value}"):
        scheduler.cancel(job(status=status), T0)


def test_pause_resume_and_retry_move_jobs_between_states() -> None:
    """paused leaves the queue; resume and retry put jobs back, retry with a fresh budget."""
    paused = scheduler.pause(leased())
    assert (paused.status, paused.node_id) == (JobStatus.PAUSED, "")
    assert scheduler.resume(paused).status is JobStatus.PENDING
    with pytest.raises(Conflict):
        scheduler.resume(job())
    again = scheduler.retry(job(status=JobStatus.FAILED, retry_count=3, error="x"))
    assert (again.status, again.retry_count, again.error) == (JobStatus.PENDING, 0, "")
    with pytest.raises(Conflict):
        scheduler.retry(job(status=JobStatus.COMPLETED))


# --- nodes ----------------------------------------------------------------------


def test_registering_an_address_again_keeps_its_id() -> None:
    """same node, fields updated, back to available."""
    registration = NodeRegistration(address="host:9091", cpu_threads=4)
    first = scheduler.merge_registration(None, registration, "n1", T0, proven=False, heartbeat_interval=30.0)
    offline = scheduler.mark_offline(first)
    later = T0 + dt.timedelta(hours=1)
    again = scheduler.merge_registration(
        offline, attrs.evolve(registration, cpu_threads=8), "unused", later, proven=False, heartbeat_interval=30.0
    )
    assert (again.id, again.cpu_threads, again.status) == ("n1", 8, "available")
    assert (again.registered_at, again.last_heartbeat) == (T0, later)
    assert (first.incarnation, again.incarnation) == (1, 2)


def test_a_live_name_is_taken_over_only_with_proof() -> None:
    """a second agent under a live name is refused, naming --node-name; the node's own restart is not."""
    live = attrs.evolve(NODE, last_heartbeat=T0)
    soon = T0 + dt.timedelta(seconds=10)
    registration = NodeRegistration(address=NODE.address)
    with pytest.raises(scheduler.NameTaken, match="--node-name"):
        scheduler.merge_registration(live, registration, "x", soon, proven=False, heartbeat_interval=30.0)
    restarted = scheduler.merge_registration(live, registration, "x", soon, proven=True, heartbeat_interval=30.0)
    assert (restarted.id, restarted.incarnation) == (NODE.id, NODE.incarnation + 1)
    silent_since = T0 + dt.timedelta(seconds=91)
    taken = scheduler.merge_registration(live, registration, "x", silent_since, proven=False, heartbeat_interval=30.0)
    assert taken.id == NODE.id


def test_leases_a_heartbeat_does_not_list_go_back_after_one_interval() -> None:
    """a claim younger than the grace may have crossed the heartbeat; an older one is lost."""
    old = leased(1)
    young = scheduler.claim(job(2), NODE, T0 + dt.timedelta(seconds=25))
    listed = leased(3)
    now = T0 + dt.timedelta(seconds=31)
    assert scheduler.unreported_leases([old, young, listed], ["j3"], now, 30.0) == [old]


def test_a_heartbeat_reports_busy_only_when_every_slot_is_taken() -> None:
    """busy means the node cannot take more work."""
    report = HeartbeatReport(active_job_ids=["a", "b"], max_concurrent_jobs=4)
    assert scheduler.apply_heartbeat(NODE, report, [], T0).status == "available"
    full = attrs.evolve(report, max_concurrent_jobs=2)
    beat = scheduler.apply_heartbeat(NODE, full, [], T0)
    assert (beat.status, beat.current_job_id, beat.last_heartbeat) == ("busy", "a", T0)


def test_an_empty_heartbeat_takes_the_jobs_leased_to_the_node() -> None:
    """the Go agent sends no body; the master knows what it leased."""
    beat = scheduler.apply_heartbeat(NODE, None, ["j1"], T0)
    assert (beat.active_job_ids, beat.status) == (["j1"], "busy")


def test_heartbeat_cancels_what_the_node_should_no_longer_run() -> None:
    """canceled, requeued, leased elsewhere or unknown: stop; ours or just finished: keep."""
    jobs = {
        "mine": leased(1),
        "canceled": scheduler.cancel(leased(2), T0),
        "requeued": job(3),
        "elsewhere": leased(4, OTHER),
        "finished": scheduler.decide_result(leased(5), result(JobStatus.COMPLETED), T0).job,
    }
    jobs = {key: attrs.evolve(value, id=key) for key, value in jobs.items()}
    stop = scheduler.jobs_to_cancel("n1", [*jobs, "unknown"], jobs)
    assert stop == ["canceled", "requeued", "elsewhere", "unknown"]


def test_a_node_is_silent_after_three_missed_heartbeats() -> None:
    """3 intervals pass: silent; an offline node is not reported again."""
    node = attrs.evolve(NODE, last_heartbeat=T0)
    assert not scheduler.is_silent(node, T0 + dt.timedelta(seconds=89), 30.0)
    assert scheduler.is_silent(node, T0 + dt.timedelta(seconds=91), 30.0)
    assert not scheduler.is_silent(scheduler.mark_offline(node), T0 + dt.timedelta(hours=1), 30.0)


def test_a_lost_job_that_never_reported_progress_goes_back_without_a_retry() -> None:
    """the node failed, not the job; the error says where."""
    back = scheduler.hand_back_lost(leased(retry_count=1), NODE, "went silent", T0)
    assert (back.status, back.node_id, back.retry_count, back.handbacks) == (JobStatus.PENDING, "", 1, 1)
    assert back.error == "node host:9091 went silent"


def test_a_lost_job_that_had_started_was_an_attempt_and_costs_a_retry() -> None:
    """a job that kills its node every time cannot loop for ever."""
    running = attrs.evolve(leased(retry_count=1, max_retries=1), progress=14.0)
    back = scheduler.hand_back_lost(running, NODE, "restarted while holding the job", T0)
    assert (back.status, back.retry_count) == (JobStatus.FAILED, 1)


def test_a_job_back_in_the_queue_or_leased_again_shows_no_earlier_attempt_s_speed() -> None:
    """live figures belong to one attempt: a hand-back and a new claim clear them."""
    running = scheduler.record_progress(leased(), JobProgress(node_id=NODE.id, progress=40.0, fps=30.0, speed=1.5))
    assert running.live is not None and running.live.fps == 30.0
    back = scheduler.hand_back_lost(running, NODE, "went silent", T0)
    assert back.live is None
    assert scheduler.claim(attrs.evolve(back, live=running.live), OTHER, T0).live is None


# --- attempts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "ended"),
    [
        (lambda j: scheduler.decide_result(j, result(JobStatus.COMPLETED), T0).job, True),
        (lambda j: scheduler.decide_result(j, failed(FailureReason.RUNTIME_ERROR), T0).job, True),
        (lambda j: scheduler.cancel(j, T0), True),
        (scheduler.pause, True),
        (lambda j: scheduler.hand_back_lost(j, NODE, "went silent", T0), True),
        (lambda j: scheduler.record_progress(j, JobProgress(node_id=NODE.id, progress=50)), False),
    ],
    ids=["completed", "failed-and-retried", "canceled", "paused", "lost", "progress"],
)
def test_an_attempt_ends_when_the_job_stops_running_on_its_node(change: Any, ended: bool) -> None:
    """A result, a cancel, a pause or a hand-back ends the running attempt; progress does not."""
    running = leased()
    assert scheduler.lease_ended(running, change(running)) is ended


def test_a_job_that_was_not_running_ends_no_attempt() -> None:
    """Canceling a pending job, or a canceled job's late result from its node, is no attempt of its own."""
    pending = job()
    assert not scheduler.lease_ended(pending, scheduler.cancel(pending, T0))
    canceled = scheduler.cancel(leased(), T0)
    late = scheduler.decide_result(canceled, result(JobStatus.CANCELED), T0).job
    assert not scheduler.lease_ended(canceled, late)


def test_an_unstarted_result_is_a_hand_back_in_the_history() -> None:
    """``not_started`` reads as 'handed back'; any other result as its status."""
    assert scheduler.result_outcome(result(JobStatus.FAILED, not_started=True)) == JobAttempt.HANDED_BACK
    assert scheduler.result_outcome(failed(FailureReason.TIMEOUT)) == "failed"
