"""Long-polls woken one per job (agent/master/doorbell.py), on a real master and socket.

Every long-poll used to wake for every new job, so each job cost a claim per
waiting long-poll: the master's ``claims{outcome="empty"}`` count shows it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from agent.models import Job, Node
from tests.integration.test_master_api import claim, register, start_master, submit
from tests.support import ActAsNode

pytestmark = pytest.mark.timeout(30)

WAITERS = 12


@pytest.fixture
async def http(nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    url = await start_master(nursery)
    async with httpx.AsyncClient(base_url=url, timeout=15.0, auth=ActAsNode()) as client:
        yield client


async def empty_claims(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    found = re.search(r'^ffrtmp_master_claims_total\{outcome="empty"\} (\S+)$', text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


class Polls:
    """Long-polls (wait=10) of some nodes; what each got."""

    def __init__(self, http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        self.http = http
        self.nursery = nursery
        self.got: list[tuple[Node, Job]] = []
        self.empty_claims = 0  # the master's count once all were waiting

    async def start(self, *nodes: Node) -> None:
        """Start one long-poll per node, one after another, and wait until each is waiting."""
        for node in nodes:
            before = await empty_claims(self.http)
            self.nursery.start_soon(self._poll, node)
            with trio.fail_after(5):
                while await empty_claims(self.http) == before:  # its first claim found nothing: it waits
                    await trio.sleep(0.01)

    async def _poll(self, node: Node) -> None:
        job = await claim(self.http, node, wait=10)
        if job is not None:
            self.got.append((node, job))

    async def until_got(self, count: int) -> None:
        with trio.fail_after(2):
            while len(self.got) < count:
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # any other woken long-poll has claimed by now

    async def assert_none_claimed_in_vain(self) -> None:
        assert await empty_claims(self.http) == self.empty_claims


@asynccontextmanager
async def waiting(http: httpx.AsyncClient, *nodes: Node) -> AsyncIterator[Polls]:
    """A long-poll of each node, all waiting when the block starts; stopped after it."""
    async with trio.open_nursery() as nursery:
        polls = Polls(http, nursery)
        await polls.start(*nodes)
        polls.empty_claims = await empty_claims(http)
        yield polls
        nursery.cancel_scope.cancel()


async def test_a_job_wakes_one_waiting_long_poll_not_every_one(http: httpx.AsyncClient) -> None:
    """One job: one claim, by the longest-waiting node; three jobs: three, and no claim finds nothing."""
    nodes = [await register(http, f"idle-{index}:1") for index in range(WAITERS)]
    async with waiting(http, *nodes) as polls:
        first = await submit(http)
        await polls.until_got(1)
        assert [(node.id, job.id) for node, job in polls.got] == [(nodes[0].id, first.id)]
        for _ in range(3):
            await submit(http)
        await polls.until_got(4)
        assert [node.id for node, _ in polls.got] == [node.id for node in nodes[:4]]
        await polls.assert_none_claimed_in_vain()


async def test_a_job_wakes_a_node_that_can_take_it_behind_those_that_cannot(http: httpx.AsyncClient) -> None:
    """An nvenc job passes over CPU nodes and a drained GPU node waiting longer, to the GPU node that takes it."""
    cpus = [await register(http, f"cpu-{index}:1") for index in range(4)]
    drained = await register(http, "gpu-drained:1", has_gpu=True, gpu_capabilities=["h264_nvenc"])
    assert (await http.post(f"/nodes/{drained.id}/drain")).status_code == 200
    gpu = await register(http, "gpu:1", has_gpu=True, gpu_capabilities=["h264_nvenc"])
    async with waiting(http, *cpus, drained, gpu) as polls:
        nvenc = await submit(http, parameters={"codec": "h264_nvenc"})
        await polls.until_got(1)
        assert [(node.id, job.id) for node, job in polls.got] == [(gpu.id, nvenc.id)]
        await polls.assert_none_claimed_in_vain()


async def test_jobs_handed_back_wake_as_many_long_polls(http: httpx.AsyncClient) -> None:
    """Deleting a node that holds two jobs puts them back: two waiting nodes get them."""
    holder = await register(http, "holder:1")
    for _ in range(2):
        await submit(http)
    assert await claim(http, holder) is not None and await claim(http, holder) is not None
    idle = [await register(http, f"idle-{index}:1") for index in range(4)]
    async with waiting(http, *idle) as polls:
        assert (await http.delete(f"/nodes/{holder.id}")).status_code == 200
        await polls.until_got(2)
        assert sorted(node.id for node, _ in polls.got) == sorted(node.id for node in idle[:2])
        await polls.assert_none_claimed_in_vain()


async def test_an_undrained_node_waiting_for_work_claims_at_once(http: httpx.AsyncClient) -> None:
    """The queue holds a job only a drained node could take; its undrain wakes its long-poll."""
    node = await register(http, "gpu:1", has_gpu=True, gpu_capabilities=["h264_nvenc"])
    assert (await http.post(f"/nodes/{node.id}/drain")).status_code == 200
    job = await submit(http, parameters={"codec": "h264_nvenc"})
    async with waiting(http, node) as polls:
        assert (await http.post(f"/nodes/{node.id}/undrain")).status_code == 200
        await polls.until_got(1)
        assert [(got.id, claimed.id) for got, claimed in polls.got] == [(node.id, job.id)]


async def test_draining_a_node_wakes_no_long_poll(http: httpx.AsyncClient) -> None:
    """Only an undrain may let a node take what it could not: a drain leaves the waiters asleep."""
    nodes = [await register(http, f"idle-{index}:1") for index in range(4)]
    async with waiting(http, *nodes) as polls:
        assert (await http.post(f"/nodes/{nodes[0].id}/drain")).status_code == 200
        await trio.sleep(0.3)
        await polls.assert_none_claimed_in_vain()


async def test_a_long_poll_no_job_woke_claims_only_once(http: httpx.AsyncClient) -> None:
    """Nothing queued: one empty claim as the long-poll starts; its deadline answers without a second claim.

    Each job that becomes pending wakes a waiter, so one that no ring woke has
    nothing to claim; the agent's next long-poll starts with a claim anyway.
    """
    node = await register(http, "idle:1")
    before = await empty_claims(http)
    assert await claim(http, node, wait=0.3) is None
    assert await empty_claims(http) == before + 1
