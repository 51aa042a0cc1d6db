"""Running jobs' progress on a real master: kept in memory, written in batches.

See "The master" in docs/architecture.rst. Network rules: the server binds
127.0.0.1 port 0 and is cancelled at the end of each test; every test has a timeout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.config import MasterConfig
from agent.master.progress import FLUSH_INTERVAL_S
from agent.master.server import serve_master
from agent.models import Job, Node
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(20)

UPDATES = 40


async def start_master(nursery: trio.Nursery, **fields: Any) -> str:
    url: str = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, **fields))
    return url


async def leased_job(http: httpx.AsyncClient, address: str = "worker-1:9091") -> tuple[Job, Node]:
    registered = await http.post("/nodes/register", json={"address": address})
    node = Node.from_json(registered.json())
    await http.post("/jobs", json={"scenario": "720p30-h264"})
    claimed = await http.get("/jobs/next", params={"node_id": node.id})
    return Job.from_json(claimed.json()["job"]), node


async def counter(http: httpx.AsyncClient, name: str) -> float:
    exposition = (await http.get("/metrics")).text
    [value] = [line.split()[1] for line in exposition.splitlines() if line.startswith(f"{name}_total ")]
    return float(value)


async def progress_of(http: httpx.AsyncClient, job: Job) -> float:
    return float((await http.get(f"/jobs/{job.id}")).json()["progress"])


async def test_many_progress_updates_cost_at_most_one_write_per_flush_interval(nursery: trio.Nursery) -> None:
    """N updates: each read back at once, by id and in the list, and at most ceil(elapsed/interval)+1 writes."""
    url = await start_master(nursery, db="")
    async with httpx.AsyncClient(base_url=url, timeout=5.0, auth=ActAsNode()) as http:
        job, node = await leased_job(http)
        writes_before = await counter(http, "ffrtmp_master_progress_writes")
        started = trio.current_time()
        for step in range(1, UPDATES + 1):
            sent = await http.post(f"/jobs/{job.id}/progress", json={"node_id": node.id, "progress": step, "fps": 30})
            assert sent.status_code == 200, sent.text
            assert await progress_of(http, job) == step
        listed = (await http.get("/jobs")).json()["jobs"]
        assert [(entry["progress"], entry["live"]["fps"]) for entry in listed] == [(UPDATES, 30)]
        elapsed = trio.current_time() - started
        writes = await counter(http, "ffrtmp_master_progress_writes") - writes_before
        assert await counter(http, "ffrtmp_master_progress_updates") == UPDATES
        assert writes <= math.ceil(elapsed / FLUSH_INTERVAL_S) + 1


async def test_progress_is_written_within_one_flush_interval(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A second master on the same database sees the progress once a flush wrote it."""
    db = str(tmp_path / "master.db")
    url = await start_master(nursery, db=db)
    other = await start_master(nursery, db=db)
    async with httpx.AsyncClient(base_url=url, timeout=5.0, auth=ActAsNode()) as http:
        job, node = await leased_job(http)
        await http.post(f"/jobs/{job.id}/progress", json={"node_id": node.id, "progress": 61})
        async with httpx.AsyncClient(base_url=other, timeout=5.0) as reader:
            while await progress_of(reader, job) != 61:  # the test's timeout bounds the wait
                await trio.sleep(0.1)
        assert await counter(http, "ffrtmp_master_progress_writes") == 1


async def test_progress_is_refused_unless_the_job_is_leased_to_the_node(nursery: trio.Nursery) -> None:
    """409 from a node the job is not leased to, 404 for an unknown job; the progress is unchanged."""
    url = await start_master(nursery, db="")
    async with httpx.AsyncClient(base_url=url, timeout=5.0, auth=ActAsNode()) as http:
        job, node = await leased_job(http)
        other = Node.from_json((await http.post("/nodes/register", json={"address": "worker-2:9091"})).json())
        await http.post(f"/jobs/{job.id}/progress", json={"node_id": node.id, "progress": 10})
        refused = await http.post(f"/jobs/{job.id}/progress", json={"node_id": other.id, "progress": 90})
        missing = await http.post("/jobs/no-such-job/progress", json={"node_id": node.id, "progress": 1})
        assert (refused.status_code, missing.status_code) == (409, 404)
        assert await progress_of(http, job) == 10
        assert await counter(http, "ffrtmp_master_progress_updates") == 1


async def test_progress_held_in_memory_is_written_when_the_master_stops(tmp_path: Path) -> None:
    """Stopping the master writes the progress it held; a master started on the database reads it."""
    db = str(tmp_path / "master.db")
    async with trio.open_nursery() as nursery:
        url = await start_master(nursery, db=db)
        async with httpx.AsyncClient(base_url=url, timeout=5.0, auth=ActAsNode()) as http:
            job, node = await leased_job(http)
            await http.post(f"/jobs/{job.id}/progress", json={"node_id": node.id, "progress": 33})
            assert await counter(http, "ffrtmp_master_progress_writes") == 0
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        url = await start_master(nursery, db=db)
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as reader:
            assert await progress_of(reader, job) == 33
        nursery.cancel_scope.cancel()
