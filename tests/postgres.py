"""A real, throw-away PostgreSQL server for the tests that need one.

``postgres_dsn`` is a session fixture: import it into a test module
(``from tests.postgres import postgres_dsn``) and ask for it. It runs
``initdb`` in a temporary directory, starts the server on a Unix socket
inside it (no TCP port to collide on), creates a database, and stops and
deletes everything at the end. ``initdb`` refuses to run as root, so as root
the cluster belongs to the ``postgres`` user and its commands run through
``runuser``. Tests that use a database get a fresh one from ``fresh_database``.
Rule tests that must hold on both stores import ``store_on_each_backend``,
the ``store`` fixture: once on SQLite, once on a fresh PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.master.store import Store, open_store

SUPERUSER = "ffrtmp"


def _bin_dir() -> Path:
    """The newest Debian PostgreSQL's binaries; the test fails, saying how to install them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        pytest.fail(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "run `bash tests/setup.sh`, which installs the packages in tests/apt-packages.txt"
        )
    return Path(found[-1]).parent


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str]) -> None:
    done = subprocess.run(_as_owner(argv), check=False, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a server in a temporary directory; yields its DSN, stops and deletes it after."""
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="ffrtmp-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"])
    options = f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off -c max_connections=200"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"])
    try:
        yield f"postgresql://{SUPERUSER}@/postgres?host={root}"
    finally:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN (``postgresql://...``) of a server that lives for the test session."""
    with running_postgres() as dsn:
        yield dsn


def fresh_database(server_dsn: str) -> str:
    """A new, empty database on the session's server; its DSN."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_dsn.replace("/postgres?", f"/{name}?")


@pytest.fixture(name="store", params=["sqlite", "postgres"])
async def store_on_each_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """The ``store`` fixture: a master's store on SQLite in ``tmp_path``, then on a fresh PostgreSQL database.

    Only the PostgreSQL run starts the session's server, so ``-k sqlite`` needs none.
    """
    if request.param == "sqlite":
        async with open_store(str(tmp_path / "master.db")) as sqlite:
            yield sqlite
    else:
        dsn = fresh_database(request.getfixturevalue("postgres_dsn"))
        async with open_store("", dsn=dsn) as postgres:
            yield postgres
