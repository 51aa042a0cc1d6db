"""What a claim reads and where the store runs it, on SQLite and PostgreSQL.

A claim decodes the head of the queue a few jobs at a time; these tests pin
that a node still passes over more jobs it cannot run than one page holds,
in dispatch order, and that SQLite's quick transactions and its own WAL
checkpoints leave a file another connection reads whole.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.master import scheduler
from agent.master.store import Store, open_store
from agent.master.store._sql import CLAIM_PAGE
from agent.master.store.sqlite import CHECKPOINT_EVERY_WRITES
from agent.models import JobRequest, JobResult, JobStatus, NodeRegistration
from tests.postgres import postgres_dsn, store_on_each_backend  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.timeout(60)

CPU_JOB = JobRequest(scenario="144p30-h264")
GPU_JOB = JobRequest(scenario="144p30-h264", parameters={"codec": "h264_nvenc"})


async def test_a_cpu_node_passes_over_more_gpu_jobs_than_a_page_holds(store: Store) -> None:
    """GPU jobs fill the first page and more; the CPU node takes the CPU jobs behind them, oldest first."""
    for _ in range(CLAIM_PAGE + 3):
        await store.submit(GPU_JOB, max_retries=3)
    first = await store.submit(CPU_JOB, max_retries=3)
    second = await store.submit(CPU_JOB, max_retries=3)
    node = (await store.register_node(NodeRegistration(address="cpu:1"))).node
    claimed = [await store.claim(node.id), await store.claim(node.id), await store.claim(node.id)]
    assert [job.id if job else None for job in claimed] == [first.id, second.id, None]


async def test_a_draining_node_claims_nothing_from_a_full_queue(store: Store) -> None:
    """A drained node gets no job, however many are pending."""
    for _ in range(3):
        await store.submit(CPU_JOB, max_retries=3)
    node = (await store.register_node(NodeRegistration(address="cpu:1"))).node
    await store.change_node(node.id, scheduler.drain)
    assert await store.claim(node.id) is None


async def test_sqlite_commits_are_whole_in_the_file_after_many_checkpoints(tmp_path: Path) -> None:
    """Claims and results past several of the store's own checkpoints are all read back by another connection."""
    path = tmp_path / "master.db"
    cycles = 2 * CHECKPOINT_EVERY_WRITES
    async with open_store(str(path)) as store:
        node = (await store.register_node(NodeRegistration(address="cpu:1"))).node
        for _ in range(cycles):
            await store.submit(CPU_JOB, max_retries=3)
        for _ in range(cycles):
            job = await store.claim(node.id)
            assert job is not None
            await store.record_result(JobResult(job_id=job.id, node_id=node.id, status=JobStatus.COMPLETED))
        other = sqlite3.connect(path)
        try:
            [(completed,)] = other.execute("SELECT COUNT(*) FROM jobs WHERE status = 'completed'").fetchall()
        finally:
            other.close()
    assert completed == cycles
