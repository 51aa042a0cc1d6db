"""What the master's routes need from a store, and the errors every store raises."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
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
    )
    from ..doorbell import Doorbell
    from ..progress import LeasedProgress
    from ..scheduler import Lease, ResultOutcome

__all__ = ["NotFound", "Registered", "Store", "StoreCounts", "StoreError"]


class StoreError(Exception):
    """The database cannot be opened or used; the message names it and the cause.

    The HTTP layer answers 503 with it: the request may succeed once the database is back.
    """


class NotFound(LookupError):
    """No job or node has that id; the HTTP layer answers 404 with this message."""


@attrs.frozen
class Registered:
    """A registration's outcome: the node (a new incarnation of it), and what changed."""

    node: Node
    # False: the address had registered before, and keeps its node id.
    created: bool
    # Jobs leased to the node's earlier runs, now back in the queue (or failed, out of retries).
    handed_back: list[Job]


@attrs.frozen
class StoreCounts:
    """Jobs and nodes by status, and pending jobs by queue, for the master's own metrics."""

    jobs: dict[str, int]
    nodes: dict[str, int]
    pending_by_queue: dict[str, int]


class Store(Protocol):
    """The master's state. Each method is one transaction; the lease rules live in
    :mod:`agent.master.scheduler`, so every store applies the same ones.

    Methods raise :class:`NotFound` for an unknown job or node and
    :class:`~agent.master.scheduler.Conflict` when a rule forbids the change.
    """

    @property
    def doorbell(self) -> Doorbell:
        """Rung whenever jobs become pending, here or (PostgreSQL) through another master; long-polls wait on it."""

    async def submit(self, request: JobRequest, max_retries: int) -> Job: ...

    async def get_job(self, ref: str) -> Job:
        """A job by id, or by sequence number when ``ref`` is all digits."""

    async def lease(self, ref: str) -> Lease:
        """Who holds the job ``ref`` names (as :meth:`get_job`) and since when, without the rest of it."""

    async def list_jobs(
        self,
        status: JobStatus | None = None,
        *,
        node: str = "",
        queue: Queue | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs in submission order with a sequence number past ``after``; at most ``limit`` (None: all).

        ``node`` is a node id or address: the jobs leased to it, now or last.
        Sequence numbers start at 1, so ``after=0`` is the start.
        """

    async def list_attempts(self, ref: str) -> list[JobAttempt]:
        """The job's ended attempts, oldest first: the last 50 of them (``_sql.ATTEMPTS_KEPT``).

        Each is written in the transaction that ended it (a result, a cancel or
        pause, a hand-back, a timeout), so the history always agrees with the job.
        """

    async def claim(self, node_id: str) -> Job | None:
        """Lease the first job in dispatch order this node can run, or ``None``."""

    async def record_result(self, result: JobResult, package_files: Sequence[str] = ()) -> ResultOutcome:
        """Apply a node's result; ``package_files`` (the files its package's manifest names) are linked to
        the job with its other artefacts when the result is taken."""

    async def change_job(self, ref: str, change: Callable[[Job], Job]) -> tuple[Job, Job]:
        """Apply one scheduler rule (cancel, pause, progress ...) to a job atomically.

        Returns the job before and after, so the caller can tell the node that held it.
        """

    async def save_progress(self, updates: Sequence[LeasedProgress]) -> int:
        """Store the progress of running jobs, all in one transaction; how many jobs it changed.

        A report whose lease has ended (a result, a cancel or a hand-back came first) is dropped.
        """

    async def expire_overdue_jobs(
        self, default_timeout: float | None, grace: float
    ) -> list[tuple[Job, Job]]:
        """Fail the running jobs past their timeout plus ``grace`` (see ``scheduler.expire``).

        Returns each such job before and after, so the caller can tell its node.
        """

    async def delete_finished_before(self, cutoff: dt.datetime) -> int:
        """Delete completed, failed and canceled jobs that finished before ``cutoff``; the count."""

    async def delete_job(self, ref: str) -> tuple[Job, list[str]]:
        """Delete a job that is not running; returns it and the artefacts no remaining job names.

        Raises:
            Conflict: the job is running; cancel it first.
        """

    async def artifacts_in_use(self, sha256s: Sequence[str]) -> set[str]:
        """Those of ``sha256s`` some job names (its ``artifact:`` input or a delivered output)."""

    async def node_with_token(self, token_hash: str) -> str | None:
        """The node whose current token hashes to ``token_hash``, or None."""

    async def artifact_leased_to(self, sha256: str, node_id: str) -> bool:
        """Whether a job now leased to ``node_id`` names the artefact."""

    async def register_node(
        self,
        registration: NodeRegistration,
        *,
        token_hash: str = "",
        heartbeat_interval: float = 30.0,
        trust_unproven: bool = False,
    ) -> Registered:
        """Start a new incarnation of the node at ``registration.address``; store ``token_hash`` for it.

        Jobs leased to the node's earlier runs go back to the queue, except
        those the registration lists as held (results it has yet to deliver).

        Raises:
            NameTaken: a live node holds the address and the registration did not show
                its token (``trust_unproven`` waives that, for legacy agents).
        """

    async def node_token_hash(self, node_id: str) -> str:
        """The hash of the node's current token, ``""`` if it has none."""

    async def heartbeat(
        self, node_id: str, report: HeartbeatReport | None, heartbeat_interval: float = 30.0
    ) -> tuple[HeartbeatReply, list[Job]]:
        """Record a heartbeat; with a report, leases it does not list (after one interval) go back.

        Returns the reply for the node and the jobs handed back.
        """

    async def list_nodes(self) -> list[Node]: ...

    async def get_node(self, ref: str) -> Node:
        """A node by id, or by name (its address)."""

    async def change_node(self, ref: str, change: Callable[[Node], Node]) -> Node:
        """Apply one scheduler rule (drain, undrain) to the node with that id or name; the node after."""

    async def delete_node(self, ref: str) -> Node:
        """Forget the node with that id or name; the jobs it held go back to the queue."""

    async def deregister_node(self, node_id: str) -> list[Job]:
        """A node's agent stopped cleanly: the node is offline at once; returns the jobs handed back."""

    async def prune_offline_nodes(self, retention: float) -> list[Node]:
        """Forget the nodes offline for over ``retention`` seconds (see ``scheduler.is_prunable``)."""

    async def mark_silent_nodes_offline(self, heartbeat_interval: float) -> list[Node]:
        """Mark offline the nodes that missed their heartbeats and requeue their jobs."""

    async def counts(self) -> StoreCounts: ...

    async def count_pending(self) -> int:
        """Jobs waiting in the queue; reads only those, where :meth:`counts` reads every job."""

    async def aclose(self) -> None: ...
