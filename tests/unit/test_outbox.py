"""The result outbox keeps undelivered results on disk."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.models import JobResult, JobStatus
from agent.worker.reporter import Outbox


def result(job_id: str) -> JobResult:
    return JobResult(
        job_id=job_id, node_id="n", status=JobStatus.COMPLETED, metrics={"bandwidth_mbps": 1.5},
        completed_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    )


def test_saved_results_come_back_equal_after_a_restart(tmp_path: Path) -> None:
    Outbox(tmp_path).save(result("a"))
    Outbox(tmp_path).save(result("b"))
    assert Outbox(tmp_path).pending() == [result("a"), result("b")]


def test_removed_results_are_gone_and_saving_twice_keeps_one(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.save(result("a"))
    outbox.save(result("a"))
    assert len(outbox.pending()) == 1
    outbox.remove("a")
    assert outbox.pending() == []


def test_an_unreadable_file_is_moved_aside_not_retried_forever(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    outbox = Outbox(tmp_path)
    outbox.save(result("a"))
    assert outbox.pending() == [result("a")]
    assert (tmp_path / "broken.bad").exists()
