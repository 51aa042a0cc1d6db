"""The master: a job queue that worker agents lease jobs from over HTTP.

See "The master" and "Leases and node identity" in docs/architecture.rst.

General layout, from the bottom up:

* ``scheduler``: the rules (dispatch order, leases, retries, offline nodes) as
  plain functions on wire types; no I/O, no trio.
* ``store``: the state, one transaction per call, applying those rules;
  SQLite in a worker thread.
* ``app``: the HTTP routes (Starlette), JSON in and out, errors to statuses.
* ``server``: hypercorn on Trio serving the app, the offline sweep, signals.
"""

from __future__ import annotations

from .app import create_app as create_app
from .server import run_master as run_master
from .server import serve_master as serve_master
from .store import SqliteStore as SqliteStore

__all__ = ["SqliteStore", "create_app", "run_master", "serve_master"]
