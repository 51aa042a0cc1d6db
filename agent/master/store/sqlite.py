"""The master's store in SQLite: a WAL file, or memory for tests and the one-process mode.

One connection does all the work, one transaction at a time, in a worker
thread: SQLite has a single writer anyway, and a claim is well under a
millisecond, so one connection is the simplest way to make each transaction
atomic. Write transactions still start with ``BEGIN IMMEDIATE`` so that a
second process opening the same file cannot interleave a claim; that lock is
also why the dialect needs no ``FOR UPDATE``.

A master holds an exclusive ``flock`` on its database file while it runs, so
a second master started on the same file warns: SQLite keeps the two
consistent, but they share one writer lock and neither wakes the other's
agents. Several masters belong on PostgreSQL (``--db-dsn``).
"""

from __future__ import annotations

import fcntl
import logging
import os
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


def _hold(path: str) -> int | None:
    """A descriptor holding an exclusive ``flock`` on the database file; None for memory.

    Warns when another process holds it: a second master on the same file.
    ``flock`` locks do not touch the POSIX locks SQLite takes on the same file,
    but closing any descriptor of the file drops those, so this one is closed
    only after the connection (:meth:`SqliteDatabase.aclose`).
    """
    if not path:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning(
            "Another master is using the SQLite database %s: masters on one SQLite file share its single "
            "writer lock and do not wake each other's agents; give each master its own --db, or share a "
            "PostgreSQL database with --db-dsn", path,
        )
    return fd


class SqliteDatabase:
    """One SQLite connection behind a one-token limiter, which also serialises transactions."""

    dialect = SQLITE

    def __init__(self, db: sqlite3.Connection, path: str, held: int | None = None) -> None:
        self._db = db
        self._path = path
        self._held = held
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
        if self._held is not None:
            os.close(self._held)


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
        try:
            held = _hold(path)
        except OSError as exc:
            db.close()
            raise StoreError(f"cannot open the SQLite database {path!r}: {exc}") from exc
        log.debug("store opened: %s", path or "in memory")
        return cls(SqliteDatabase(db, path, held))
