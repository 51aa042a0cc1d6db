"""The master's store in SQLite: a WAL file, or memory for tests and the one-process mode.

Each job and node is kept as its JSON body plus the few columns queries need
(status, dispatch ranks, node). One connection does all the work, one call at
a time, in a worker thread: SQLite has a single writer anyway, and a claim is
well under a millisecond, so one connection is the simplest way to make each
transaction atomic. Write transactions still start with ``BEGIN IMMEDIATE`` so
that a second process opening the same file cannot interleave a claim.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
import trio

from ...models import (
    HeartbeatReply,
    HeartbeatReport,
    Job,
    JobRequest,
    JobResult,
    JobStatus,
    Node,
    NodeRegistration,
    utcnow,
)
from .. import scheduler
from ._base import NotFound, StoreCounts, StoreError

__all__ = ["SqliteStore"]

log = logging.getLogger("agent.master")

# Another process holding the write lock (a second master on the same file)
# makes us wait this long before SQLite reports "database is locked".
BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    sequence_number INTEGER NOT NULL UNIQUE,
    status TEXT NOT NULL,
    queue_rank INTEGER NOT NULL,
    priority_rank INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_in_claim_order
    ON jobs (status, queue_rank, priority_rank, sequence_number);
CREATE INDEX IF NOT EXISTS jobs_by_node ON jobs (node_id, status);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
"""

_T = TypeVar("_T")


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN ourselves, so a claim's SELECT and
    # UPDATE are one transaction and reads outside one see committed data.
    db = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False)
    try:
        if path:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.executescript(_SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


def _job_row(job: Job) -> dict[str, Any]:
    queue_rank, priority_rank, sequence_number = scheduler.claim_key(job)
    return {
        "id": job.id,
        "sequence_number": sequence_number,
        "status": job.status.value,
        "queue_rank": queue_rank,
        "priority_rank": priority_rank,
        "node_id": job.node_id,
        "body": json.dumps(job.to_json()),
    }


def _node_row(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "address": node.address,
        "status": node.status,
        "body": json.dumps(node.to_json()),
    }


def _jobs(rows: Iterable[tuple[str]]) -> Iterator[Job]:
    return (Job.from_json(json.loads(body)) for (body,) in rows)


def _nodes(rows: Iterable[tuple[str]]) -> Iterator[Node]:
    return (Node.from_json(json.loads(body)) for (body,) in rows)


class SqliteStore:
    """The :class:`~agent.master.store.Store` on one SQLite connection.

    Build it with :meth:`open`; close it with :meth:`aclose` or ``async with``.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        # One token: the connection is used by one thread at a time, which also
        # serialises our transactions.
        self._limiter = trio.CapacityLimiter(1)
        self._job_available = trio.Event()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        """Open (and create if needed) the database at ``path``; ``""`` keeps it in memory.

        Raises:
            StoreError: the file cannot be opened or is not a usable database.
        """
        try:
            db = await trio.to_thread.run_sync(_connect, path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {path!r}: {exc}") from exc
        log.debug("store opened: %s", path or "in memory")
        return cls(db)

    async def aclose(self) -> None:
        """Close the connection; shielded, so it also runs when the server is cancelled."""
        with trio.CancelScope(shield=True):
            await self._run(self._db.close)

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- plumbing ----------------------------------------------------------------

    async def _run(self, fn: Callable[[], _T]) -> _T:
        # Not abandoned on cancel: the thread finishes its transaction first, so
        # the connection is never left mid-transaction.
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _ring(self) -> None:
        self._job_available.set()
        self._job_available = trio.Event()

    @property
    def job_available(self) -> trio.Event:
        return self._job_available

    def _load_job(self, ref: str) -> Job:
        row = self._db.execute("SELECT body FROM jobs WHERE id = ?", (ref,)).fetchone()
        if row is None and ref.isdigit():
            row = self._db.execute(
                "SELECT body FROM jobs WHERE sequence_number = ?", (int(ref),)
            ).fetchone()
        if row is None:
            raise NotFound(f"job {ref} not found")
        return next(_jobs([row]))

    def _save_job(self, job: Job) -> None:
        self._db.execute(
            "UPDATE jobs SET status = :status, queue_rank = :queue_rank,"
            " priority_rank = :priority_rank, node_id = :node_id, body = :body WHERE id = :id",
            _job_row(job),
        )

    def _load_node(self, node_id: str) -> Node:
        row = self._db.execute("SELECT body FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise NotFound(f"node {node_id} not found; register it first")
        return next(_nodes([row]))

    def _save_node(self, node: Node) -> None:
        self._db.execute(
            "UPDATE nodes SET address = :address, status = :status, body = :body WHERE id = :id",
            _node_row(node),
        )

    def _leased_jobs(self, node_id: str) -> list[Job]:
        rows = self._db.execute(
            "SELECT body FROM jobs WHERE node_id = ? AND status = ? ORDER BY sequence_number",
            (node_id, JobStatus.PROCESSING.value),
        )
        return list(_jobs(rows))

    def _requeue_jobs_of(self, node: Node) -> int:
        leased = self._leased_jobs(node.id)
        for job in leased:
            self._save_job(scheduler.requeue_from_lost_node(job, node))
        return len(leased)

    # --- jobs ----------------------------------------------------------------------

    async def submit(self, request: JobRequest, max_retries: int) -> Job:
        now = utcnow()

        def insert() -> Job:
            with self._write() as db:
                (last,) = db.execute(
                    "SELECT COALESCE(MAX(sequence_number), 0) FROM jobs"
                ).fetchone()
                job = Job(
                    id=str(uuid.uuid4()),
                    sequence_number=last + 1,
                    created_at=now,
                    max_retries=max_retries,
                    **attrs.asdict(request, recurse=False),
                )
                db.execute(
                    "INSERT INTO jobs (id, sequence_number, status, queue_rank, priority_rank,"
                    " node_id, body) VALUES (:id, :sequence_number, :status, :queue_rank,"
                    " :priority_rank, :node_id, :body)",
                    _job_row(job),
                )
            return job

        job = await self._run(insert)
        self._ring()
        return job

    async def get_job(self, ref: str) -> Job:
        return await self._run(lambda: self._load_job(ref))

    async def list_jobs(self, status: JobStatus | None = None) -> list[Job]:
        def select() -> list[Job]:
            if status is None:
                rows = self._db.execute("SELECT body FROM jobs ORDER BY sequence_number")
            else:
                rows = self._db.execute(
                    "SELECT body FROM jobs WHERE status = ? ORDER BY sequence_number",
                    (status.value,),
                )
            return list(_jobs(rows))

        return await self._run(select)

    async def claim(self, node_id: str) -> Job | None:
        now = utcnow()

        def take() -> Job | None:
            with self._write() as db:
                node = self._load_node(node_id)
                # Polling proves the node is alive, so a claim keeps it from going offline.
                self._save_node(scheduler.mark_seen(node, now))
                rows = db.execute(
                    "SELECT body FROM jobs WHERE status = ?"
                    " ORDER BY queue_rank, priority_rank, sequence_number",
                    (JobStatus.PENDING.value,),
                )
                chosen = scheduler.choose_job(_jobs(rows), node)
                rows.close()
                if chosen is None:
                    return None
                job = scheduler.claim(chosen, node, now)
                self._save_job(job)
            return job

        return await self._run(take)

    async def record_result(self, result: JobResult) -> scheduler.ResultOutcome:
        now = utcnow()

        def apply() -> scheduler.ResultOutcome:
            with self._write():
                outcome = scheduler.decide_result(self._load_job(result.job_id), result, now)
                if outcome.changed:
                    self._save_job(outcome.job)
            return outcome

        outcome = await self._run(apply)
        if outcome.job.status is JobStatus.PENDING:
            self._ring()
        return outcome

    async def change_job(self, ref: str, change: Callable[[Job], Job]) -> Job:
        def apply() -> Job:
            with self._write():
                job = change(self._load_job(ref))
                self._save_job(job)
            return job

        job = await self._run(apply)
        if job.status is JobStatus.PENDING:
            self._ring()
        return job

    # --- nodes ---------------------------------------------------------------------

    async def register_node(self, registration: NodeRegistration) -> tuple[Node, bool]:
        now = utcnow()

        def upsert() -> tuple[Node, bool]:
            with self._write() as db:
                row = db.execute(
                    "SELECT body FROM nodes WHERE address = ?", (registration.address,)
                ).fetchone()
                existing = next(_nodes([row])) if row else None
                node = scheduler.merge_registration(existing, registration, str(uuid.uuid4()), now)
                if existing is None:
                    db.execute(
                        "INSERT INTO nodes (id, address, status, body)"
                        " VALUES (:id, :address, :status, :body)",
                        _node_row(node),
                    )
                else:
                    self._save_node(node)
            return node, existing is None

        return await self._run(upsert)

    async def heartbeat(self, node_id: str, report: HeartbeatReport | None) -> HeartbeatReply:
        now = utcnow()

        def beat() -> HeartbeatReply:
            with self._write() as db:
                node = self._load_node(node_id)
                leased = [job.id for job in self._leased_jobs(node_id)]
                reported = report.active_job_ids if report is not None else []
                marks = ",".join("?" * len(reported))
                rows = db.execute(f"SELECT body FROM jobs WHERE id IN ({marks})", reported)
                known = {job.id: job for job in _jobs(rows)}
                self._save_node(scheduler.apply_heartbeat(node, report, leased, now))
            return HeartbeatReply(cancel_job_ids=scheduler.jobs_to_cancel(node_id, reported, known))

        return await self._run(beat)

    async def list_nodes(self) -> list[Node]:
        return await self._run(
            lambda: list(_nodes(self._db.execute("SELECT body FROM nodes ORDER BY address")))
        )

    async def delete_node(self, node_id: str) -> None:
        def delete() -> int:
            with self._write() as db:
                requeued = self._requeue_jobs_of(self._load_node(node_id))
                db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
            return requeued

        if await self._run(delete):
            self._ring()

    async def mark_silent_nodes_offline(self, heartbeat_interval: float) -> list[Node]:
        now = utcnow()

        def sweep() -> tuple[list[Node], int]:
            with self._write() as db:
                rows = db.execute("SELECT body FROM nodes WHERE status != 'offline'")
                silent = [
                    n for n in _nodes(rows) if scheduler.is_silent(n, now, heartbeat_interval)
                ]
                requeued = 0
                for node in silent:
                    self._save_node(scheduler.mark_offline(node))
                    requeued += self._requeue_jobs_of(node)
            return silent, requeued

        silent, requeued = await self._run(sweep)
        if requeued:
            self._ring()
        return silent

    async def counts(self) -> StoreCounts:
        def count() -> StoreCounts:
            jobs = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            nodes = self._db.execute("SELECT status, COUNT(*) FROM nodes GROUP BY status")
            return StoreCounts(jobs=dict(jobs.fetchall()), nodes=dict(nodes.fetchall()))

        return await self._run(count)
