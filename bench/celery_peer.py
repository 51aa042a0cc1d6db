"""A Celery 5 worker beside the agent: the same stub process per task, for ``bench.dispatch --peer celery``.

The peer is what the agent's dispatch is compared with: Redis (Debian's
``redis-server``, started on a free port in a temporary directory) as broker
and result backend, and a prefork worker with ``-c`` = the slots, prefetch
multiplier 1 and ``-O fair``. Its task spawns ``bash -c`` that writes bash's
``EPOCHREALTIME`` into a file and then becomes ``sleep D``: the same kind of
stub process the agent's encoder is in the benchmark, started the same way.

Utilisation is measured as for the agent: the tasks wait in the queue when
the worker starts; the span is from the first task's start to the last task's
end, as each task saw them (the agent's span also holds the claim of the
first job and the result of the last, a few milliseconds). Submit to start
is from ``apply_async`` to the stub's own start, on an idle, warmed-up worker.

This module is also the Celery app the worker imports (``-A bench.celery_peer``):
the broker URL comes in ``FFRTMP_BENCH_REDIS``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

__all__ = ["CELERY_SETUP", "CeleryPeer", "CeleryUnavailable", "app", "open_celery_peer", "stub"]

REDIS_ENV = "FFRTMP_BENCH_REDIS"
# What --peer celery needs, said when something is missing.
CELERY_SETUP = (
    "--peer celery needs Celery and the redis client (pip install '.[celery]' in the repository checkout) "
    "and Debian's redis-server (apt-get install redis-server)"
)
# A worker that is not ready this long after its start will not be.
WORKER_READY_S = 60.0
REPO = Path(__file__).resolve().parents[1]


class CeleryUnavailable(RuntimeError):
    """Celery, the redis client or redis-server is missing, or the peer did not come up; the message says which."""


def _make_app() -> Any:
    try:
        from celery import Celery  # type: ignore[import-untyped]
    except ImportError:
        return None
    celery = Celery("ffrtmp_bench", broker=os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0"))
    celery.conf.update(
        result_backend=celery.conf.broker_url,
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


app = _make_app()

# As bench.dispatch's stub: its start, the sleep, its end, into the marker file.
_STUB = 'printf "%s\\n" "$EPOCHREALTIME" > "$1"; sleep "$2"; printf "%s\\n" "$EPOCHREALTIME" >> "$1"'


if app is not None:

    @app.task(name="ffrtmp_bench.stub")  # type: ignore[untyped-decorator]
    def stub(seconds: float, marker: str) -> None:
        """Run the stub process, which writes its start and end into ``marker``."""
        subprocess.run(["bash", "-c", _STUB, "stub", marker, f"{seconds:g}"], check=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.define
class CeleryPeer:
    """A running Redis and, between :meth:`start_worker` and :meth:`stop_worker`, one Celery worker."""

    work: Path
    broker: str
    redis: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes] | None = None
    _markers: int = 0

    def marker(self) -> Path:
        """A fresh file for one task's stub to write its start time into."""
        self._markers += 1
        return self.work / f"start-{self._markers}"

    def submit(self, seconds: float, marker: Path) -> Any:
        return stub.apply_async((seconds, str(marker)))

    def flush(self) -> None:
        """Empty the broker and backend: each run's queue holds only its own tasks."""
        with app.connection_for_write() as connection:
            connection.default_channel.client.flushdb()

    def start_worker(self, slots: int) -> None:
        """A prefork worker of ``slots`` processes, prefetch 1, ``-O fair``; returns once it takes tasks."""
        log = (self.work / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.celery_peer", "worker", "--pool", "prefork",
             "--concurrency", str(slots), "--prefetch-multiplier", "1", "-O", "fair", "--loglevel", "WARNING",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO, env={**os.environ, REDIS_ENV: self.broker}, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + WORKER_READY_S
        while not app.control.ping(timeout=0.5):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise CeleryUnavailable(
                    f"the Celery worker did not start; its log: {(self.work / 'worker.log').read_text()[-2000:]}"
                )

    def stop_worker(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.worker is None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait()
        self.worker = None


@contextlib.contextmanager
def open_celery_peer() -> Iterator[CeleryPeer]:
    """Redis on a free port in a temporary directory, for as long as the block runs.

    Raises:
        CeleryUnavailable: Celery, the redis client or redis-server is missing, or Redis did not answer.
    """
    redis_server = shutil.which("redis-server")
    try:
        import redis
    except ImportError:
        raise CeleryUnavailable(CELERY_SETUP) from None
    if app is None or redis_server is None:
        raise CeleryUnavailable(CELERY_SETUP)
    work = Path(tempfile.mkdtemp(prefix="ffrtmp-celery-"))
    port = _free_port()
    server = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", "",
         "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{port}/0"
    peer = CeleryPeer(work, broker, server)
    try:
        _wait_for_redis(redis.Redis(host="127.0.0.1", port=port), redis.exceptions.ConnectionError, server)
        os.environ[REDIS_ENV] = broker
        app.conf.broker_url = app.conf.result_backend = broker
        yield peer
    finally:
        peer.stop_worker()
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_redis(client: Any, refused: type[Exception], server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except refused as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                raise CeleryUnavailable(f"redis-server did not answer: {exc}") from None
            time.sleep(0.05)
