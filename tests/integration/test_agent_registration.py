"""The agent registering again with a master that forgot its node, on a real master and socket."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.config import AgentConfig, MasterConfig
from agent.master.server import serve_master
from agent.worker.agent import Agent

pytestmark = pytest.mark.timeout(30)


async def test_the_poller_and_the_heartbeats_finding_the_node_forgotten_register_it_once(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Both register again at once: one does, the other sees it done (a second would show a stale token: 409)."""
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    config = AgentConfig(master_url=url, work_dir=tmp_path / "work", metrics_host="127.0.0.1", metrics_port=0)
    async with MasterClient(url) as client, httpx.AsyncClient(base_url=url) as http:
        agent = Agent.from_config(config, client)
        async with trio.open_nursery() as agent_nursery:
            agent_nursery.start_soon(agent.serve)
            with trio.fail_after(10):
                while not agent.state.node_id:
                    await trio.sleep(0.05)
            forgotten = agent.state.node_id
            assert (await http.delete(f"/nodes/{forgotten}")).status_code == 200
            async with trio.open_nursery() as both:
                both.start_soon(agent.register)
                both.start_soon(agent.register)
            assert agent.state.node_id != forgotten
            nodes = (await http.get("/nodes")).json()["nodes"]
            assert [node["id"] for node in nodes] == [agent.state.node_id]
            agent_nursery.cancel_scope.cancel()
