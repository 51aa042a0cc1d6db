"""The PostgreSQL store on a real server: the same rules as SQLite, safe for several masters.

The server is a throw-away cluster started for the session (``tests.postgres``);
each test gets a database of its own. Rule tests run on both stores, so the
two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import trio

from agent.master import scheduler
from agent.master.store import NotFound, PostgresStore, SqliteStore, Store, StoreError, open_store
from agent.master.store._sql import ATTEMPTS_KEPT, SqlStore
from agent.models import (
    MAX_ATTEMPT_ERROR_CHARS,
    HeartbeatReport,
    JobRequest,
    JobResult,
    JobStatus,
    NodeRegistration,
    Queue,
    utcnow,
)
from tests.postgres import fresh_database, postgres_dsn, store_on_each_backend  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.timeout(30)

JOBS = 200
CLAIMERS = 8
H264 = JobRequest(scenario="144p30-h264")


@pytest.fixture
def database(postgres_dsn: str) -> str:  # noqa: F811
    return fresh_database(postgres_dsn)


async def test_a_result_from_a_node_without_the_lease_changes_nothing(store: Store) -> None:
    """409 rule: the holder's result counts once; another node's is a conflict; a repeat is harmless."""
    await store.submit(H264, max_retries=3)
    holder = (await store.register_node(NodeRegistration(address="a:1"))).node
    other = (await store.register_node(NodeRegistration(address="b:1"))).node
    job = await store.claim(holder.id)
    assert job is not None
    done = JobResult(job_id=job.id, node_id=holder.id, status=JobStatus.COMPLETED)
    with pytest.raises(scheduler.Conflict):
        await store.record_result(JobResult(job_id=job.id, node_id=other.id, status=JobStatus.COMPLETED))
    assert (await store.record_result(done)).changed
    assert not (await store.record_result(done)).changed
    assert (await store.get_job(str(job.sequence_number))).status is JobStatus.COMPLETED


async def test_a_jobs_lease_reads_as_the_whole_job_says(store: Store) -> None:
    """The narrow read progress reports are checked with: by id or number, queued, leased, and a later lease."""
    queued = await store.submit(H264, max_retries=3)
    node = (await store.register_node(NodeRegistration(address="a:1"))).node

    assert await store.lease(queued.id) == scheduler.Lease.of(queued)
    assert (await store.lease(queued.id)).started_at is None
    leased = await store.claim(node.id)
    assert leased is not None and leased.started_at is not None
    assert await store.lease(str(leased.sequence_number)) == scheduler.Lease.of(await store.get_job(leased.id))
    (await store.lease(leased.id)).check_held_by(node.id)
    with pytest.raises(scheduler.Conflict, match=f"job {leased.id} is not leased to node other"):
        (await store.lease(leased.id)).check_held_by("other")
    await store.record_result(JobResult(job_id=leased.id, node_id=node.id, status=JobStatus.FAILED))
    again = await store.claim(node.id)  # retried: the same job, a new lease
    assert again is not None and again.id == leased.id
    assert await store.lease(leased.id) == scheduler.Lease.of(again) != scheduler.Lease.of(leased)
    with pytest.raises(NotFound):
        await store.lease("no-such-job")


async def test_a_gpu_job_first_in_line_does_not_hold_up_a_cpu_node(store: Store) -> None:
    """The CPU node gets the job behind the nvenc one; the GPU node then gets the nvenc job."""
    gpu_job = await store.submit(JobRequest(scenario="720p30-h264", parameters={"codec": "h264_nvenc"}), 3)
    cpu_job = await store.submit(H264, max_retries=3)
    cpu = (await store.register_node(NodeRegistration(address="cpu:1"))).node
    gpu = (await store.register_node(NodeRegistration(address="gpu:1", has_gpu=True))).node
    assert (await store.claim(cpu.id)).id == cpu_job.id  # type: ignore[union-attr]
    assert await store.claim(cpu.id) is None
    assert (await store.claim(gpu.id)).id == gpu_job.id  # type: ignore[union-attr]


async def test_overdue_jobs_are_expired_and_old_finished_ones_deleted(store: Store) -> None:
    """A job past its timeout is requeued with reason timeout; finished jobs go after the cutoff."""
    slow = await store.submit(JobRequest(scenario="144p30-h264", parameters={"resource_limits": {"timeout_sec": 1}}), 3)
    node = (await store.register_node(NodeRegistration(address="a:1"))).node
    assert await store.claim(node.id) is not None
    assert await store.expire_overdue_jobs(None, grace=60) == []
    await trio.sleep(1.1)
    [(before, after)] = await store.expire_overdue_jobs(None, grace=0)
    assert (before.node_id, after.status, after.failure_reason) == (node.id, JobStatus.PENDING, "timeout")
    await store.change_job(slow.id, lambda job: scheduler.cancel(job, utcnow()))
    kept = await store.submit(H264, max_retries=3)
    assert await store.delete_finished_before(utcnow() - dt.timedelta(days=1)) == 0
    assert await store.delete_finished_before(utcnow() + dt.timedelta(seconds=1)) == 1
    with pytest.raises(NotFound):
        await store.get_job(slow.id)
    assert [job.id for job in await store.list_jobs()] == [kept.id]


async def test_two_masters_on_one_database_lease_every_job_exactly_once(database: str) -> None:
    """Two stores (two pools, as two masters have) and 8 claimers split 200 jobs with no overlap."""
    async with open_store("", dsn=database) as first, open_store("", dsn=database) as second:
        for _ in range(JOBS):
            await first.submit(H264, max_retries=3)
        nodes = [(await first.register_node(NodeRegistration(address=f"w:{i}"))).node for i in range(CLAIMERS)]
        claims: list[str] = []

        async def claimer(store: Store, node_id: str) -> None:
            while (job := await store.claim(node_id)) is not None:
                claims.append(job.id)

        async with trio.open_nursery() as nursery:
            for index, node in enumerate(nodes):
                nursery.start_soon(claimer, (first, second)[index % 2], node.id)
        processing = await second.list_jobs(JobStatus.PROCESSING)
    assert len(claims) == JOBS == len(set(claims))
    assert len(processing) == JOBS


async def test_a_claim_passes_over_a_row_another_master_has_locked(database: str) -> None:
    """FOR UPDATE SKIP LOCKED: while job 1 is locked elsewhere the claim takes job 2 at once."""
    async with open_store("", dsn=database) as store:
        first = await store.submit(H264, max_retries=3)
        second = await store.submit(H264, max_retries=3)
        node = (await store.register_node(NodeRegistration(address="w:1"))).node
        with psycopg.connect(database) as other:
            other.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", [first.id])
            with trio.fail_after(2):
                got = await store.claim(node.id)
            other.rollback()
        assert got is not None and got.id == second.id
        assert (await store.claim(node.id)).id == first.id  # type: ignore[union-attr]


async def test_jobs_are_listed_in_pages_filtered_by_status_queue_and_node(store: Store) -> None:
    """Pages in submission order after a sequence number; the filters narrow them, on both databases."""
    jobs = [await store.submit(H264, max_retries=3) for _ in range(4)]
    batch = await store.submit(JobRequest(scenario="144p30-h264", queue=Queue.BATCH), max_retries=3)
    node = (await store.register_node(NodeRegistration(address="pager:1"))).node
    leased = await store.claim(node.id)
    assert leased is not None and leased.id == jobs[0].id

    async def ids(status: JobStatus | None = None, **query: Any) -> list[str]:
        return [job.id for job in await store.list_jobs(status, **query)]

    everything = [job.id for job in [*jobs, batch]]
    assert await ids(limit=2) == everything[:2]
    assert await ids(after=jobs[1].sequence_number, limit=2) == everything[2:4]
    assert await ids(after=batch.sequence_number) == []
    assert await ids(JobStatus.PROCESSING) == await ids(node=node.id) == await ids(node="pager:1") == [jobs[0].id]
    assert await ids(queue=Queue.BATCH) == [batch.id]
    assert await ids(JobStatus.PENDING, queue=Queue.DEFAULT, after=jobs[1].sequence_number) == everything[2:4]


@pytest.mark.parametrize("ref", ["9" * 5000, str(2**63), "\x00", "\u0663"])
async def test_a_ref_that_cannot_name_a_job_is_not_found(store: Store, ref: str) -> None:
    """Past 64 bits, a NUL (which PostgreSQL refuses in a query) or a non-ASCII digit: NotFound, not a crash."""
    await store.submit(H264, max_retries=3)
    with pytest.raises(NotFound):
        await store.get_job(ref)


async def test_a_job_queued_through_one_master_wakes_the_other(database: str) -> None:
    """NOTIFY/LISTEN with the count: a submit on the first wakes one long-poll waiting on the second, two wake two."""
    async with open_store("", dsn=database) as first, open_store("", dsn=database) as second:
        waiters = [second.doorbell.enter(None) for _ in range(4)]
        await first.submit(H264, max_retries=3)
        with trio.fail_after(5):
            await waiters[0].woken.wait()
        await first.submit(H264, max_retries=3)
        await first.submit(H264, max_retries=3)
        with trio.fail_after(5):
            await waiters[2].woken.wait()
        await trio.sleep(0.3)  # an extra wake would have come by now
        assert [waiter.woken.is_set() for waiter in waiters] == [True, True, True, False]


async def test_every_announcement_of_one_transaction_wakes_the_other_master(database: str) -> None:
    """Two silent nodes' jobs go back in one sweep, announced once each: two long-polls on the other master wake."""
    async with open_store("", dsn=database) as first, open_store("", dsn=database) as second:
        for address in ("a:1", "b:1"):
            node = (await first.register_node(NodeRegistration(address=address))).node
            await first.submit(H264, max_retries=3)
            assert await first.claim(node.id) is not None
        waiters = [second.doorbell.enter(None) for _ in range(3)]
        await trio.sleep(0.2)
        assert len(await first.mark_silent_nodes_offline(heartbeat_interval=0.01)) == 2
        with trio.fail_after(5):
            await waiters[1].woken.wait()
        await trio.sleep(0.3)  # an extra wake would have come by now
        assert [waiter.woken.is_set() for waiter in waiters] == [True, True, False]


async def test_an_unreachable_database_is_a_store_error_naming_it_without_the_password(tmp_path: Path) -> None:
    """The master logs this and exits 2 (run_master), the password stays out of it."""
    dsn = f"postgresql://user:hunter2@/nowhere?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError) as raised:
        await PostgresStore.open(dsn)
    assert "postgresql://user@/nowhere" in str(raised.value)
    assert "hunter2" not in str(raised.value)


async def test_sqlite_and_postgres_run_the_same_transactions() -> None:
    """Only the dialect differs: both stores are the one SqlStore class."""
    assert PostgresStore.__mro__[1] is SqliteStore.__mro__[1]


async def test_each_attempt_is_recorded_with_its_node_outcome_and_error(store: Store) -> None:
    """A failure, a lost lease, an unstarted hand-back and a success: four attempts, oldest first, by sequence number."""
    job = await store.submit(H264, max_retries=3)
    node = (await store.register_node(NodeRegistration(address="a:1"))).node

    async def run(result: dict[str, Any]) -> None:
        assert await store.claim(node.id) is not None
        await store.record_result(JobResult.from_json({"job_id": job.id, "node_id": node.id, **result}))

    await run({"status": "failed", "failure_reason": "runtime_error", "error": "boom " + "x" * 5000})
    assert await store.claim(node.id) is not None
    await store.heartbeat(node.id, HeartbeatReport(active_job_ids=[]), heartbeat_interval=0)
    await run({"status": "failed", "error": "not started: draining", "not_started": True})
    await run({"status": "completed"})
    attempts = await store.list_attempts(str(job.sequence_number))
    assert [(a.number, a.outcome, a.node_id, a.node_name) for a in attempts] == [
        (1, "failed", node.id, "a:1"), (2, "lost", node.id, "a:1"), (3, "handed back", node.id, "a:1"),
        (4, "completed", node.id, "a:1"),
    ]
    failed, lost, handed_back, completed = attempts
    assert failed.failure_reason == "runtime_error" and failed.error.startswith("boom xxx")
    assert len(failed.error) == MAX_ATTEMPT_ERROR_CHARS and failed.error.endswith("…")
    assert (lost.failure_reason, lost.error) == ("platform_error", "node a:1 no longer runs the job (not in its heartbeat)")
    assert handed_back.error == "not started: draining" and completed.error == ""
    assert all(a.started_at is not None and a.ended_at is not None and a.started_at <= a.ended_at for a in attempts)
    with pytest.raises(NotFound):
        await store.list_attempts("no-such-job")


async def test_a_cancel_and_a_timeout_end_attempts_and_deleting_the_job_deletes_them(store: Store) -> None:
    """The operator's cancel and the master's timeout are attempts too; both kinds of delete take them along."""
    node = (await store.register_node(NodeRegistration(address="a:1"))).node
    canceled = await store.submit(H264, max_retries=3)
    assert await store.claim(node.id) is not None
    await store.change_job(canceled.id, lambda job: scheduler.cancel(job, utcnow()))
    slow = await store.submit(JobRequest(scenario="144p30-h264", parameters={"resource_limits": {"timeout_sec": 1}}), 0)
    assert await store.claim(node.id) is not None
    await trio.sleep(1.1)
    await store.expire_overdue_jobs(None, grace=0)
    [cancel] = await store.list_attempts(canceled.id)
    [timeout] = await store.list_attempts(slow.id)
    assert (cancel.outcome, cancel.error) == ("canceled", "")
    assert (timeout.outcome, timeout.failure_reason) == ("failed", "timeout")
    assert "timed out on the master" in timeout.error
    await store.delete_job(canceled.id)
    assert await store.delete_finished_before(utcnow() + dt.timedelta(seconds=1)) == 1
    rows = await cast(SqlStore, store)._db.read(lambda tx: tx.rows("SELECT COUNT(*) FROM job_attempts"))
    assert rows == [(0,)]


async def test_a_job_keeps_only_its_last_attempts(store: Store) -> None:
    """Past ATTEMPTS_KEPT attempts the oldest go; numbers go on counting."""
    job = await store.submit(H264, max_retries=ATTEMPTS_KEPT + 5)
    node = (await store.register_node(NodeRegistration(address="a:1"))).node
    for number in range(1, ATTEMPTS_KEPT + 3):
        assert await store.claim(node.id) is not None
        await store.record_result(JobResult(job_id=job.id, node_id=node.id, status=JobStatus.FAILED, error=f"#{number}"))
    attempts = await store.list_attempts(job.id)
    assert [a.number for a in attempts] == list(range(3, ATTEMPTS_KEPT + 3))
    assert attempts[-1].error == f"#{ATTEMPTS_KEPT + 2}"
