"""A master refuses an address that sent too many wrong API keys (agent/master/guesses.py), on a real socket.

Each test starts its own master (the counts are the master's), on 127.0.0.1;
a second client connects from 127.0.0.2, which Linux routes to the same
loopback, to show that the count is per address.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from agent.master.guesses import LOCKOUT_S, WRONG_KEYS
from tests.integration.test_master_api import KEY, start_master
from tests.support import Processes, start_process

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def url(nursery: trio.Nursery) -> str:
    return await start_master(nursery, api_key=KEY)


def client(url: str, *, key: str | None = None, source: str = "127.0.0.1") -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    transport = httpx.AsyncHTTPTransport(local_address=source)
    return httpx.AsyncClient(base_url=url, headers=headers, transport=transport, timeout=5.0)


async def guess(url: str, times: int) -> None:
    async with client(url, key="not-the-key") as guesser:
        for _ in range(times):
            assert (await guesser.get("/jobs")).status_code == 401


async def test_after_too_many_wrong_keys_even_the_right_one_is_refused_from_that_address(url: str) -> None:
    """429 with Retry-After for the guessing address, the right key included; another address is served."""
    async with client(url, key=KEY) as operator:
        node = (await operator.post("/nodes/register", json={"address": "worker:1"})).json()
        await guess(url, WRONG_KEYS - 1)
        assert (await operator.get("/jobs")).status_code == 200  # the right key: the count starts afresh
        await guess(url, WRONG_KEYS)
        refused = await operator.get("/jobs")
        assert refused.status_code == 429, refused.text
        assert 0 < int(refused.headers["retry-after"]) <= LOCKOUT_S
        assert "too many wrong API keys from 127.0.0.1" in refused.json()["error"]
        assert (await operator.post("/nodes/register", json={"address": "worker:2"})).status_code == 429
    async with client(url, key=KEY, source="127.0.0.2") as elsewhere:
        assert (await elsewhere.get("/jobs")).status_code == 200
    async with client(url, key=node["node_token"]) as as_node:  # a node's own token is no guess at the key
        claimed = await as_node.get("/jobs/next", params={"node_id": node["id"]})
        assert claimed.status_code == 200, claimed.text


async def test_wrong_tokens_on_the_artifact_routes_count_too(url: str) -> None:
    async with client(url, key="not-the-key") as guesser:
        for _ in range(WRONG_KEYS):
            assert (await guesser.head(f"/artifacts/{'0' * 64}")).status_code == 401
    async with client(url, key=KEY) as operator:
        assert (await operator.get("/jobs")).status_code == 429


async def test_the_dashboard_login_counts_and_then_refuses_with_a_message(url: str) -> None:
    async with client(url) as browser:

        async def log_in(key: str) -> httpx.Response:
            form = await browser.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            return await browser.post("/ui/login", data={"key": key, "csrf": csrf.group(1), "next": "/"})

        for _ in range(WRONG_KEYS):
            assert (await log_in("not-the-key")).status_code == 401
        refused = await log_in(KEY)
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= LOCKOUT_S
        assert "Not checked: too many wrong API keys from 127.0.0.1" in refused.text
    async with client(url, key=KEY) as operator:  # the same count as the API's
        assert (await operator.get("/jobs")).status_code == 429


async def test_the_dashboard_still_serves_another_address_while_the_local_one_is_locked_out(url: str) -> None:
    """The dashboard calls the API in-process; those calls are not counted as coming from 127.0.0.1."""
    async with client(url, source="127.0.0.2") as browser:
        form = await browser.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text
        logged_in = await browser.post("/ui/login", data={"key": KEY, "csrf": csrf.group(1), "next": "/"})
        assert logged_in.status_code == 303
        await guess(url, WRONG_KEYS)  # from 127.0.0.1
        overview = await browser.get("/")
        assert overview.status_code == 200 and "slots used" in overview.text, overview.text


async def test_an_agent_on_a_locked_out_address_waits_and_tries_again(
    url: str, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A real agent whose registration is refused (429) says why and retries, with no traceback."""
    await guess(url, WRONG_KEYS)
    procs = Processes(nursery)
    agent = await start_process(procs, "agent", [
        "--master", url, "--api-key", KEY, "--work-dir", str(tmp_path / "work"), "--metrics-host", "127.0.0.1",
        "--metrics-port", "0", "--allow-master-as-worker", "--skip-confirmation",
    ])
    await agent.wait_for(r"Cannot register with .* answered 429 .*too many wrong API keys from 127\.0\.0\.1.*retrying",
                         timeout=10)
    await trio.sleep(1.5)  # past its first retry
    assert agent.process.returncode is None, agent.lines
    assert not any("Traceback" in line for line in agent.lines), agent.lines
    await procs.stop_all()
