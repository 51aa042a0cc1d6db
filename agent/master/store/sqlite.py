"""The master's store in SQLite: a WAL file, or memory for tests and the one-process mode.

One connection does all the work, one transaction at a time: SQLite has a
single writer anyway, and a claim is well under a millisecond, so one
connection is the simplest way to make each transaction atomic. Write
transactions still start with ``BEGIN IMMEDIATE`` so that a second process
opening the same file cannot interleave a claim; that lock is also why the
dialect needs no ``FOR UPDATE``.

The request path's transactions (``quick``: a claim, a result, a token, a
heartbeat) run in the Trio thread: each touches a few rows by key, and a hop
to a worker thread and back cost more CPU than the transaction itself. The
others (sweeps over every node or running job, listings, batches of
progress) run in a worker thread, so the event loop keeps serving while
they do. Quick ones run inline only while this master holds the file alone
(see below): with another process writing to it, a transaction may wait for
its lock (up to :data:`BUSY_TIMEOUT_MS`), and only a worker thread may wait.

The database is in WAL mode with ``synchronous=NORMAL``: a commit is in the
WAL when it returns, so a claim or a result that was answered survives the
master's crash or kill; a power cut or kernel crash may lose the last
moments of commits (never the file's consistency). ``FULL`` would make each
commit wait for an ``fsync`` of the WAL, a dozen milliseconds on a common
disk, which would bound the master to a few dozen claims a second. The WAL's
checkpoint (the one write that waits for the disk, tens of milliseconds
when the disk is busy) is taken off the request path: automatic checkpoints
are off, and every :data:`CHECKPOINT_EVERY_WRITES` writes one is started on a
second connection in a thread of its own, which SQLite lets run beside the
writer, so no transaction waits for it. The write after a whole checkpoint
starts the WAL over and syncs its header; that one runs in the worker thread.

A master holds an exclusive ``flock`` on its database file while it runs, so
a second master started on the same file warns: SQLite keeps the two
consistent, but they share one writer lock and neither wakes the other's
agents. Several masters belong on PostgreSQL (``--db-dsn``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import trio

from ._base import StoreError
from ._sql import Dialect, SqlStore, Transaction, schema

__all__ = ["SqliteStore"]

log = logging.getLogger("agent.master")

# Another process holding the write lock (a second master on the same file)
# makes us wait this long before SQLite reports "database is locked".
BUSY_TIMEOUT_MS = 5000
# Writes between two WAL checkpoints: a write changes a handful of pages, so the
# WAL stays near SQLite's own automatic threshold (1000 pages, about 4 MB).
CHECKPOINT_EVERY_WRITES = 128

_SCHEMA = schema(big_integer="INTEGER", real="REAL")

SQLITE = Dialect(
    lock="",
    skip_locked="",
    next_sequence="SELECT COALESCE(MAX(sequence_number), 0) + 1 FROM jobs",
    announce="",
    body_field="json_extract(body, '$.{}')",
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


def _hold(path: str) -> tuple[int | None, bool]:
    """A descriptor holding an exclusive ``flock`` on the database file (None for memory), and whether we got it.

    Warns when another process holds it: a second master on the same file.
    ``flock`` locks do not touch the POSIX locks SQLite takes on the same file,
    but closing any descriptor of the file drops those, so this one is closed
    only after the connection (:meth:`SqliteDatabase.aclose`).
    """
    if not path:
        return None, True
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning(
            "Another master is using the SQLite database %s: masters on one SQLite file share its single "
            "writer lock and do not wake each other's agents; give each master its own --db, or share a "
            "PostgreSQL database with --db-dsn", path,
        )
        return fd, False
    return fd, True


class SqliteDatabase:
    """One SQLite connection behind a one-token limiter, which also serialises transactions.

    Args:
        checkpointer: a second connection to the file for WAL checkpoints,
            when no other process writes to it (this master holds its
            ``flock``) and the caller turned automatic checkpoints off;
            quick transactions then run inline. None: all in the worker
            thread, checkpoints SQLite's own.
    """

    dialect = SQLITE

    def __init__(
        self, db: sqlite3.Connection, path: str, held: int | None = None, *,
        checkpointer: sqlite3.Connection | None = None, inline: bool = False,
    ) -> None:
        self._db = db
        self._path = path
        self._held = held
        self._inline = inline
        self._limiter = trio.CapacityLimiter(1)
        self._checkpointer = checkpointer
        self._checkpointing = threading.Lock()
        self._writes = 0
        self._wal_copied = False

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreError(f"SQLite database {self._path or ':memory:'}: {exc}") from exc

    async def _run(self, fn: Callable[[], _T], *, inline: bool) -> _T:
        with self._translated():
            if not inline:
                # Not abandoned on cancel: the thread finishes its transaction first, so
                # the connection is never left mid-transaction.
                return await trio.to_thread.run_sync(fn, limiter=self._limiter)
            async with self._limiter:  # after a transaction running in the thread, if any
                return fn()

    async def write(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
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

        # The first write after a whole checkpoint starts the WAL over, which syncs its header
        # to disk: that one waits in the worker thread, not in the event loop.
        restarts_wal, self._wal_copied = self._wal_copied, False
        value = await self._run(transaction, inline=quick and self._inline and not restarts_wal)
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY_WRITES and self._checkpointer is not None:
            self._writes = 0
            if not self._checkpointing.locked():  # one still running does this one's work too
                trio.lowlevel.start_thread_soon(self._checkpoint, lambda _: None)
        return value

    def _checkpoint(self) -> None:
        """Copy the WAL into the file, beside the writer (PASSIVE); in a thread of its own."""
        with self._checkpointing:
            if self._checkpointer is None:
                return
            try:
                [(_, in_wal, copied)] = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next one copies what this one left
                log.warning("SQLite checkpoint of %s failed: %s", self._path, exc)
                return
            # A plain store from this thread: the Trio thread reads it at its next write.
            self._wal_copied = copied == in_wal

    async def read(self, work: Callable[[Transaction], _T], *, quick: bool = False) -> _T:
        return await self._run(lambda: work(_SqliteTransaction(self._db)), inline=quick and self._inline)

    def _close_checkpointer(self) -> None:
        with self._checkpointing:  # after the one running, if any
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                checkpointer.close()

    async def aclose(self) -> None:
        """Close the connections; shielded, so it also runs when the server is cancelled."""
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._close_checkpointer)
            await self._run(self._db.close, inline=False)
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
        checkpointer = None
        try:
            held, alone = _hold(path)
            if alone and path:
                checkpointer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA wal_autocheckpoint=0")  # SqliteDatabase.write starts them, on the checkpointer
        except (OSError, sqlite3.Error) as exc:
            db.close()
            raise StoreError(f"cannot open the SQLite database {path!r}: {exc}") from exc
        log.debug("store opened: %s", path or "in memory")
        return cls(SqliteDatabase(db, path, held, checkpointer=checkpointer, inline=alone))
