"""The master's state: the :class:`Store` interface and its SQLite implementation.

Stores do the I/O only; what a claim, a result or a silent node does to a job
is decided by :mod:`agent.master.scheduler`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ._base import NotFound as NotFound
from ._base import Store as Store
from ._base import StoreCounts as StoreCounts
from ._base import StoreError as StoreError
from .sqlite import SqliteStore as SqliteStore

__all__ = ["NotFound", "SqliteStore", "Store", "StoreCounts", "StoreError", "open_store"]


@contextlib.asynccontextmanager
async def open_store(db: str) -> AsyncIterator[Store]:
    """Open the store named by ``db`` (a SQLite path, ``""`` for memory) and close it on exit.

    Raises:
        StoreError: the database cannot be opened; the message names it.
    """
    store = await SqliteStore.open(db)
    async with store:
        yield store
