"""The master's store in PostgreSQL, so several masters can serve one queue.

The driver is psycopg 3 (the ``[postgres]`` extra), used synchronously in
``trio.to_thread.run_sync``; a :class:`trio.CapacityLimiter` bounds both the
threads and the connections. Claims read candidates without locks and lease
the first one with ``FOR UPDATE SKIP LOCKED``, so masters claiming at once
pass over each other's rows instead of waiting on them.

A master that queues a job says so with ``NOTIFY``; every master ``LISTEN``s
and wakes its own long-polls and websocket clients, so an agent connected to
one master hears of a job submitted through another at once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ._base import StoreError
from ._sql import Dialect, SqlStore, Transaction, schema

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore", "open_postgres_store"]

log = logging.getLogger("agent.master")

# Connections (and threads) per master: a claim takes a few milliseconds, so a
# handful serve dozens of agents; several masters must fit max_connections (100).
POOL_SIZE = 8
# Two masters updating the same rows in opposite order: PostgreSQL aborts one
# transaction, which is simply run again.
ATTEMPTS = 3
CHANNEL = "ffrtmp_job_available"
# Pause before listening again after the notification connection broke.
RECONNECT_S = 1.0

_SCHEMA = "CREATE SEQUENCE IF NOT EXISTS job_sequence_numbers;" + schema(
    big_integer="BIGINT", real="DOUBLE PRECISION"
)
# Masters starting together would race on CREATE ... IF NOT EXISTS; one at a time.
_SCHEMA_LOCK = 0x66667274

POSTGRES = Dialect(
    lock=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    next_sequence="SELECT nextval('job_sequence_numbers')",
    announce=f"SELECT pg_notify('{CHANNEL}', ?)",
    body_field="(body::json ->> '{}')",
)

_T = TypeVar("_T")


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "--db-dsn needs the PostgreSQL driver: install the [postgres] extra, in the repository checkout: "
            "pip install '.[postgres]'"
        ) from None
    return psycopg


def _where(dsn: str) -> str:
    """The DSN without its password, for messages."""
    scheme, sep, rest = dsn.partition("://")
    credentials, at, location = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.partition(':')[0]}{at}{location}" if at else dsn


class _PostgresTransaction:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql.replace("?", "%s"), params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql.replace("?", "%s"), params).rowcount


class PostgresDatabase:
    """A small pool of autocommit connections, each transaction in a worker thread."""

    dialect = POSTGRES

    def __init__(self, dsn: str, size: int = POOL_SIZE) -> None:
        self._dsn = dsn
        self._psycopg = _driver()
        errors = self._psycopg.errors
        self._retryable = (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation)
        self._limiter = trio.CapacityLimiter(size)
        self._idle: list[psycopg.Connection[Any]] = []

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self._psycopg.connect(self._dsn, autocommit=True)
        return conn

    async def _transaction(self, work: Callable[[Transaction], _T], *, read_only: bool) -> _T:
        async with self._limiter:
            try:
                # Popped and pushed in the Trio thread: the list needs no lock.
                conn = self._idle.pop() if self._idle else await trio.to_thread.run_sync(self._connect)
            except self._psycopg.Error as exc:
                raise StoreError(f"PostgreSQL at {_where(self._dsn)}: {exc}") from exc

            def transaction() -> _T:
                attempt = 1
                while True:
                    try:
                        with conn.transaction():
                            if read_only:
                                conn.execute("SET TRANSACTION READ ONLY")
                            return work(_PostgresTransaction(conn))
                    except self._retryable:
                        if attempt == ATTEMPTS:
                            raise
                        attempt += 1

            try:
                return await trio.to_thread.run_sync(transaction)
            except self._psycopg.Error as exc:
                raise StoreError(f"PostgreSQL at {_where(self._dsn)}: {exc}") from exc
            finally:
                if not conn.closed and not conn.broken:
                    self._idle.append(conn)

    async def write(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
        """Always in a worker thread: every statement is a round trip to the server."""
        return await self._transaction(work, read_only=False)

    async def read(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
        return await self._transaction(work, read_only=True)

    async def create_schema(self) -> None:
        def create(tx: Transaction) -> None:
            tx.run("SELECT pg_advisory_xact_lock(?)", [_SCHEMA_LOCK])
            for statement in filter(str.strip, _SCHEMA.split(";")):
                tx.run(statement)

        await self.write(create)

    async def _listening(self) -> psycopg.Connection[Any]:
        def connect() -> psycopg.Connection[Any]:
            conn = self._connect()
            conn.execute(f"LISTEN {CHANNEL}")
            return conn

        return await trio.to_thread.run_sync(connect)

    async def serve_announcements(
        self, on_notify: Callable[[int | None], None], *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Call ``on_notify`` with the jobs announced on :data:`CHANNEL`, as they come; runs until cancelled.

        Waits on the connection's socket in Trio, so no thread sits blocked. A
        lost connection is opened again; ``on_notify(None)`` is called then, as
        announcements may have been missed meanwhile.

        Raises:
            StoreError: the first connection fails (the master cannot start).
        """
        error = self._psycopg.Error
        try:
            conn = await self._listening()
        except error as exc:
            raise StoreError(f"PostgreSQL at {_where(self._dsn)}: {exc}") from exc
        task_status.started()
        while True:
            try:
                with conn:
                    while True:
                        await trio.lowlevel.wait_readable(conn.fileno())
                        if jobs := sum(_announced(notify.payload) for notify in conn.notifies(timeout=0)):
                            on_notify(jobs)
            except error as exc:
                log.warning("Lost the PostgreSQL notification channel (%s); reconnecting", exc)
            while True:
                await trio.sleep(RECONNECT_S)
                on_notify(None)
                try:
                    conn = await self._listening()
                    break
                except error as exc:
                    log.debug("still cannot listen on PostgreSQL: %s", exc)

    async def aclose(self) -> None:
        """Close the idle connections; shielded, so it also runs when the server is cancelled."""
        idle, self._idle = self._idle, []
        with trio.CancelScope(shield=True):
            for conn in idle:
                await trio.to_thread.run_sync(conn.close)


def _announced(payload: str) -> int:
    """The jobs one announcement (``"<count> <unique tag>"``) says were queued; one without a count, one."""
    count = payload.split(" ", 1)[0]
    return int(count) if count.isascii() and count.isdigit() else 1


class PostgresStore(SqlStore):
    """The store in one PostgreSQL database, shared by any number of masters."""

    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._postgres = db

    async def serve_announcements(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Wake this master's long-polls when any master queues jobs, one per job; runs until cancelled."""

        def wake(jobs: int | None) -> None:
            if jobs is None:
                self.doorbell.ring_all()
            else:
                self.doorbell.ring_count(jobs)

        await self._postgres.serve_announcements(wake, task_status=task_status)

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        """Connect to ``dsn`` (``postgresql://user:password@host/db``) and create the tables.

        Raises:
            StoreError: the driver is missing, or the database cannot be reached or used.
        """
        db = PostgresDatabase(dsn)
        try:
            await db.create_schema()
        except BaseException:
            await db.aclose()
            raise
        log.debug("store opened: %s", _where(dsn))
        return cls(db)


@contextlib.asynccontextmanager
async def open_postgres_store(dsn: str) -> AsyncIterator[PostgresStore]:
    """A :class:`PostgresStore` that hears other masters' announcements while open."""
    store = await PostgresStore.open(dsn)
    async with store, trio.open_nursery() as nursery:
        await nursery.start(store.serve_announcements)
        yield store
        nursery.cancel_scope.cancel()
