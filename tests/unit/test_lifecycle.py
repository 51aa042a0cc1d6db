"""One job's lifecycle as plain transitions: events in, actions out, no trio and no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agent.worker.lifecycle as lifecycle_module
from agent.models import FailureReason, Job, JobProgress, JobStatus
from agent.scenarios import build_spec
from agent.worker.lifecycle import (
    Claimed,
    EncodeOutcome,
    EncoderExited,
    JobLife,
    Phase,
    Progressed,
    Report,
    SendProgress,
    StartEncoder,
    StopEncoder,
    StopReason,
    StopRequested,
)
from agent.worker.progress import ProgressSnapshot

JOB = Job(id="j1", scenario="144p30-h264", parameters={"duration": 2})
SPEC = build_spec(JOB)


def encoding() -> JobLife:
    life = JobLife(JOB, "node-1")
    assert life.handle(Claimed(spec=SPEC)) == [StartEncoder(SPEC)]
    return life


def reported(actions: list[object]) -> Report:
    [action] = actions
    assert isinstance(action, Report)
    return action


def test_the_lifecycle_imports_neither_trio_nor_any_io_module() -> None:
    """Decisions only: the module can be read and tested without a loop, a socket or a file."""
    tree = ast.parse(Path(lifecycle_module.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"trio", "anyio", "httpx", "socket", "subprocess", "os", "pathlib", "shutil", "asyncio"}


def test_a_claim_starts_the_encoder_with_the_spec_built_at_claim_time() -> None:
    life = encoding()
    assert (life.phase, life.spec) == (Phase.ENCODING, SPEC)


def test_a_claim_while_draining_is_handed_back_unstarted_as_data() -> None:
    """not_started is a field of the result; the error keeps the text the Go master reads; the breaker is not told."""
    report = reported(JobLife(JOB, "node-1").handle(Claimed(spec=SPEC, draining=True)))
    result = report.result
    assert (result.status, result.failure_reason, result.not_started) == (JobStatus.FAILED, "platform_error", True)
    assert result.error == "not started: worker draining" and not report.counts_for_health


def test_a_rejected_claim_is_a_user_error_at_once() -> None:
    report = reported(JobLife(JOB, "node-1").handle(Claimed(rejection="invalid codec: av2")))
    assert (report.result.failure_reason, report.result.error) == ("user_error", "invalid codec: av2")


def test_progress_goes_to_the_master_at_most_once_per_interval() -> None:
    """Every snapshot updates the job; only one a second becomes an update, with the latest figures."""
    life = encoding()
    sent = []
    for tenth in range(25):
        snapshot = ProgressSnapshot(out_time_s=tenth / 10, fps=30.0)
        for action in life.handle(Progressed(tenth * 4.0, snapshot, now=tenth / 10)):
            assert isinstance(action, SendProgress)
            sent.append(action.update)
    assert [update.progress for update in sent] == [0.0, 40.0, 80.0]
    assert life.progress == 96.0 and sent[0].node_id == "node-1"


def test_an_encode_that_ends_by_itself_reports_its_own_outcome() -> None:
    """Completed at 100 %, or failed with the runner's reason; either way the breaker learns from it."""
    done = reported(encoding().handle(EncoderExited(EncodeOutcome(metrics={"fps": 30.0}, logs="ok"))))
    assert (done.result.status, done.result.progress, done.result.metrics) == (JobStatus.COMPLETED, 100.0, {"fps": 30.0})
    failed = reported(encoding().handle(EncoderExited(EncodeOutcome.failed(FailureReason.STALLED, "no progress"))))
    assert (failed.result.status, failed.result.failure_reason) == (JobStatus.FAILED, "stalled")
    assert done.counts_for_health and failed.counts_for_health


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (StopReason.CANCELED, "canceled on the master"),
        (StopReason.PAUSED, "paused on the master"),
        (StopReason.LEASE_LOST, "no longer leased to this node on the master"),
    ],
)
def test_every_stop_from_the_master_is_one_event_and_ends_canceled(reason: StopReason, error: str) -> None:
    life = encoding()
    life.handle(Progressed(40.0, ProgressSnapshot(), now=0.0))
    assert life.handle(StopRequested(reason)) == [StopEncoder(reason)]
    report = reported(life.handle(EncoderExited(EncodeOutcome(stopped=True))))
    assert (report.result.status, report.result.error, report.result.progress) == (JobStatus.CANCELED, error, 40.0)
    assert not report.counts_for_health


def test_a_shutdown_stop_is_a_platform_failure_the_master_runs_again() -> None:
    life = encoding()
    life.handle(StopRequested(StopReason.SHUTDOWN))
    report = reported(life.handle(EncoderExited(EncodeOutcome(stopped=True))))
    assert (report.result.failure_reason, report.result.error) == ("platform_error", "worker shutdown")
    assert not report.counts_for_health


def test_the_first_stop_reason_wins_and_nothing_is_sent_while_stopping() -> None:
    life = encoding()
    life.handle(StopRequested(StopReason.CANCELED))
    assert life.handle(StopRequested(StopReason.SHUTDOWN)) == []
    assert life.handle(Progressed(50.0, ProgressSnapshot(), now=5.0)) == []
    assert life.stop_reason is StopReason.CANCELED


def test_an_encode_that_finished_before_its_stop_took_effect_reports_what_it_did() -> None:
    """The stop came too late: the encode completed, and that is the truth."""
    life = encoding()
    life.handle(StopRequested(StopReason.CANCELED))
    assert reported(life.handle(EncoderExited(EncodeOutcome()))).result.status is JobStatus.COMPLETED


def test_a_job_is_reported_exactly_once() -> None:
    """After the result, every event is too late."""
    life = encoding()
    reported(life.handle(EncoderExited(EncodeOutcome())))
    for event in (EncoderExited(EncodeOutcome()), StopRequested(StopReason.SHUTDOWN), Claimed(spec=SPEC)):
        assert life.handle(event) == []
    assert life.phase is Phase.DONE


# --- prefetched jobs: claimed, waiting for a slot -----------------------------------


def test_a_cancel_while_waiting_for_a_slot_ends_the_job_canceled_without_starting_it() -> None:
    """The stop is kept until the job's turn; then it reports canceled and no encoder starts."""
    life = JobLife(JOB, "node-1")
    assert life.handle(StopRequested(StopReason.CANCELED)) == []
    report = reported(life.handle(Claimed(spec=SPEC)))
    assert (report.result.status, report.result.progress, report.counts_for_health) == (JobStatus.CANCELED, 0.0, False)


def test_a_shutdown_while_waiting_for_a_slot_hands_the_job_back_unstarted() -> None:
    """The same free hand-back as a claim during a drain."""
    life = JobLife(JOB, "node-1")
    life.handle(StopRequested(StopReason.SHUTDOWN))
    assert reported(life.handle(Claimed(spec=SPEC))).result.not_started


def test_a_job_shown_as_prefetched_tells_the_master_at_once_that_it_encodes() -> None:
    """Its first update goes with the encoder's start, stage ``encoding``, progress 0."""
    life = JobLife(JOB, "node-1")
    start, update = life.handle(Claimed(spec=SPEC, shown_prefetched=True))
    assert start == StartEncoder(SPEC)
    assert isinstance(update, SendProgress)
    assert (update.update.stage, update.update.progress) == (JobProgress.ENCODING, 0.0)


def test_a_job_ends_soon_by_its_progress_once_it_has_some() -> None:
    """Time so far over the share done: 9 s for 90 % leaves 1 s."""
    life = encoding()
    life.handle(Progressed(90.0, ProgressSnapshot(), now=9.0))
    assert life.ends_within(1.0, running_s=9.0)
    assert not life.ends_within(0.5, running_s=9.0)


def test_before_any_progress_only_a_short_job_counts_as_ending_soon() -> None:
    """A job asking for a few seconds of media does; a long one, or one of unknown length, never does."""
    assert encoding().ends_within(1.0, running_s=30.0)  # 2 s of media
    long_job = JobLife(Job(id="j2", scenario="144p30-h264", parameters={"duration": 600}), "node-1")
    long_job.handle(Claimed(spec=build_spec(long_job.job)))
    assert not long_job.ends_within(1.0, running_s=0.1)


def test_a_job_that_holds_no_slot_never_ends_soon() -> None:
    """Waiting for a slot, stopping or done: nothing for a prefetch to wait for."""
    waiting = JobLife(JOB, "node-1")
    stopping = encoding()
    stopping.handle(StopRequested(StopReason.CANCELED))
    assert not waiting.ends_within(1.0, 0.0) and not stopping.ends_within(1.0, 0.0)
