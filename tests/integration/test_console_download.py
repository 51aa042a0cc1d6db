"""``ffrtmp jobs download`` for a job whose output went elsewhere: it says where, exit 1.

Network rules: the master binds 127.0.0.1 port 0 and is cancelled at the end.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.config import MasterConfig
from agent.console import download_outputs
from agent.master.server import serve_master
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(15)


async def test_a_job_delivered_to_a_url_is_not_downloaded_and_the_cli_says_where(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    async with httpx.AsyncClient(base_url=url, auth=ActAsNode()) as http, MasterClient(url) as client:
        node = (await http.post("/nodes/register", json={"address": "w:1"})).json()
        await http.post("/jobs", json={"scenario": "144p30-h264", "parameters": {"deliver": "https://dav.example/out/"}})
        job = (await http.get("/jobs/next", params={"node_id": node["id"]})).json()["job"]
        result = {"job_id": job["id"], "node_id": node["id"], "status": "completed",
                  "metrics": {"delivered_to": "https://dav.example/out/clip.mp4"}}
        assert (await http.post("/results", json=result)).status_code == 200
        code = await download_outputs(client, "1", tmp_path / "out", io.StringIO())
    assert code == 1
    assert "its output was delivered to https://dav.example/out/clip.mp4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
