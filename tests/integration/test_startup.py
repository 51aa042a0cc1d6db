"""Start-up runs off the event loop: the agent's engine detection never freezes what shares its loop.

Network rules: everything binds 127.0.0.1 and port 0. The slow ``gst-inspect-1.0``
is a stub on PATH that sleeps, standing in for a machine with many plugins.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.config import AgentConfig, MasterConfig
from agent.master.server import serve_master
from agent.worker.agent import Agent

pytestmark = pytest.mark.timeout(30)

INSPECT_SECONDS = 3


def slow_gstreamer(directory: Path) -> None:
    directory.mkdir()
    for name, body in (("gst-inspect-1.0", f"sleep {INSPECT_SECONDS}"), ("gst-launch-1.0", "exit 0")):
        stub = directory / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)


async def test_a_slow_engine_detection_leaves_the_embedded_master_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    """As in local mode, master and agent share one loop: /health answers all through a 3 s gst-inspect."""
    slow_gstreamer(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    config = AgentConfig(master_url=url, work_dir=tmp_path / "work", metrics_host="127.0.0.1", metrics_port=0)
    answers = 0
    async with MasterClient(url) as client, httpx.AsyncClient(base_url=url, timeout=1.0) as http:
        agent = Agent.from_config(config, client, master_as_worker=True)
        async with trio.open_nursery() as agent_nursery:
            agent_nursery.start_soon(agent.serve)
            with trio.fail_after(INSPECT_SECONDS * 5):
                while not agent.state.node_id:  # it registers once the engines are known
                    assert (await http.get("/health")).status_code == 200
                    answers += 1
                    await trio.sleep(0.1)
            agent_nursery.cancel_scope.cancel()
    assert answers >= INSPECT_SECONDS * 3, f"only {answers} answers while the engines were detected"
    assert agent.runner.gstreamer is not None
