"""The event channel end to end: the master's hub and the agent's listener over a real websocket.

Network rules: servers bind 127.0.0.1 port 0 (a restarted one reuses its port)
and are cancelled at the end of each test; every test has a timeout.
"""

from __future__ import annotations

import logging
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn
import hypercorn.trio
import pytest
import trio
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.config import MasterConfig
from agent.master.server import serve_master
from agent.models import AgentEvent
from agent.worker.backoff import Backoff
from agent.worker.events import events_url, listen_events
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(20)

KEY = "s3cret-key"


class Inbox:
    """What the listener delivered, with a way to wait for the next one."""

    def __init__(self) -> None:
        self.events: list[AgentEvent] = []
        self._changed = trio.Event()

    def __call__(self, event: AgentEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, wanted: AgentEvent, after: int = 0) -> None:
        with trio.fail_after(5):
            while wanted not in self.events[after:]:
                await self._changed.wait()


async def start_master(nursery: trio.Nursery, **fields: Any) -> str:
    fields = {"host": "127.0.0.1", "port": 0, "db": "", **fields}
    url: str = await nursery.start(serve_master, MasterConfig(**fields))
    return url


async def register(http: httpx.AsyncClient) -> tuple[str, str]:
    """The new node's id and token."""
    body = (await http.post("/nodes/register", json={"address": "w:1"})).json()
    return body["id"], body["node_token"]


async def connected(http: httpx.AsyncClient) -> None:
    """Until the master counts one open event channel."""
    with trio.fail_after(5):
        while "ffrtmp_master_event_connections 1.0" not in (await http.get("/metrics")).text:
            await trio.sleep(0.01)


async def listening(nursery: trio.Nursery, url: str, http: httpx.AsyncClient) -> tuple[str, Inbox]:
    """A new node with its event channel open, and its inbox (the wake-up on connect received)."""
    inbox = Inbox()
    node_id, token = await register(http)
    nursery.start_soon(partial(listen_events, url, node_id, inbox, api_key=token))
    await inbox.wait_for(AgentEvent.job_available())
    await connected(http)
    return node_id, inbox


def test_the_events_url_follows_the_master_url() -> None:
    """ws for http, wss for https, a path prefix kept, the node id quoted."""
    assert events_url("http://m:8080", "n1") == "ws://m:8080/nodes/n1/events"
    assert events_url("https://m/farm/", "a b") == "wss://m/farm/nodes/a%20b/events"


async def test_submits_cancels_and_drains_reach_the_node(nursery: trio.Nursery) -> None:
    """A wake-up on connect and per submit; a cancel names the job; a drain comes through."""
    url = await start_master(nursery)
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http:
        node_id, inbox = await listening(nursery, url, http)
        seen = len(inbox.events)
        await http.post("/jobs", json={"scenario": "144p30-h264"})
        await inbox.wait_for(AgentEvent.job_available(), after=seen)
        job = (await http.get("/jobs/next", params={"node_id": node_id})).json()["job"]
        await http.post(f"/jobs/{job['id']}/pause")
        await inbox.wait_for(AgentEvent.cancel(job["id"]))
        await http.post(f"/nodes/{node_id}/drain")
        await inbox.wait_for(AgentEvent.drain())
        nodes = (await http.get("/nodes")).json()["nodes"]
    assert nodes[0]["status"] == "draining"


async def test_a_node_that_long_polls_is_pushed_no_job_available(nursery: trio.Nursery) -> None:
    """Its long-poll wakes it, one per job; a cancel still comes, and nothing before it."""
    url = await start_master(nursery)
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http:
        node_id, inbox = await listening(nursery, url, http)
        assert (await http.get("/jobs/next", params={"node_id": node_id, "wait": 0.1})).json()["job"] is None
        seen = len(inbox.events)
        await http.post("/jobs", json={"scenario": "144p30-h264"})
        job = (await http.get("/jobs/next", params={"node_id": node_id})).json()["job"]
        await http.post(f"/jobs/{job['id']}/pause")
        await inbox.wait_for(AgentEvent.cancel(job["id"]), after=seen)
    assert inbox.events[seen:] == [AgentEvent.cancel(job["id"])]


async def test_only_the_node_s_own_token_opens_its_channel(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """With the node's token the channel opens; with the shared key, another node's token or none it is refused."""
    url = await start_master(nursery, api_key=KEY)
    inbox = Inbox()
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        node_id, token = await register(http)
        other_token = (await http.post("/nodes/register", json={"address": "w:2"})).json()["node_token"]
        caplog.set_level(logging.INFO, logger="agent.worker.events")
        for wrong in (KEY, other_token, ""):
            with trio.fail_after(5):
                await listen_events(url, node_id, inbox, api_key=wrong)  # refused: returns
        assert inbox.events == []
        nursery.start_soon(partial(listen_events, url, node_id, inbox, api_key=token))
        await inbox.wait_for(AgentEvent.job_available())
    refusal = f"The master has no event channel ({events_url(url, node_id)} answered 403); it will not push events"
    assert [r.message for r in caplog.records if "no event channel" in r.message] == [refusal] * 3


async def test_a_node_has_one_event_channel_the_newest(nursery: trio.Nursery) -> None:
    """A second connection for the node (a restarted agent) replaces the first, which is closed."""
    url = await start_master(nursery)
    first, second = Inbox(), Inbox()
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http:
        node_id, token = await register(http)
        async with trio.open_nursery() as listeners:
            slow = Backoff(base=30, cap=30)  # the replaced listener stays away
            listeners.start_soon(partial(listen_events, url, node_id, first, api_key=token, backoff=slow))
            await first.wait_for(AgentEvent.job_available())
            await connected(http)
            listeners.start_soon(partial(listen_events, url, node_id, second, api_key=token))
            await second.wait_for(AgentEvent.job_available())
            await connected(http)
            await http.post("/jobs", json={"scenario": "144p30-h264"})
            await second.wait_for(AgentEvent.job_available(), after=1)
            assert first.events == [AgentEvent.job_available()]
            listeners.cancel_scope.cancel()


async def test_a_master_without_the_channel_is_noted_once_and_left_alone(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Against an app with no websocket route the listener returns after one info line."""
    plain = Starlette(routes=[Route("/health", lambda request: JSONResponse({"status": "healthy"}))])
    config = hypercorn.Config()
    config.bind = ["127.0.0.1:0"]
    [url] = await nursery.start(partial(hypercorn.trio.serve, plain, config))  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="agent.worker.events")
    inbox = Inbox()
    with trio.fail_after(5):
        await listen_events(url, "n1", inbox)
    assert inbox.events == []
    assert len([r for r in caplog.records if "no event channel" in r.message]) == 1


async def test_a_broken_channel_is_opened_again_with_a_wake_up(tmp_path: Path) -> None:
    """The master restarts on the same port: the listener reconnects and reports a job_available."""
    inbox = Inbox()
    db = str(tmp_path / "master.db")
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as first:
            url = await start_master(first, db=db)
            async with httpx.AsyncClient(base_url=url) as http:
                node_id, token = await register(http)
            fast = Backoff(base=0.05, cap=0.2)
            outer.start_soon(partial(listen_events, url, node_id, inbox, api_key=token, backoff=fast))
            await inbox.wait_for(AgentEvent.job_available())
            first.cancel_scope.cancel()
        seen = len(inbox.events)
        port = urllib.parse.urlsplit(url).port
        async with trio.open_nursery() as second:
            await start_master(second, port=port, db=db)
            await inbox.wait_for(AgentEvent.job_available(), after=seen)
            second.cancel_scope.cancel()
        outer.cancel_scope.cancel()
