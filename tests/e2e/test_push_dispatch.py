"""Push dispatch as an agent process sees it: websocket wake-ups, and the fallback without them.

Network rules: everything on 127.0.0.1 with ports from the OS, each process
stopped by the fixture that started it. The encoder is a stub
(``tests.encoder_stubs``) whose journal records when each encode starts: the
tests measure dispatch, not encoding.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from functools import partial
from pathlib import Path

import httpx
import hypercorn
import hypercorn.trio
import pytest
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.client import MasterClient
from agent.config import MasterConfig
from agent.master.app import create_app
from agent.master.events import EventHub
from agent.master.store import open_store
from agent.models import JobRequest, JobStatus
from tests import encoder_stubs
from tests.support import Processes, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow

TINY = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 0.2}})
# The agent must not find the job by polling: its poll interval dwarfs the bound.
POLL_INTERVAL = "30s"
START_BOUND_S = 1.0


async def test_a_job_for_an_idle_agent_starts_within_a_second_not_a_poll_interval(
    procs: Processes, tmp_path: Path
) -> None:
    """--poll-interval 30s, event channel open: POST /jobs to encoder start is well under 1 s."""
    _, url = await start_master(procs, tmp_path)
    stub = encoder_stubs.succeeding(tmp_path / "stub")
    agent, _ = await start_agent(
        procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--poll-interval", POLL_INTERVAL
    )
    await agent.wait_for(r"Starting job polling loop")
    async with MasterClient(url) as client, httpx.AsyncClient(base_url=url) as http:
        with trio.fail_after(10):
            while "ffrtmp_master_event_connections 1.0" not in (await http.get("/metrics")).text:
                await trio.sleep(0.05)
        submitted = time.time()
        job = await client.submit_job(TINY)
        [done] = await wait_for_jobs(client, [job.id], timeout=10)
    [(started, _)] = stub.entries
    latency = started - submitted
    print(f"POST /jobs to encoder start: {latency * 1000:.0f} ms")
    assert done.status is JobStatus.COMPLETED
    assert latency < START_BOUND_S


class _WithoutExtensions:
    """The master as the original Go master answers: no long-poll, no websocket, no progress, no tokens.

    ``wait`` is dropped from ``GET /jobs/next`` (answered at once), the event
    channel and ``POST /jobs/{id}/progress`` are 404, and the registration
    answer has no ``node_token`` (the master must then accept legacy agents).
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"404 page not found\n"})
            return
        if scope["type"] == "http" and scope["path"].endswith("/progress"):
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"404 page not found\n"})
            return
        if scope["type"] == "http" and scope["path"] == "/jobs/next":
            query = urllib.parse.parse_qsl(scope["query_string"].decode())
            kept = urllib.parse.urlencode([(k, v) for k, v in query if k != "wait"])
            scope = {**scope, "query_string": kept.encode()}
        if scope["type"] == "http" and scope["path"] == "/nodes/register":
            send = _without_node_token(send)
        await self._app(scope, receive, send)


def _without_node_token(send: Send) -> Send:
    """``send`` with ``node_token`` taken out of a JSON answer (sent in one body message, as Starlette does)."""

    async def rewrite(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]
            message = {**message, "headers": headers}
        elif message["type"] == "http.response.body":
            body = json.loads(message["body"])
            body.pop("node_token", None)
            message = {**message, "body": json.dumps(body).encode()}
        await send(message)

    return rewrite


async def test_against_a_master_without_extensions_the_agent_polls_and_says_so_once(
    procs: Processes, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Three jobs complete by plain polling, speaking with the shared key; the fallback is logged once."""
    config = MasterConfig(host="127.0.0.1", port=0, db="", api_key="legacy-key", allow_legacy_agents=True)
    store = await nursery.start(_serve_store)
    app = _WithoutExtensions(create_app(store, config, EventHub()))
    http = hypercorn.Config()
    http.bind = ["127.0.0.1:0"]
    [url] = await nursery.start(partial(hypercorn.trio.serve, app, http))  # type: ignore[arg-type]
    stub = encoder_stubs.succeeding(tmp_path / "stub")
    agent, _ = await start_agent(
        procs, "agent", url, tmp_path / "work", "--ffmpeg", str(stub.path), "--poll-interval", "0.3s",
        "--api-key", "legacy-key",
    )
    async with MasterClient(url, "legacy-key") as client:
        ids = [(await client.submit_job(TINY)).id for _ in range(3)]
        jobs = await wait_for_jobs(client, ids, timeout=30)
        await agent.stop()
    assert all(j.status is JobStatus.COMPLETED for j in jobs)
    notices = [line for line in agent.lines if "falling back to plain polling" in line]
    assert len(notices) == 1, agent.log


async def _serve_store(*, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_store("") as store:
        task_status.started(store)
        await trio.sleep_forever()
