"""The master's state: the :class:`Store` interface, and it in SQLite or PostgreSQL.

Stores do the I/O only; what a claim, a result or a silent node does to a job
is decided by :mod:`agent.master.scheduler`. Both stores run the same
transactions (``_sql``); only their dialect and driver differ.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ._base import NotFound as NotFound
from ._base import Registered as Registered
from ._base import Store as Store
from ._base import StoreCounts as StoreCounts
from ._base import StoreError as StoreError
from .postgres import PostgresStore as PostgresStore
from .postgres import open_postgres_store
from .sqlite import SqliteStore as SqliteStore

__all__ = ["NotFound", "PostgresStore", "Registered", "SqliteStore", "Store", "StoreCounts", "StoreError", "open_store"]


@contextlib.asynccontextmanager
async def open_store(db: str, *, dsn: str = "") -> AsyncIterator[Store]:
    """Open the store and close it on exit.

    Args:
        db: a SQLite file, ``""`` for memory; used when ``dsn`` is empty.
        dsn: a PostgreSQL URL (``postgresql://user:password@host/db``); wins over ``db``.

    Raises:
        StoreError: the database cannot be opened; the message names it.
    """
    if dsn:
        async with open_postgres_store(dsn) as postgres:
            yield postgres
        return
    sqlite = await SqliteStore.open(db)
    async with sqlite:
        yield sqlite
