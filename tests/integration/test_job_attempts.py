"""A job's attempt history (``GET /jobs/{id}/attempts``, ``ffrtmp jobs attempts``) from real processes.

Network rules: masters bind 127.0.0.1 port 0 and are stopped at the end of
each test; the agent runs a stub encoder (``tests.encoder_stubs.flaky``) that
fails its first encodes, so the test is about retries rather than encoding.
The "older master" is a plain Starlette app that knows jobs but not their attempts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import hypercorn
import hypercorn.trio
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.client import ExtensionMissing, MasterClient, UnknownToMaster
from agent.config import MasterConfig
from agent.master.server import serve_master
from agent.models import Job, JobRequest, JobStatus
from tests import encoder_stubs
from tests.support import Processes, run_command, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.timeout(60)

KEY = "attempts-key"
TINY = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 0.2}})


async def test_a_job_that_fails_twice_then_succeeds_shows_three_attempts(procs: Processes, tmp_path: Path) -> None:
    """Two failed attempts with the encoder's errors, then the completed one, in the API and in the CLI."""
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    stub = encoder_stubs.flaky(tmp_path / "stub", failures=2)
    await start_agent(procs, "agent", url, tmp_path / "work", "--api-key", KEY, "--node-name", "box1",
                      "--ffmpeg", str(stub.path), "--poll-interval", "0.1s")
    async with MasterClient(url, KEY) as client:
        job = await client.submit_job(TINY)
        [done] = await wait_for_jobs(client, [job.id], timeout=40)
        attempts = await client.job_attempts(str(job.sequence_number))
    assert (done.status, done.retry_count, done.error) == (JobStatus.COMPLETED, 2, "")
    assert [(a.number, a.node_name, a.outcome) for a in attempts] == [
        (1, "box1", "failed"), (2, "box1", "failed"), (3, "box1", "completed"),
    ]
    first, second, last = attempts
    assert "boom: attempt 1 failed" in first.error and "boom: attempt 2 failed" in second.error
    assert first.failure_reason == second.failure_reason == "runtime_error"
    assert (last.failure_reason, last.error) == ("", "")
    assert all(a.started_at and a.ended_at and a.started_at <= a.ended_at for a in attempts)
    assert attempts[0].ended_at <= attempts[1].started_at  # type: ignore[operator]
    table = await run_command("--master", url, "--api-key", KEY, "jobs", "attempts", job.id)
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ATTEMPT", "NODE", "STARTED", "ENDED", "OUTCOME", "ERROR"]
    assert [row.split()[:2] for row in rows] == [["1", "box1"], ["2", "box1"], ["3", "box1"]]
    assert "failed" in rows[0] and "runtime_error: " in rows[0] and "boom: attempt 1 failed" in rows[0]
    assert "completed" in rows[2]


async def test_attempts_need_the_key_and_an_unknown_job_is_404(nursery: trio.Nursery) -> None:
    """The same auth as GET /jobs/{id}; an unknown job is 404 naming it; a new job has no attempt yet."""
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db="", api_key=KEY))
    async with httpx.AsyncClient(base_url=url) as http, MasterClient(url, KEY) as client:
        job = await client.submit_job(TINY)
        assert (await http.get(f"/jobs/{job.id}/attempts")).status_code == 401
        keyed = {"Authorization": f"Bearer {KEY}"}
        assert (await http.get(f"/jobs/{job.id}/attempts", headers=keyed)).json() == {"attempts": []}
        unknown = await http.get("/jobs/no-such-job/attempts", headers=keyed)
        assert unknown.status_code == 404 and unknown.json() == {"error": "job no-such-job not found"}
        with pytest.raises(UnknownToMaster) as raised:
            await client.job_attempts("no-such-job")
        assert not isinstance(raised.value, ExtensionMissing)


async def test_a_master_without_attempts_is_named_in_one_line(nursery: trio.Nursery) -> None:
    """Against a master that knows the job but not the route, the CLI says the master keeps no history (exit 1);
    an unknown job is still reported as unknown."""
    known = Job(id="known-job", scenario="144p30-h264")

    async def get_job(request: Request) -> JSONResponse:
        if request.path_params["ref"] != known.id:
            return JSONResponse({"error": f"job {request.path_params['ref']} not found"}, status_code=404)
        return JSONResponse(known.to_json())

    older = Starlette(routes=[Route("/jobs/{ref}", get_job)])
    config = hypercorn.Config()
    config.bind = ["127.0.0.1:0"]
    [url] = await nursery.start(partial(hypercorn.trio.serve, older, config))  # type: ignore[arg-type]
    async with MasterClient(url) as client:
        with pytest.raises(ExtensionMissing):
            await client.job_attempts(known.id)
    missing = await run_command("--master", url, "jobs", "attempts", known.id)
    unknown = await run_command("--master", url, "jobs", "attempts", "other-job")
    assert (missing.code, missing.out) == (1, "")
    assert missing.err.count("\n") == 1 and "keeps no attempt history" in missing.err, missing.err
    assert unknown.code == 1 and "job other-job not found" in unknown.err
    assert "attempt history" not in unknown.err
