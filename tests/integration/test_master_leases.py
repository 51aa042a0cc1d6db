"""One job, one node: leases under many concurrent pollers.

Network rules: the server binds 127.0.0.1 port 0 and is cancelled at the end
of each test; every test has a timeout.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from agent.config import MasterConfig
from agent.master.server import serve_master
from agent.master.store import SqliteStore
from agent.models import JobRequest, JobStatus, NodeRegistration
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(20)

JOBS = 100
CLAIMERS = 8


async def start_master(nursery: trio.Nursery) -> str:
    url: str = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    return url


async def register(http: httpx.AsyncClient, address: str) -> str:
    response = await http.post("/nodes/register", json={"address": address})
    node_id: str = response.json()["id"]
    return node_id


async def test_concurrent_pollers_claim_every_job_exactly_once(nursery: trio.Nursery) -> None:
    """8 nodes poll 100 jobs at once: 100 claims, no job twice, each held by its claimer."""
    url = await start_master(nursery)
    claims: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=10, auth=ActAsNode()) as http:
        for _ in range(JOBS):
            await http.post("/jobs", json={"scenario": "720p30-h264"})
        nodes = [await register(http, f"worker-{i}:9091") for i in range(CLAIMERS)]

        async def poller(node_id: str) -> None:
            while True:
                body = (await http.get("/jobs/next", params={"node_id": node_id})).json()
                if body["job"] is None:
                    return
                claims.append((body["job"]["id"], node_id))
                await trio.sleep(0)

        async with trio.open_nursery() as pollers:
            for node_id in nodes:
                pollers.start_soon(poller, node_id)

        jobs = (await http.get("/jobs")).json()["jobs"]
    per_job = Counter(job_id for job_id, _ in claims)
    assert len(claims) == JOBS
    assert set(per_job.values()) == {1}
    holders = dict(claims)
    assert all(
        job["status"] == "processing" and job["node_id"] == holders[job["id"]] for job in jobs
    )
    # Every poller got some: claims interleave rather than run one node dry.
    assert len({node_id for _, node_id in claims}) > 1


async def test_long_pollers_woken_by_submits_claim_each_job_once(nursery: trio.Nursery) -> None:
    """8 nodes long-poll while 100 jobs arrive in bursts: every job leased once, none left."""
    url = await start_master(nursery)
    claims: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=10, auth=ActAsNode()) as http:
        nodes = [await register(http, f"worker-{i}:9091") for i in range(CLAIMERS)]

        async def poller(node_id: str) -> None:
            while len(claims) < JOBS:
                params: dict[str, str | float] = {"node_id": node_id, "wait": 0.5}
                body = (await http.get("/jobs/next", params=params)).json()
                if body["job"] is not None:
                    claims.append(body["job"]["id"])

        async def submitter() -> None:
            for burst in range(10):
                async with trio.open_nursery() as posts:
                    for _ in range(JOBS // 10):
                        posts.start_soon(partial(http.post, "/jobs", json={"scenario": "144p30-h264"}))
                await trio.sleep(0.02 * burst)

        with trio.fail_after(15):
            async with trio.open_nursery() as everyone:
                for node_id in nodes:
                    everyone.start_soon(poller, node_id)
                everyone.start_soon(submitter)

        pending = (await http.get("/jobs", params={"status": "pending"})).json()["count"]
    assert len(claims) == JOBS == len(set(claims))
    assert pending == 0


async def test_two_stores_on_one_database_file_never_lease_a_job_twice(tmp_path: Path) -> None:
    """Two masters sharing a WAL file (two connections, real threads) split the jobs exactly."""
    path = str(tmp_path / "shared.db")
    async with await SqliteStore.open(path) as first, await SqliteStore.open(path) as second:
        for _ in range(JOBS):
            await first.submit(JobRequest(scenario="720p30-h264"), max_retries=3)
        node = (await first.register_node(NodeRegistration(address="worker:1"))).node
        claims: list[str] = []

        async def claimer(store: SqliteStore) -> None:
            while (job := await store.claim(node.id)) is not None:
                claims.append(job.id)

        async with trio.open_nursery() as nursery:
            for index in range(CLAIMERS):
                nursery.start_soon(claimer, (first, second)[index % 2])
        processing = await second.list_jobs(JobStatus.PROCESSING)
    assert len(claims) == JOBS == len(set(claims))
    assert len(processing) == JOBS
