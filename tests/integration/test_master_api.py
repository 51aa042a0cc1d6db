"""The master's HTTP API on a real socket, driven by httpx.

See "The wire protocol" and "Extensions to the protocol" in docs/architecture.rst.

Network rules: the server binds 127.0.0.1 port 0 and is cancelled at the end
of each test; every test has a timeout.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.config import MasterConfig
from agent.master.server import serve_master
from agent.models import Job, Node
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(15)

REPO = Path(__file__).resolve().parents[2]
KEY = "s3cret-key"


async def start_master(nursery: trio.Nursery, **fields: Any) -> str:
    config = MasterConfig(host="127.0.0.1", port=0, db="", **fields)
    url: str = await nursery.start(serve_master, config)
    return url


@pytest.fixture
async def http(nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    url = await start_master(nursery, max_retries=2)
    async with httpx.AsyncClient(base_url=url, timeout=5.0, auth=ActAsNode()) as client:
        yield client


async def register(http: httpx.AsyncClient, address: str = "worker-1:9091", **fields: Any) -> Node:
    response = await http.post("/nodes/register", json={"address": address, **fields})
    assert response.status_code in (200, 201), response.text
    return Node.from_json(response.json())


async def submit(http: httpx.AsyncClient, **fields: Any) -> Job:
    response = await http.post("/jobs", json={"scenario": "720p30-h264", **fields})
    assert response.status_code == 201, response.text
    return Job.from_json(response.json())


async def claim(http: httpx.AsyncClient, node: Node, **params: Any) -> Job | None:
    response = await http.get("/jobs/next", params={"node_id": node.id, **params})
    assert response.status_code == 200, response.text
    body = response.json()["job"]
    return None if body is None else Job.from_json(body)


async def job_of(http: httpx.AsyncClient, ref: str | int) -> Job:
    response = await http.get(f"/jobs/{ref}")
    assert response.status_code == 200, response.text
    return Job.from_json(response.json())


def result(job: Job, node: Node, status: str = "completed", **fields: Any) -> dict[str, Any]:
    return {"job_id": job.id, "node_id": node.id, "status": status, **fields}


# --- auth ---------------------------------------------------------------------------


async def test_with_a_key_every_route_but_health_needs_the_bearer_token(
    nursery: trio.Nursery,
) -> None:
    """Missing and wrong keys get Go's plain-text 401s; /health stays open."""
    url = await start_master(nursery, api_key=KEY)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}
        missing = await http.get("/jobs")
        assert (missing.status_code, missing.text) == (401, "Missing Authorization header\n")
        assert missing.headers["content-type"].startswith("text/plain")
        wrong = await http.get("/jobs", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.text) == (401, "Invalid API key\n")
        not_bearer = await http.get("/jobs", headers={"Authorization": KEY})
        assert not_bearer.status_code == 401
        good = await http.get("/jobs", headers={"Authorization": f"Bearer {KEY}"})
        assert good.json() == {"jobs": [], "count": 0, "next_cursor": None}


async def test_without_a_key_no_header_is_needed(http: httpx.AsyncClient) -> None:
    """An empty api_key turns authentication off."""
    assert (await http.get("/jobs")).status_code == 200


# --- nodes --------------------------------------------------------------------------


async def test_a_node_restarted_with_its_token_keeps_its_id_and_gets_a_new_token(
    http: httpx.AsyncClient,
) -> None:
    """201 the first time; 200, the same id, updated fields and a new run with the last token."""
    first = await http.post("/nodes/register", json={"address": "w:1", "cpu_threads": 4})
    token = first.json()["node_token"]
    again = await http.post("/nodes/register", json={"address": "w:1", "cpu_threads": 8, "node_token": token})
    other = await http.post("/nodes/register", json={"address": "w:2"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json()["id"] == first.json()["id"] != other.json()["id"]
    assert (again.json()["cpu_threads"], again.json()["incarnation"]) == (8, 2)
    assert len({token, again.json()["node_token"], other.json()["node_token"]}) == 3
    listed = (await http.get("/nodes")).json()
    assert listed["count"] == 2
    assert all("node_token" not in node and "token_hash" not in node for node in listed["nodes"])


async def test_a_second_agent_under_a_live_name_is_refused_naming_the_flag(http: httpx.AsyncClient) -> None:
    """Two running agents never share a node: without the last run's token, 409 and nothing changes."""
    first = await http.post("/nodes/register", json={"address": "w:1", "cpu_threads": 4})
    for proof in ({}, {"node_token": "guessed"}):
        refused = await http.post("/nodes/register", json={"address": "w:1", "cpu_threads": 8, **proof})
        assert refused.status_code == 409
        assert "--node-name" in refused.json()["error"]
    node = (await http.get("/nodes")).json()["nodes"][0]
    assert (node["id"], node["cpu_threads"], node["incarnation"]) == (first.json()["id"], 4, 1)


async def test_a_heartbeat_from_an_unknown_node_is_404(http: httpx.AsyncClient) -> None:
    """The agent registers again when it sees this."""
    response = await http.post("/nodes/nobody/heartbeat")
    assert response.status_code == 404
    assert "nobody" in response.json()["error"]


async def test_a_heartbeat_returns_the_jobs_to_cancel(http: httpx.AsyncClient) -> None:
    """Jobs canceled on the master come back in cancel_job_ids, and leave the node's row; an empty body is fine."""
    node = await register(http)
    await submit(http)
    await submit(http)
    first, second = await claim(http, node), await claim(http, node)
    assert first is not None and second is not None
    assert (await http.post(f"/jobs/{second.id}/cancel")).status_code == 200
    report = {"active_job_ids": [first.id, second.id], "max_concurrent_jobs": 2}
    reply = await http.post(f"/nodes/{node.id}/heartbeat", json=report)
    assert reply.json() == {"cancel_job_ids": [second.id], "drain": False}
    listed = (await http.get("/nodes")).json()["nodes"][0]
    assert (listed["status"], listed["active_job_ids"]) == ("available", [first.id])
    empty = await http.post(f"/nodes/{node.id}/heartbeat")
    assert empty.json() == {"cancel_job_ids": [], "drain": False}


async def test_deleting_a_node_requeues_its_jobs(http: httpx.AsyncClient) -> None:
    """200, then 404 for the same id; the job it held is pending again."""
    node = await register(http)
    job = await submit(http)
    assert await claim(http, node) is not None
    assert (await http.delete(f"/nodes/{node.id}")).status_code == 200
    assert (await http.delete(f"/nodes/{node.id}")).status_code == 404
    assert (await job_of(http, job.id)).status == "pending"


# --- submitting and reading jobs ----------------------------------------------------


async def test_submitted_jobs_get_ids_sequence_numbers_and_the_retry_budget(
    http: httpx.AsyncClient,
) -> None:
    """sequence 1, 2, ...; max_retries from the config; readable by id and by number."""
    one = await submit(http, parameters={"duration": 5}, queue="live", priority="high")
    two = await submit(http)
    assert (one.sequence_number, two.sequence_number) == (1, 2)
    assert one.max_retries == 2
    assert one.created_at is not None
    assert (one.status, one.queue, one.priority) == ("pending", "live", "high")
    assert await job_of(http, one.id) == one
    assert await job_of(http, 2) == two
    missing = await http.get("/jobs/404404")
    assert missing.status_code == 404 and "error" in missing.json()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"engine": "ffmpeg"}', "scenario"),
        (b'{"scenario": "  "}', "scenario"),
        (b'{"scenario": 720}', "scenario"),
        (b'{"scenario": "720p30-h264", "engine": "vlc"}', "engine"),
        (b'{"scenario": "720p30-h264", "queue": "urgent"}', "queue"),
        (b'{"scenario": "720p30-h264", "priority": "asap"}', "priority"),
        (b'{"scenario": "720p30-h264", "parameters": [1]}', "parameters"),
    ],
)
async def test_a_bad_job_request_is_400_naming_the_field(
    http: httpx.AsyncClient, body: bytes, named: str
) -> None:
    """The message says what to fix; nothing is stored."""
    response = await http.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert named in response.json()["error"]
    assert (await http.get("/jobs")).json()["count"] == 0


@pytest.mark.parametrize(
    ("scenario", "parameters", "named"),
    [
        ("999p30-h264x", {}, "scenario"),
        ("720p30", {}, "scenario"),
        ("720p30-h264", {"bitrate": "1M; rm -rf /"}, "bitrate"),
        ("720p30-h264", {"resolution": "1280x"}, "resolution"),
        ("720p30-h264", {"preset": "warp"}, "preset"),
        ("720p30-h264", {"codec": "h264_foo"}, "codec"),
        ("720p30-h264", {"duration": -1}, "duration"),
        ("720p30-h264", {"output": "../../etc/passwd"}, "output"),
        ("720p30-h264", {"input": "-filter_complex"}, "input"),
        ("720p30-h264", {"rtmp_url": "http://x/live"}, "rtmp_url"),
        ("720p30-h264", {"resource_limits": {"timeout_sec": 0}}, "resource_limits.timeout_sec"),
    ],
)
async def test_a_job_an_agent_would_reject_is_400_naming_the_field(
    http: httpx.AsyncClient, scenario: str, parameters: dict[str, Any], named: str
) -> None:
    """The agent's own checks run on the master: the job never reaches the queue."""
    response = await http.post("/jobs", json={"scenario": scenario, "parameters": parameters})
    assert response.status_code == 400, response.text
    assert f"invalid {named}:" in response.json()["error"]
    assert (await http.get("/jobs")).json()["count"] == 0


@pytest.mark.parametrize(
    "parameters",
    [
        {"codec": "h264_nvenc"},
        {"codec": "hevc_vaapi", "bitrate": "5M"},
        {"input": "/srv/media/clip.mp4"},
        {"input": "clip.mp4"},
        {"output": "/srv/outputs/night/clip.mp4"},
        {"hardware": "nvenc"},
        {"input": "https://media.example/clip.mp4", "duration": 30, "preset": "fast"},
    ],
)
async def test_what_only_the_running_worker_can_judge_is_accepted(
    http: httpx.AsyncClient, parameters: dict[str, Any]
) -> None:
    """Hardware encoders and local input paths depend on the worker that takes the job."""
    assert (await submit(http, parameters=parameters)).status == "pending"


async def test_a_body_over_one_mebibyte_is_413(http: httpx.AsyncClient) -> None:
    """Big bodies are refused before they are parsed."""
    huge = {"scenario": "720p30-h264", "parameters": {"x": "a" * (1024 * 1024)}}
    assert (await http.post("/jobs", json=huge)).status_code == 413


async def test_jobs_are_listed_and_filtered_by_status(http: httpx.AsyncClient) -> None:
    """?status= filters; synonyms like queued work; an unknown status is 400."""
    node = await register(http)
    await submit(http)
    await submit(http)
    await claim(http, node)
    assert (await http.get("/jobs")).json()["count"] == 2
    pending = (await http.get("/jobs", params={"status": "queued"})).json()
    assert (pending["count"], pending["jobs"][0]["sequence_number"]) == (1, 2)
    assert (await http.get("/jobs", params={"status": "running"})).json()["count"] == 1
    assert (await http.get("/jobs", params={"status": "nope"})).status_code == 400


# --- claims -------------------------------------------------------------------------


async def test_claims_follow_queue_then_priority_then_age(http: httpx.AsyncClient) -> None:
    """live before default before batch, high before low, oldest first; then null."""
    node = await register(http)
    await submit(http, queue="batch", priority="high")
    await submit(http, priority="low")
    await submit(http, priority="high")
    await submit(http, queue="live", priority="low")
    order = []
    while (job := await claim(http, node)) is not None:
        assert (job.status, job.node_id, job.node_name) == ("processing", node.id, node.address)
        order.append(job.sequence_number)
    assert order == [4, 3, 2, 1]


async def test_a_claim_from_an_unknown_node_is_404(http: httpx.AsyncClient) -> None:
    """JSON error; a missing node_id is 400."""
    response = await http.get("/jobs/next", params={"node_id": "ghost"})
    assert response.status_code == 404 and "ghost" in response.json()["error"]
    assert (await http.get("/jobs/next")).status_code == 400


async def test_a_gpu_job_waits_for_a_gpu_node_without_blocking_others(
    http: httpx.AsyncClient,
) -> None:
    """The CPU node skips the nvenc job and takes the one behind it."""
    cpu = await register(http, "cpu:1")
    gpu = await register(http, "gpu:1", has_gpu=True, gpu_capabilities=["h264_nvenc"])
    nvenc = await submit(http, parameters={"codec": "h264_nvenc"})
    plain = await submit(http)
    assert (await claim(http, cpu)) is not None and (await job_of(http, plain.id)).node_id == cpu.id
    assert await claim(http, cpu) is None
    got = await claim(http, gpu)
    assert got is not None and got.id == nvenc.id


async def test_a_long_poll_returns_as_soon_as_a_job_is_submitted(http: httpx.AsyncClient) -> None:
    """wait=10 answers within a fraction of a second of the submit, with the job."""
    node = await register(http)
    claimed: list[Job | None] = []

    async def poll() -> None:
        claimed.append(await claim(http, node, wait=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.2)
        assert claimed == []
        started = trio.current_time()
        job = await submit(http)
        with trio.fail_after(2):
            while not claimed:
                await trio.sleep(0.01)
        assert trio.current_time() - started < 1.0
    assert claimed[0] is not None and claimed[0].id == job.id


async def test_a_long_poll_with_nothing_to_do_ends_at_its_deadline(http: httpx.AsyncClient) -> None:
    """wait=0.3 answers null after about 0.3 s."""
    node = await register(http)
    started = trio.current_time()
    assert await claim(http, node, wait=0.3) is None
    assert 0.25 < trio.current_time() - started < 2.0


async def test_a_long_poll_abandoned_by_its_client_claims_nothing(http: httpx.AsyncClient) -> None:
    """A poller that hung up must not be leased the next job."""
    node = await register(http)
    with trio.move_on_after(0.3):
        await claim(http, node, wait=10)
    await trio.sleep(0.2)
    job = await submit(http)
    await trio.sleep(0.3)
    assert (await job_of(http, job.id)).status == "pending"


# --- results ------------------------------------------------------------------------


async def test_a_completed_result_finishes_the_job_and_repeating_it_is_harmless(
    http: httpx.AsyncClient,
) -> None:
    """success, progress 100, metrics and logs kept; the same result again is also success."""
    node = await register(http)
    await submit(http)
    job = await claim(http, node)
    assert job is not None
    body = result(job, node, metrics={"bandwidth_mbps": 12.5}, logs="frame=100")
    first = await http.post("/results", json=body)
    assert (first.status_code, first.json()) == (200, {"status": "success"})
    done = await job_of(http, job.id)
    assert (done.status, done.progress, done.metrics) == (
        "completed",
        100.0,
        {"bandwidth_mbps": 12.5},
    )
    assert done.completed_at is not None
    logs = (await http.get(f"/jobs/{job.id}/logs")).json()
    assert logs == {"job_id": job.id, "logs": "frame=100"}
    again = await http.post("/results", json=body)
    assert (again.status_code, again.json()) == (200, {"status": "success"})
    assert await job_of(http, job.id) == done


async def test_a_result_from_a_node_without_the_lease_is_409(http: httpx.AsyncClient) -> None:
    """Another node's result is refused with a JSON error and changes nothing."""
    holder, intruder = await register(http, "a:1"), await register(http, "b:1")
    await submit(http)
    job = await claim(http, holder)
    assert job is not None
    response = await http.post("/results", json=result(job, intruder))
    assert response.status_code == 409 and "not leased" in response.json()["error"]
    assert (await job_of(http, job.id)).status == "processing"


async def test_a_result_for_an_unknown_job_is_404_and_a_bad_one_400(
    http: httpx.AsyncClient,
) -> None:
    """Unknown job id: 404; a missing field or a non-final status: 400."""
    node = await register(http)
    ghost = {"job_id": "ghost", "node_id": node.id, "status": "completed"}
    assert (await http.post("/results", json=ghost)).status_code == 404
    assert (await http.post("/results", json={"job_id": "x"})).status_code == 400
    running = {**ghost, "status": "processing"}
    assert (await http.post("/results", json=running)).status_code == 400


async def test_failures_are_retried_then_final(http: httpx.AsyncClient) -> None:
    """max_retries=2: retrying 1/2, retrying 2/2, then failed; the error is kept."""
    node = await register(http)
    await submit(http)
    answers = []
    for _ in range(3):
        job = await claim(http, node)
        assert job is not None
        body = result(job, node, "failed", error="encoder crashed", failure_reason="runtime_error")
        answers.append((await http.post("/results", json=body)).json())
    assert answers == [
        {"status": "retrying", "retry": 1, "max_retries": 2},
        {"status": "retrying", "retry": 2, "max_retries": 2},
        {"status": "success"},
    ]
    final = await job_of(http, 1)
    assert (final.status, final.retry_count, final.error) == ("failed", 2, "encoder crashed")
    assert await claim(http, node) is None


async def test_a_job_handed_back_unstarted_is_requeued_without_a_retry(
    http: httpx.AsyncClient,
) -> None:
    """A draining agent's 'not started' result puts the job back with its retry count unchanged."""
    node = await register(http)
    await submit(http)
    job = await claim(http, node)
    assert job is not None
    body = result(
        job, node, "failed", error="not started: worker draining", failure_reason="platform_error",
        not_started=True,
    )
    assert (await http.post("/results", json=body)).json()["status"] == "retrying"
    back = await job_of(http, job.id)
    assert (back.status, back.retry_count, back.handbacks, back.node_id) == ("pending", 0, 1, "")


async def test_a_user_error_fails_the_job_at_once(http: httpx.AsyncClient) -> None:
    """No retries for a job that cannot succeed."""
    node = await register(http)
    await submit(http)
    job = await claim(http, node)
    assert job is not None
    body = result(job, node, "failed", error="bad resolution", failure_reason="user_error")
    assert (await http.post("/results", json=body)).json() == {"status": "success"}
    assert (await job_of(http, job.id)).status == "failed"


async def test_a_job_canceled_on_the_master_stays_canceled(http: httpx.AsyncClient) -> None:
    """Cancel: 200 then 409; the worker's late result is accepted and changes the status not."""
    node = await register(http)
    await submit(http)
    job = await claim(http, node)
    assert job is not None
    canceled = await http.post(f"/jobs/{job.id}/cancel")
    assert (canceled.status_code, canceled.json()["status"]) == (200, "canceled")
    assert (await http.post(f"/jobs/{job.id}/cancel")).status_code == 409
    late = await http.post("/results", json=result(job, node))
    assert (late.status_code, late.json()) == (200, {"status": "success"})
    assert (await job_of(http, job.id)).status == "canceled"


async def test_pause_resume_and_retry(http: httpx.AsyncClient) -> None:
    """A paused job is not claimed; resumed it is; a canceled job can be retried."""
    node = await register(http)
    job = await submit(http)
    assert (await http.post(f"/jobs/{job.id}/pause")).json()["status"] == "paused"
    assert await claim(http, node) is None
    assert (await http.post(f"/jobs/{job.id}/resume")).json()["status"] == "pending"
    assert (await http.post(f"/jobs/{job.id}/resume")).status_code == 409
    assert await claim(http, node) is not None
    await http.post(f"/jobs/{job.id}/cancel")
    assert (await http.post(f"/jobs/{job.id}/retry")).json()["status"] == "pending"


async def test_progress_is_recorded_only_from_the_lease_holder(http: httpx.AsyncClient) -> None:
    """200 ok and job.progress updated; 409 from another node."""
    node, other = await register(http, "a:1"), await register(http, "b:1")
    await submit(http)
    job = await claim(http, node)
    assert job is not None
    ok = await http.post(f"/jobs/{job.id}/progress", json={"node_id": node.id, "progress": 42.5})
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    assert (await job_of(http, job.id)).progress == 42.5
    refused = await http.post(f"/jobs/{job.id}/progress", json={"node_id": other.id, "progress": 1})
    assert refused.status_code == 409


# --- metrics, liveness, lifetime ----------------------------------------------------


async def test_metrics_count_jobs_and_nodes_by_status(http: httpx.AsyncClient) -> None:
    """Prometheus text with the master's own gauges."""
    node = await register(http)
    await submit(http)
    await submit(http)
    await claim(http, node)
    text = (await http.get("/metrics")).text
    assert 'ffrtmp_master_jobs{status="pending"} 1.0' in text
    assert 'ffrtmp_master_jobs{status="processing"} 1.0' in text
    assert 'ffrtmp_master_nodes{status="busy"} 1.0' in text  # its one slot is taken from the claim on


async def test_a_silent_node_goes_offline_and_its_jobs_back_to_the_queue(
    nursery: trio.Nursery,
) -> None:
    """heartbeat_interval 0.1 s: after 3 missed beats the node is offline and the job pending."""
    url = await start_master(nursery, heartbeat_interval=0.1)
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http:
        node = await register(http)
        job = await submit(http)
        assert await claim(http, node) is not None
        for _ in range(4):  # beating keeps it alive past the deadline
            await trio.sleep(0.1)
            await http.post(f"/nodes/{node.id}/heartbeat")
        assert (await http.get("/nodes")).json()["nodes"][0]["status"] != "offline"
        with trio.fail_after(3):
            while (await http.get("/nodes")).json()["nodes"][0]["status"] != "offline":
                await trio.sleep(0.05)
        back = await job_of(http, job.id)
        assert (back.status, back.node_id, back.retry_count) == ("pending", "", 0)
        assert node.address in back.error


async def test_cancelling_the_server_closes_its_socket() -> None:
    """serve_master returns when cancelled and nothing listens afterwards."""
    async with trio.open_nursery() as nursery:
        url = await start_master(nursery)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).status_code == 200
        nursery.cancel_scope.cancel()
    async with httpx.AsyncClient(base_url=url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/health")


async def test_jobs_survive_a_restart_with_a_database_file(tmp_path: Path) -> None:
    """A SQLite file keeps jobs and nodes across master restarts."""
    config = MasterConfig(host="127.0.0.1", port=0, db=str(tmp_path / "master.db"))
    for expected_count in (1, 2):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_master, config)
            async with httpx.AsyncClient(base_url=url) as http:
                job = await submit(http)
                assert job.sequence_number == expected_count
                assert (await http.get("/jobs")).json()["count"] == expected_count
            nursery.cancel_scope.cancel()


def test_run_master_logs_its_url_and_exits_zero_on_sigterm() -> None:
    """The CLI's entry point: 'Master listening on http://...', then a clean exit."""
    script = textwrap.dedent(
        """
        import logging, sys
        from agent.config import MasterConfig
        from agent.master.server import run_master
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        sys.exit(run_master(MasterConfig(host="127.0.0.1", port=0, db="", api_key="hidden-key")))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if line.startswith("Master listening on http://127.0.0.1:"):
                break
        else:
            pytest.fail("the master never said where it listens")
        url = line.split()[-1]
        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "healthy"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        rest = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert "hidden-key" not in line + rest


def test_run_master_exits_two_naming_the_flag_when_the_port_is_taken() -> None:
    """A bind failure is one clear log line naming --port and exit code 2 (a setting to change), not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = (
            "import logging, sys\n"
            "from agent.config import MasterConfig\n"
            "from agent.master.server import run_master\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            f"sys.exit(run_master(MasterConfig(host='127.0.0.1', port={port}, db='')))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    assert done.returncode == 2, done.stderr
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_node_id_with_a_nul_is_unknown_on_every_node_route(http: httpx.AsyncClient) -> None:
    """No node has such an id: 404, never a database error."""
    assert (await http.post("/nodes/%00/heartbeat")).status_code == 404
    assert (await http.get("/jobs/next", params={"node_id": "\x00"})).status_code == 404
    assert (await http.post("/nodes/%00/drain")).status_code == 404


async def test_metrics_count_jobs_timed_out_and_deleted_by_housekeeping(nursery: trio.Nursery) -> None:
    """A job past its timeout is failed and counted, then deleted after the retention period and counted."""
    url = await start_master(
        nursery, heartbeat_interval=0.2, job_timeout=0.1, max_retries=0, cleanup_retention=0.5 / 86400
    )
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http:
        node = await register(http)
        job = await submit(http)
        assert await claim(http, node) is not None
        wanted = {"ffrtmp_master_jobs_timed_out_total 1.0", "ffrtmp_master_jobs_cleaned_total 1.0"}
        with trio.fail_after(5):
            while not wanted <= set((await http.get("/metrics")).text.splitlines()):
                await http.post(f"/nodes/{node.id}/heartbeat")  # alive: the job times out, not its node
                await trio.sleep(0.05)
        assert (await http.get(f"/jobs/{job.id}")).status_code == 404
