"""Wire types read what the Go master writes and write what it reads."""

from __future__ import annotations

import datetime as dt

import pytest

from agent.models import Job, JobResult, JobStatus, parse_time


def test_times_accept_nanoseconds_and_any_offset() -> None:
    value = parse_time("2026-01-02T03:04:05.123456789+02:00")
    assert value == dt.datetime(2026, 1, 2, 1, 4, 5, 123456, tzinfo=dt.timezone.utc)
    assert parse_time("2026-01-02T03:04:05Z").tzinfo is not None


def test_a_time_without_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        parse_time("2026-01-02T03:04:05")


def test_go_status_synonyms_and_unknown_fields_are_accepted() -> None:
    job = Job.from_json({"id": "a", "scenario": "720p30-h264", "status": "running", "gpu_hint": 1, "node_id": None})
    assert job.status is JobStatus.PROCESSING
    assert job.node_id == ""


def test_a_wrong_field_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"\$\.status"):
        Job.from_json({"id": "a", "scenario": "x", "status": "exploded"})
    with pytest.raises(ValueError, match="JSON object"):
        Job.from_json(["not", "an", "object"])


def test_results_round_trip_through_json() -> None:
    result = JobResult(job_id="a", node_id="n", status=JobStatus.COMPLETED, metrics={"bandwidth_mbps": 3.5})
    again = JobResult.from_json(result.to_json())
    assert again == result
    assert result.to_json()["status"] == "completed"
    assert result.to_json()["completed_at"].endswith("Z")
