"""The master's store on any SQL database: the transactions, written once.

:class:`SqlStore` implements :class:`~agent.master.store.Store` over a
:class:`Database`, which runs one function as one transaction in a worker
thread and says how its SQL differs (:class:`Dialect`). SQLite and PostgreSQL
differ only there; what a claim, a result or a silent node does to a job is
decided by :mod:`agent.master.scheduler`.

Each job and node is kept as its JSON body plus the few columns queries need
(status, dispatch ranks, node, finish time). SQL is written with ``?``
placeholders; a database that wants another style translates them.

Rows a transaction will change are read with :attr:`Dialect.lock` (``FOR
UPDATE``), so two masters on one database never both apply a rule to the same
row; locks are always taken node first, then jobs, so they cannot deadlock.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import attrs

from ...models import (
    HeartbeatReply,
    HeartbeatReport,
    Job,
    JobAttempt,
    JobRequest,
    JobResult,
    JobStatus,
    Node,
    NodeRegistration,
    Queue,
    parse_time,
    utcnow,
)
from ...scenarios import ARTIFACT_PREFIX
from .. import scheduler
from ..artifacts import is_sha256
from ..doorbell import Doorbell
from ..tokens import token_matches
from ._base import NotFound, Registered, StoreCounts

if TYPE_CHECKING:
    from ..progress import LeasedProgress

__all__ = ["Database", "Dialect", "SqlStore", "Transaction"]

_T = TypeVar("_T")

# Candidates read per step of a claim: enough that a few GPU jobs at the head
# of the queue cost one query, few enough to stay cheap with thousands queued.
CLAIM_PAGE = 64
# Candidates decoded at a time from that page where another master may hold some
# (PostgreSQL's SKIP LOCKED); the first is nearly always the one, so on SQLite one at a time.
CLAIM_CHUNK = 4
# Attempts kept per job: enough to read a job that keeps failing, few enough that
# one bounced for ever does not grow the database.
ATTEMPTS_KEPT = 50

_JOB_COLUMNS = "id, sequence_number, status, queue_rank, priority_rank, node_id, finished_at, body"
_FINAL = tuple(status.value for status in JobStatus if status.is_final)
# The largest sequence number a BIGINT column (and a Go client's int64) holds.
MAX_SEQUENCE_NUMBER = 2**63 - 1


class Transaction(Protocol):
    """One open transaction, used from the worker thread that runs it."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query and return every row."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return the number of rows it changed."""


@attrs.frozen
class Dialect:
    """Where one database's SQL differs from the common statements."""

    # Appended to reads of rows the transaction will change.
    lock: str
    # Appended to the claim's read: rows another transaction holds are passed over.
    skip_locked: str
    # A query returning the next job sequence number.
    next_sequence: str
    # Run in a transaction that made jobs pending, with their count, to wake other masters ("" for none).
    announce: str
    # An expression reading the text of the top-level field ``{}`` of a row's JSON ``body`` (NULL if null).
    body_field: str


class Database(Protocol):
    """Runs functions as transactions, one at a time per connection; the seam between SQL and drivers.

    ``quick`` marks the transactions of the request path that touch a few
    rows by key (a claim, a result, a token): a database whose calls are
    local and short (SQLite) may run them in the Trio thread, which costs
    less than a hop to a worker thread and back; the others, and every call
    that crosses a network, run in worker threads so the event loop never
    waits on them.

    Raises from either method: :class:`~agent.master.store.StoreError` when
    the database cannot be reached or fails.
    """

    dialect: Dialect

    async def write(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
        """Run ``work`` as one transaction that may change rows; commit, or roll back on error."""

    async def read(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
        """Run ``work`` as one transaction that only reads."""

    async def aclose(self) -> None: ...


def schema(*, big_integer: str, real: str) -> str:
    """The tables and indexes, in each database's names for two column types.

    A job is kept whole as JSON in ``body``; the columns beside it are what
    claims, per-node reads and clean-up select and order by.
    """
    return f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    sequence_number {big_integer} NOT NULL UNIQUE,
    status TEXT NOT NULL,
    queue_rank INTEGER NOT NULL,
    priority_rank INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    finished_at {real},
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_in_claim_order
    ON jobs (status, queue_rank, priority_rank, sequence_number);
CREATE INDEX IF NOT EXISTS jobs_by_node ON jobs (node_id, status);
CREATE INDEX IF NOT EXISTS jobs_by_finish ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_tokens (
    node_id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS node_tokens_by_hash ON node_tokens (token_hash);
CREATE TABLE IF NOT EXISTS job_artifacts (
    job_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, sha256)
);
CREATE INDEX IF NOT EXISTS job_artifacts_by_sha256 ON job_artifacts (sha256);
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job_id, number)
);
"""


def artifact_refs(job: Job) -> set[str]:
    """The artefacts a job names: its ``artifact:`` input, and the outputs its result delivered."""
    refs = set()
    source = job.parameters.get("input")
    if isinstance(source, str) and source.startswith(ARTIFACT_PREFIX):
        refs.add(source.removeprefix(ARTIFACT_PREFIX))
    for output in [job.metrics, *(job.metrics.get("outputs") or [])]:
        digest = output.get("output_sha256", output.get("sha256")) if isinstance(output, dict) else None
        if isinstance(digest, str):
            refs.add(digest)
    return {ref for ref in refs if is_sha256(ref)}


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


def _job_params(job: Job) -> list[Any]:
    queue_rank, priority_rank, sequence_number = scheduler.claim_key(job)
    finished = job.completed_at.timestamp() if job.status.is_final and job.completed_at else None
    body = json.dumps(job.to_json())
    return [job.id, sequence_number, job.status.value, queue_rank, priority_rank, job.node_id, finished, body]


def _node_params(node: Node) -> list[Any]:
    return [node.id, node.address, node.status, json.dumps(node.to_json())]


def _sequence_number(ref: str) -> int | None:
    """``ref`` as a sequence number, or None when it cannot be one (not ASCII digits, past 64 bits)."""
    if not (ref.isascii() and ref.isdigit() and len(ref) <= 19):
        return None
    number = int(ref)
    return number if number <= MAX_SEQUENCE_NUMBER else None


def _jobs(rows: Iterable[tuple[Any, ...]]) -> Iterator[Job]:
    return (Job.from_json(json.loads(row[-1])) for row in rows)


def _nodes(rows: Iterable[tuple[Any, ...]]) -> Iterator[Node]:
    return (Node.from_json(json.loads(row[-1])) for row in rows)


class SqlStore:
    """The :class:`~agent.master.store.Store` on one :class:`Database`.

    Close it with :meth:`aclose` or ``async with``; that closes the database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._sql = db.dialect
        self._doorbell = Doorbell()

    async def aclose(self) -> None:
        await self._db.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- waking long-polls -------------------------------------------------------------

    @property
    def doorbell(self) -> Doorbell:
        return self._doorbell

    def _ring(self, jobs: Iterable[Job]) -> None:
        """Wake a long-poll for each of ``jobs`` that is pending now (:mod:`agent.master.doorbell`)."""
        self._doorbell.ring(job for job in jobs if job.status is JobStatus.PENDING)

    def _announce(self, tx: Transaction, pending: int) -> None:
        """Tell other masters (on PostgreSQL) that this transaction made ``pending`` jobs pending.

        Each payload is unique: PostgreSQL delivers equal ones of one transaction once.
        """
        if self._sql.announce:
            tx.run(self._sql.announce, [f"{pending} {uuid.uuid4().hex}"])

    # --- rows --------------------------------------------------------------------------

    def _load_job(self, tx: Transaction, ref: str, *, lock: bool = True) -> Job:
        """The job by id, or by sequence number when ``ref`` is all digits; locked unless reading."""
        return next(_jobs([self._job_row(tx, "body", ref, lock=lock)]))

    def _job_row(self, tx: Transaction, columns: str, ref: str, *, lock: bool) -> tuple[Any, ...]:
        """``columns`` of the job ``ref`` names (see :meth:`_load_job`)."""
        locking = self._sql.lock if lock else ""
        # A NUL is no job's id, and PostgreSQL refuses it in a query.
        rows = tx.rows(f"SELECT {columns} FROM jobs WHERE id = ?{locking}", [ref]) if "\x00" not in ref else []
        if not rows and (number := _sequence_number(ref)) is not None:
            rows = tx.rows(f"SELECT {columns} FROM jobs WHERE sequence_number = ?{locking}", [number])
        if not rows:
            raise NotFound(f"job {ref} not found")
        return rows[0]

    def _insert_job(self, tx: Transaction, job: Job) -> None:
        tx.run(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({_placeholders(8)})", _job_params(job))

    def _save_job(self, tx: Transaction, job: Job) -> None:
        job_id, *values = _job_params(job)
        tx.run(
            "UPDATE jobs SET sequence_number = ?, status = ?, queue_rank = ?, priority_rank = ?,"
            " node_id = ?, finished_at = ?, body = ? WHERE id = ?",
            [*values, job_id],
        )

    def _load_node(self, tx: Transaction, node_id: str, *, lock: bool = True) -> Node:
        """The node by id, for the calls an agent makes as its node; locked unless only reading."""
        node = self._node_or_none(tx, node_id, lock=lock)
        if node is None:
            raise NotFound(f"node {node_id} not found; register it first")
        return node

    def _node_or_none(self, tx: Transaction, node_id: str, *, lock: bool = True) -> Node | None:
        locking = self._sql.lock if lock else ""
        # A NUL is no node's id, and PostgreSQL refuses it in a query.
        rows = tx.rows(f"SELECT body FROM nodes WHERE id = ?{locking}", [node_id]) if "\x00" not in node_id else []
        return next(_nodes(rows), None)

    def _find_node(self, tx: Transaction, ref: str, *, lock: bool = True) -> Node:
        """The node by id or by name (its address, as ``nodes list`` shows it), for operators."""
        node = self._node_or_none(tx, ref, lock=lock)
        if node is None and "\x00" not in ref:
            rows = tx.rows(f"SELECT body FROM nodes WHERE address = ?{self._sql.lock if lock else ''}", [ref])
            node = next(_nodes(rows), None)
        if node is None:
            raise NotFound(f"node {ref} not found: give a node id or name as 'ffrtmp nodes list' shows them")
        return node

    def _lock_job_and_holder(self, tx: Transaction, ref: str) -> tuple[Job, Node | None]:
        """The job and the node it is leased to, both locked, node first (see the module notes)."""
        seen = self._load_job(tx, ref, lock=False)
        holder = self._node_or_none(tx, seen.node_id) if seen.node_id else None
        job = self._load_job(tx, seen.id)
        if holder is not None and job.node_id != holder.id:
            holder = None  # leased elsewhere in between; that node's heartbeat puts its row right
        return job, holder

    def _release(self, tx: Transaction, holder: Node | None, before: Job, after: Job) -> None:
        """Take a job off its node's row once the node no longer holds it, so the row is true at once."""
        if holder is None or before.status is not JobStatus.PROCESSING:
            return
        if after.status is JobStatus.PROCESSING and after.node_id == holder.id:
            return
        released = scheduler.without_job(holder, before.id)
        if released != holder:
            self._save_node(tx, released)

    def _save_node(self, tx: Transaction, node: Node) -> None:
        node_id, *values = _node_params(node)
        tx.run("UPDATE nodes SET address = ?, status = ?, body = ? WHERE id = ?", [*values, node_id])

    def _leased_jobs(self, tx: Transaction, node_id: str, *, lock: bool = False) -> list[Job]:
        rows = tx.rows(
            "SELECT body FROM jobs WHERE node_id = ? AND status = ? ORDER BY sequence_number"
            + (self._sql.lock if lock else ""),
            [node_id, JobStatus.PROCESSING.value],
        )
        return list(_jobs(rows))

    def _hand_back(self, tx: Transaction, node: Node, jobs: Sequence[Job], why: str, now: dt.datetime) -> list[Job]:
        """Put jobs the node no longer runs back in the queue (see ``scheduler.hand_back_lost``)."""
        returned = [scheduler.hand_back_lost(job, node, why, now) for job in jobs]
        for before, job in zip(jobs, returned):
            self._save_job(tx, job)
            self._record_attempt(
                tx, before, job, JobAttempt.LOST, now, failure_reason=job.failure_reason, error=job.error
            )
        if pending := sum(job.status is JobStatus.PENDING for job in returned):
            self._announce(tx, pending)
        return returned

    def _refer(self, tx: Transaction, job: Job, package_files: Sequence[str] = ()) -> None:
        """Record the artefacts the job names (and the files of its package), so they are kept while it is."""
        for sha256 in sorted(artifact_refs(job) | {ref for ref in package_files if is_sha256(ref)}):
            tx.run("INSERT INTO job_artifacts (job_id, sha256) VALUES (?, ?) ON CONFLICT DO NOTHING", [job.id, sha256])

    def _forget_refs(self, tx: Transaction, job_ids: Sequence[str]) -> list[str]:
        """Drop the jobs' artefact references; the artefacts no other job names, to delete."""
        named: set[str] = set()
        for job_id in job_ids:
            named |= {str(row[0]) for row in tx.rows("SELECT sha256 FROM job_artifacts WHERE job_id = ?", [job_id])}
            tx.run("DELETE FROM job_artifacts WHERE job_id = ?", [job_id])
        return sorted(sha256 for sha256 in named if not tx.rows(
            "SELECT 1 FROM job_artifacts WHERE sha256 = ? LIMIT 1", [sha256]
        ))

    def _record_attempt(
        self, tx: Transaction, before: Job, after: Job, outcome: str, now: dt.datetime, *,
        failure_reason: str = "", error: str = "",
    ) -> None:
        """Add the attempt that ended when ``before`` became ``after`` (if one did: ``scheduler.lease_ended``)
        to the job's history, in the transaction that ended it; the last :data:`ATTEMPTS_KEPT` are kept.

        The job's row is locked, so no other transaction numbers an attempt of it meanwhile.
        """
        if not scheduler.lease_ended(before, after):
            return
        [(last,)] = tx.rows("SELECT MAX(number) FROM job_attempts WHERE job_id = ?", [before.id])
        attempt = JobAttempt.ended(
            before, int(last or 0) + 1, now, outcome, failure_reason=failure_reason, error=error
        )
        tx.run(
            "INSERT INTO job_attempts (job_id, number, body) VALUES (?, ?, ?)",
            [before.id, attempt.number, json.dumps(attempt.to_json())],
        )
        if attempt.number > ATTEMPTS_KEPT:
            tx.run(
                "DELETE FROM job_attempts WHERE job_id = ? AND number <= ?",
                [before.id, attempt.number - ATTEMPTS_KEPT],
            )

    def _forget_attempts(self, tx: Transaction, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            tx.run("DELETE FROM job_attempts WHERE job_id = ?", [job_id])

    def _token_hash(self, tx: Transaction, node_id: str) -> str:
        rows = tx.rows("SELECT token_hash FROM node_tokens WHERE node_id = ?", [node_id])
        return str(rows[0][0]) if rows else ""

    # --- jobs --------------------------------------------------------------------------

    async def submit(self, request: JobRequest, max_retries: int) -> Job:
        now = utcnow()

        def insert(tx: Transaction) -> Job:
            ((sequence_number,),) = tx.rows(self._sql.next_sequence)
            job = Job(
                id=str(uuid.uuid4()),
                sequence_number=sequence_number,
                created_at=now,
                max_retries=max_retries,
                **attrs.asdict(request, recurse=False),
            )
            self._insert_job(tx, job)
            self._refer(tx, job)
            self._announce(tx, 1)
            return job

        job = await self._db.write(insert, quick=True)
        self._ring([job])
        return job

    async def get_job(self, ref: str) -> Job:
        return await self._db.read(lambda tx: self._load_job(tx, ref, lock=False), quick=True)

    async def lease(self, ref: str) -> scheduler.Lease:
        # The columns and one field of the body, read by the database: a progress report
        # (one per running job per second) then costs no decoding of the whole job.
        columns = f"id, sequence_number, status, node_id, {self._sql.body_field.format('started_at')}"

        def read(tx: Transaction) -> scheduler.Lease:
            job_id, number, status, node_id, started_at = self._job_row(tx, columns, ref, lock=False)
            return scheduler.Lease(
                job_id, int(number), JobStatus(status), node_id, parse_time(started_at) if started_at else None
            )

        return await self._db.read(read, quick=True)

    async def list_attempts(self, ref: str) -> list[JobAttempt]:
        def select(tx: Transaction) -> list[JobAttempt]:
            job = self._load_job(tx, ref, lock=False)
            rows = tx.rows("SELECT body FROM job_attempts WHERE job_id = ? ORDER BY number", [job.id])
            return [JobAttempt.from_json(json.loads(row[0])) for row in rows]

        return await self._db.read(select)

    async def list_jobs(
        self,
        status: JobStatus | None = None,
        *,
        node: str = "",
        queue: Queue | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Job]:
        def select(tx: Transaction) -> list[Job]:
            conditions = ["sequence_number > ?"]
            params: list[Any] = [after]
            if status is not None:
                conditions.append("status = ?")
                params.append(status.value)
            if queue is not None:
                conditions.append("queue_rank = ?")
                params.append(queue.rank)
            if node:
                conditions.append("(node_id = ? OR node_id IN (SELECT id FROM nodes WHERE address = ?))")
                params += [node, node]
            sql = f"SELECT body FROM jobs WHERE {' AND '.join(conditions)} ORDER BY sequence_number"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            return list(_jobs(tx.rows(sql, params)))

        return await self._db.read(select)

    def _pending_pages(self, tx: Transaction, first: int) -> Iterator[list[tuple[Any, ...]]]:
        """Pending jobs' rows in claim order, ``first`` then a page at a time; read without locks, not decoded."""
        after: Sequence[Any] = (-1, -1, -1)
        limit = first
        while True:
            rows = tx.rows(
                "SELECT queue_rank, priority_rank, sequence_number, body FROM jobs WHERE status = ?"
                " AND (queue_rank, priority_rank, sequence_number) > (?, ?, ?)"
                " ORDER BY queue_rank, priority_rank, sequence_number LIMIT ?",
                [JobStatus.PENDING.value, *after, limit],
            )
            if not rows:
                return
            yield rows
            after, limit = rows[-1][:3], CLAIM_PAGE

    def _claimable(self, tx: Transaction, node: Node) -> Iterator[list[Job]]:
        """The pending jobs ``node`` can run, a few at a time in claim order.

        Decoding a job costs more than reading it, and the head of the queue
        is nearly always runnable, so a claim reads and decodes a chunk first
        (:data:`CLAIM_CHUNK`, one on SQLite), and pages only when the head is
        not for this node.
        """
        if not scheduler.takes_new_jobs(node):
            return
        chunk = CLAIM_CHUNK if self._sql.skip_locked else 1
        for page in self._pending_pages(tx, chunk):
            for start in range(0, len(page), chunk):
                if candidates := scheduler.runnable(_jobs(page[start : start + chunk]), node):
                    yield candidates

    def _lock_first_pending(self, tx: Transaction, jobs: list[Job]) -> Job | None:
        """The first of ``jobs`` still pending and not being claimed by another master.

        Without row locks (SQLite) the transaction holds the database's only
        write lock since it began, so the rows it read are current: the first is it.
        """
        if not self._sql.skip_locked:
            return jobs[0]
        rows = tx.rows(
            f"SELECT body FROM jobs WHERE id IN ({_placeholders(len(jobs))}) AND status = ?"
            " ORDER BY queue_rank, priority_rank, sequence_number LIMIT 1" + self._sql.skip_locked,
            [*(job.id for job in jobs), JobStatus.PENDING.value],
        )
        return next(_jobs(rows), None)

    async def claim(self, node_id: str) -> Job | None:
        now = utcnow()

        def take(tx: Transaction) -> Job | None:
            # Locking the node first makes claims of one node take turns across masters.
            # Polling proves the node is alive, so a claim keeps it from going offline.
            node = scheduler.mark_seen(self._load_node(tx, node_id), now)
            for candidates in self._claimable(tx, node):
                chosen = self._lock_first_pending(tx, candidates)
                if chosen is not None:
                    job = scheduler.claim(chosen, node, now)
                    self._save_job(tx, job)
                    self._save_node(tx, scheduler.with_job(node, job.id))
                    return job
            self._save_node(tx, node)
            return None

        return await self._db.write(take, quick=True)

    async def record_result(self, result: JobResult, package_files: Sequence[str] = ()) -> scheduler.ResultOutcome:
        now = utcnow()

        def apply(tx: Transaction) -> scheduler.ResultOutcome:
            holder = self._node_or_none(tx, result.node_id)  # node first, then the job
            job = self._load_job(tx, result.job_id)
            outcome = scheduler.decide_result(job, result, now)
            if outcome.changed:
                self._save_job(tx, outcome.job)
                self._refer(tx, outcome.job, package_files)
                self._record_attempt(
                    tx, job, outcome.job, scheduler.result_outcome(result), now,
                    failure_reason=result.failure_reason, error=result.error,
                )
                if outcome.job.status is JobStatus.PENDING:
                    self._announce(tx, 1)
            self._release(tx, holder if job.node_id == result.node_id else None, job, outcome.job)
            return outcome

        outcome = await self._db.write(apply, quick=True)
        self._ring([outcome.job])
        return outcome

    async def change_job(self, ref: str, change: Callable[[Job], Job]) -> tuple[Job, Job]:
        def apply(tx: Transaction) -> tuple[Job, Job]:
            before, holder = self._lock_job_and_holder(tx, ref)
            after = change(before)
            self._save_job(tx, after)
            # The operator's cancel or pause ends a running attempt; the job's error is an earlier one's.
            self._record_attempt(tx, before, after, after.status.value, utcnow())
            self._release(tx, holder, before, after)
            if after.status is JobStatus.PENDING:
                self._announce(tx, 1)
            return before, after

        before, after = await self._db.write(apply, quick=True)
        self._ring([after])
        return before, after

    async def save_progress(self, updates: Sequence[LeasedProgress]) -> int:
        by_id = {update.job_id: update for update in updates}

        def apply(tx: Transaction) -> int:
            # Locked in one statement in sequence order, the order a node's hand-back locks them in.
            rows = tx.rows(
                f"SELECT body FROM jobs WHERE id IN ({_placeholders(len(by_id))})"
                f" ORDER BY sequence_number{self._sql.lock}",
                list(by_id),
            )
            changed = 0
            for job in _jobs(rows):
                after = by_id[job.id].applied(job)
                if after != job:
                    self._save_job(tx, after)
                    changed += 1
            return changed

        return await self._db.write(apply) if by_id else 0

    async def expire_overdue_jobs(
        self, default_timeout: float | None, grace: float
    ) -> list[tuple[Job, Job]]:
        now = utcnow()

        def sweep(tx: Transaction) -> list[tuple[Job, Job]]:
            running = tx.rows("SELECT body FROM jobs WHERE status = ?", [JobStatus.PROCESSING.value])
            expired = []
            for seen in _jobs(running):
                if not scheduler.is_overdue(seen, now, default_timeout, grace):
                    continue
                job, holder = self._lock_job_and_holder(tx, seen.id)  # its result may have come first
                if scheduler.is_overdue(job, now, default_timeout, grace):
                    after = scheduler.expire(job, now).job
                    self._save_job(tx, after)
                    self._record_attempt(
                        tx, job, after, JobStatus.FAILED.value, now,
                        failure_reason=after.failure_reason, error=after.error,
                    )
                    self._release(tx, holder, job, after)
                    expired.append((job, after))
            if pending := sum(after.status is JobStatus.PENDING for _, after in expired):
                self._announce(tx, pending)
            return expired

        expired = await self._db.write(sweep)
        self._ring([after for _, after in expired])
        return expired

    async def delete_finished_before(self, cutoff: dt.datetime) -> int:
        def delete(tx: Transaction) -> int:
            where = f"finished_at < ? AND status IN ({_placeholders(len(_FINAL))})"
            params = [cutoff.timestamp(), *_FINAL]
            job_ids = [str(row[0]) for row in tx.rows(f"SELECT id FROM jobs WHERE {where}", params)]
            self._forget_refs(tx, job_ids)
            self._forget_attempts(tx, job_ids)
            return tx.run(f"DELETE FROM jobs WHERE {where}", params)

        return await self._db.write(delete)

    async def delete_job(self, ref: str) -> tuple[Job, list[str]]:
        def delete(tx: Transaction) -> tuple[Job, list[str]]:
            job, holder = self._lock_job_and_holder(tx, ref)
            if job.status is JobStatus.PROCESSING:
                raise scheduler.Conflict(
                    f"job {job.id} is running on {job.node_name or job.node_id}; cancel it first (ffrtmp jobs cancel)"
                )
            tx.run("DELETE FROM jobs WHERE id = ?", [job.id])
            self._forget_attempts(tx, [job.id])
            return job, self._forget_refs(tx, [job.id])

        return await self._db.write(delete)

    # --- artefacts ---------------------------------------------------------------------

    async def artifacts_in_use(self, sha256s: Sequence[str]) -> set[str]:
        def select(tx: Transaction) -> set[str]:
            return {sha256 for sha256 in sha256s if tx.rows(
                "SELECT 1 FROM job_artifacts WHERE sha256 = ? LIMIT 1", [sha256]
            )}

        return await self._db.read(select)

    async def node_with_token(self, token_hash: str) -> str | None:
        rows = await self._db.read(
            lambda tx: tx.rows("SELECT node_id FROM node_tokens WHERE token_hash = ?", [token_hash]), quick=True
        )
        return str(rows[0][0]) if rows else None

    async def artifact_leased_to(self, sha256: str, node_id: str) -> bool:
        rows = await self._db.read(lambda tx: tx.rows(
            "SELECT 1 FROM job_artifacts JOIN jobs ON jobs.id = job_artifacts.job_id"
            " WHERE job_artifacts.sha256 = ? AND jobs.node_id = ? AND jobs.status = ? LIMIT 1",
            [sha256, node_id, JobStatus.PROCESSING.value],
        ))
        return bool(rows)

    # --- nodes -------------------------------------------------------------------------

    async def register_node(
        self,
        registration: NodeRegistration,
        *,
        token_hash: str = "",
        heartbeat_interval: float = 30.0,
        trust_unproven: bool = False,
    ) -> Registered:
        now = utcnow()

        def upsert(tx: Transaction) -> Registered:
            rows = tx.rows(
                f"SELECT body FROM nodes WHERE address = ?{self._sql.lock}", [registration.address]
            )
            existing = next(_nodes(rows), None)
            proven = trust_unproven or (
                existing is not None
                and token_matches(registration.node_token, self._token_hash(tx, existing.id))
            )
            node = scheduler.merge_registration(
                existing, registration, str(uuid.uuid4()), now,
                proven=proven, heartbeat_interval=heartbeat_interval,
            )
            handed_back: list[Job] = []
            if existing is None:
                tx.run(
                    "INSERT INTO nodes (id, address, status, body) VALUES (?, ?, ?, ?)",
                    _node_params(node),
                )
            else:
                self._save_node(tx, node)
                held = set(registration.active_job_ids)
                lost = [job for job in self._leased_jobs(tx, node.id, lock=True) if job.id not in held]
                handed_back = self._hand_back(tx, existing, lost, "restarted while holding the job", now)
            tx.run("DELETE FROM node_tokens WHERE node_id = ?", [node.id])
            tx.run("INSERT INTO node_tokens (node_id, token_hash) VALUES (?, ?)", [node.id, token_hash])
            return Registered(node=node, created=existing is None, handed_back=handed_back)

        registered = await self._db.write(upsert)
        self._ring(registered.handed_back)
        return registered

    async def node_token_hash(self, node_id: str) -> str:
        def read(tx: Transaction) -> str:
            return self._token_hash(tx, self._load_node(tx, node_id, lock=False).id)

        return await self._db.read(read, quick=True)

    async def heartbeat(
        self, node_id: str, report: HeartbeatReport | None, heartbeat_interval: float = 30.0
    ) -> tuple[HeartbeatReply, list[Job]]:
        now = utcnow()

        def beat(tx: Transaction) -> tuple[HeartbeatReply, list[Job]]:
            node = self._load_node(tx, node_id)
            leased_jobs = self._leased_jobs(tx, node_id, lock=report is not None)
            leased = [job.id for job in leased_jobs]
            reported = report.active_job_ids if report is not None else []
            lost: list[Job] = []
            if report is not None:
                unreported = scheduler.unreported_leases(leased_jobs, reported, now, heartbeat_interval)
                lost = self._hand_back(tx, node, unreported, "no longer runs the job (not in its heartbeat)", now)
                leased = [job_id for job_id in leased if job_id not in {job.id for job in lost}]
            known: dict[str, Job] = {}
            if reported:
                rows = tx.rows(
                    f"SELECT body FROM jobs WHERE id IN ({_placeholders(len(reported))})", reported
                )
                known = {job.id: job for job in _jobs(rows)}
            stop = scheduler.jobs_to_cancel(node_id, reported, known)
            node = scheduler.apply_heartbeat(node, report, leased, now, stopping=stop)
            self._save_node(tx, node)
            return HeartbeatReply(cancel_job_ids=stop, drain=node.status == scheduler.DRAINING), lost

        reply, lost = await self._db.write(beat, quick=True)
        self._ring(lost)
        return reply, lost

    async def list_nodes(self) -> list[Node]:
        return await self._db.read(
            lambda tx: list(_nodes(tx.rows("SELECT body FROM nodes ORDER BY address")))
        )

    async def get_node(self, ref: str) -> Node:
        return await self._db.read(lambda tx: self._find_node(tx, ref, lock=False), quick=True)

    async def change_node(self, ref: str, change: Callable[[Node], Node]) -> Node:
        def apply(tx: Transaction) -> tuple[Node, Node]:
            before = self._find_node(tx, ref)
            node = change(before)
            self._save_node(tx, node)
            return before, node

        before, node = await self._db.write(apply)
        if scheduler.takes_new_jobs(node) and not scheduler.takes_new_jobs(before):
            self._doorbell.ring_all()  # an undrained node may claim at once; its waiter knows it drained
        return node

    async def delete_node(self, ref: str) -> Node:
        def delete(tx: Transaction) -> tuple[Node, list[Job]]:
            node = self._find_node(tx, ref)
            leased = self._leased_jobs(tx, node.id, lock=True)
            requeued = self._hand_back(tx, node, leased, "was deleted while holding the job", utcnow())
            self._forget_node(tx, node.id)
            return node, requeued

        node, requeued = await self._db.write(delete)
        self._ring(requeued)
        return node

    def _forget_node(self, tx: Transaction, node_id: str) -> None:
        tx.run("DELETE FROM nodes WHERE id = ?", [node_id])
        tx.run("DELETE FROM node_tokens WHERE node_id = ?", [node_id])

    async def deregister_node(self, node_id: str) -> list[Job]:
        now = utcnow()

        def depart(tx: Transaction) -> list[Job]:
            node = self._load_node(tx, node_id)
            self._save_node(tx, scheduler.mark_offline(node))
            leased = self._leased_jobs(tx, node.id, lock=True)
            return self._hand_back(tx, node, leased, "stopped while holding the job", now)

        handed_back = await self._db.write(depart)
        self._ring(handed_back)
        return handed_back

    async def prune_offline_nodes(self, retention: float) -> list[Node]:
        now = utcnow()

        def prune(tx: Transaction) -> list[Node]:
            offline = _nodes(tx.rows(f"SELECT body FROM nodes WHERE status = ?{self._sql.lock}", [scheduler.OFFLINE]))
            pruned = [node for node in offline if scheduler.is_prunable(node, now, retention)]
            for node in pruned:
                self._forget_node(tx, node.id)
            return pruned

        return await self._db.write(prune)

    async def mark_silent_nodes_offline(self, heartbeat_interval: float) -> list[Node]:
        now = utcnow()

        def sweep(tx: Transaction) -> tuple[list[Node], list[Job]]:
            seen = tx.rows("SELECT body FROM nodes WHERE status != 'offline'")
            silent: list[Node] = []
            requeued: list[Job] = []
            for candidate in _nodes(seen):
                if not scheduler.is_silent(candidate, now, heartbeat_interval):
                    continue
                node = self._load_node(tx, candidate.id)  # locked now; it may have just beaten
                if scheduler.is_silent(node, now, heartbeat_interval):
                    self._save_node(tx, scheduler.mark_offline(node))
                    leased = self._leased_jobs(tx, node.id, lock=True)
                    requeued += self._hand_back(tx, node, leased, "went silent while holding the job", now)
                    silent.append(node)
            return silent, requeued

        silent, requeued = await self._db.write(sweep)
        self._ring(requeued)
        return silent

    async def count_pending(self) -> int:
        rows = await self._db.read(
            lambda tx: tx.rows("SELECT COUNT(*) FROM jobs WHERE status = ?", [JobStatus.PENDING.value]), quick=True
        )
        return int(rows[0][0])

    async def counts(self) -> StoreCounts:
        def count(tx: Transaction) -> StoreCounts:
            jobs = tx.rows("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            nodes = tx.rows("SELECT status, COUNT(*) FROM nodes GROUP BY status")
            queued = tx.rows(
                "SELECT queue_rank, COUNT(*) FROM jobs WHERE status = ? GROUP BY queue_rank",
                [JobStatus.PENDING.value],
            )
            queues = list(Queue)
            return StoreCounts(
                jobs={status: int(n) for status, n in jobs},
                nodes={status: int(n) for status, n in nodes},
                pending_by_queue={queues[rank].value: int(n) for rank, n in queued},
            )

        return await self._db.read(count)
