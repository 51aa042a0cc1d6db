"""The master's store in SQLite: a WAL file, or memory for tests and the one-process mode.

One connection does all the work, one transaction at a time, in a worker
thread: SQLite has a single writer anyway, and a claim is well under a
millisecond, so one connection is the simplest way to make each transaction
atomic. Write transactions still start with ``BEGIN IMMEDIATE`` so that a
second process opening the same file cannot interleave a claim; that lock is
also why the dialect needs no ``FOR UPDATE``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from ._base import StoreError
from ._sql import Dialect, SqlStore, Transaction, schema

__all__ = ["SqliteStore"]

log = logging.getLogger("agent.master")

# Another process holding the write lock (a second master on the same file)
# makes us wait this long before SQLite reports "database is locked".
BUSY_TIMEOUT_MS = 5000

_SCHEMA = schema(big_integer="INTEGER", real="REAL")

SQLITE = Dialect(
    lock="",
    skip_locked="",
    next_sequence="SELECT COALESCE(MAX(sequence_number), 0) + 1 FROM jobs",
    announce="",
)

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


class _SqliteTransaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._db.execute(sql, params).rowcount


class SqliteDatabase:
    """One SQLite connection behind a one-token limiter, which also serialises transactions."""

    dialect = SQLITE

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self._path = path
        self._limiter = trio.CapacityLimiter(1)

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        # Not abandoned on cancel: the thread finishes its transaction first, so
        # the connection is never left mid-transaction.
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"SQLite database {self._path or ':memory:'}: {exc}") from exc

    async def write(self, work: Callable[[Transaction], _T]) -> _T:
        def transaction() -> _T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                value = work(_SqliteTransaction(self._db))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            return value

        return await self._in_thread(transaction)

    async def read(self, work: Callable[[Transaction], _T]) -> _T:
        return await self._in_thread(lambda: work(_SqliteTransaction(self._db)))

    async def aclose(self) -> None:
        """Close the connection; shielded, so it also runs when the server is cancelled."""
        with trio.CancelScope(shield=True):
            await self._in_thread(self._db.close)


class SqliteStore(SqlStore):
    """The store in one SQLite file (or memory). Build it with :meth:`open`."""

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
        return cls(SqliteDatabase(db, path))
