"""Running the master: the store, hypercorn serving the app, push wake-ups and housekeeping."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import ipaddress
import logging
import resource
import signal
from functools import partial
from typing import TYPE_CHECKING, cast

import hypercorn
import hypercorn.trio
import trio

from ..config import ConfigError, MasterConfig
from ..models import AgentEvent, utcnow
from ..s3 import S3Unavailable
from ..tls import configure_server, prepare_server
from .app import create_app
from .artifacts import ArtifactStore, open_artifacts
from .bodylimits import BodyLimits
from .events import EventHub
from .metrics import MasterMetrics
from .progress import FLUSH_INTERVAL_S, ProgressBook, flush_on_exit, serve_progress_flush
from .s3store import S3Artifacts
from .scheduler import OFFLINE_AFTER_BEATS
from .store import Store, StoreError, open_store

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

__all__ = ["keep_house", "run_master", "serve_master"]

log = logging.getLogger("agent.master")

# Seconds a client has to send its request headers, and an idle connection stays open.
HEADER_TIMEOUT_S = 5.0
# Net allocations of tracked objects between two collections of the youngest generation (Python's
# default is 700). A master serving a large farm holds a few hundred thousand objects (its clients'
# connections and their tasks), and with the default a collection of all of them came every few
# seconds, each stopping every request for 200-500 ms at a thousand agents (bench/farm_sim.py).
GC_YOUNG_THRESHOLD = 50_000
# An artefact no job names is kept this long: an input uploaded before its submit, an
# output delivered before its result (which may wait in an agent's outbox), a paused upload.
UNNAMED_ARTIFACT_GRACE_S = 24 * 3600.0


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def keep_house(
    store: Store, hub: EventHub, config: MasterConfig, metrics: MasterMetrics, artifacts: ArtifactStore | None = None
) -> None:
    """Mark silent nodes offline, forget long-offline ones, time out overdue jobs, delete old ones.

    Checking every half heartbeat interval bounds the delay past a node's
    deadline to half a beat. A node offline after :data:`OFFLINE_AFTER_BEATS`
    missed beats gets its jobs requeued; a job past its timeout by one more
    beat (the agent's own ``timeout`` result had that long to arrive) is failed
    on the master and its node told to stop it. With ``--cleanup-retention``,
    artefacts no job names are deleted once :data:`UNNAMED_ARTIFACT_GRACE_S`
    old (an upload waits that long for the job that names it). A database (or S3 store) error skips one
    round, so a database restart does not take the master down. Timed-out and
    deleted jobs are counted in ``metrics``. Runs until cancelled.
    """
    while True:
        await trio.sleep(config.heartbeat_interval / 2)
        try:
            await _sweep(store, hub, config, metrics, artifacts)
        except (StoreError, S3Unavailable) as exc:
            log.warning("Housekeeping skipped: %s", exc)


async def _sweep(
    store: Store, hub: EventHub, config: MasterConfig, metrics: MasterMetrics, artifacts: ArtifactStore | None
) -> None:
    for node in await store.mark_silent_nodes_offline(config.heartbeat_interval):
        log.warning(
            "Node %s (%s) silent for %d heartbeats: offline, its jobs went back to the queue",
            node.address,
            node.id,
            OFFLINE_AFTER_BEATS,
        )
    for node in await store.prune_offline_nodes(config.node_retention):
        log.info(
            "Forgot node %s (%s): offline for over %s (--node-retention)",
            node.address, node.id, _hours(config.node_retention),
        )
    for before, after in await store.expire_overdue_jobs(config.job_timeout, config.heartbeat_interval):
        hub.send(before.node_id, AgentEvent.cancel(before.id))
        metrics.expired.inc()
        log.warning("Job %s timed out on the master (now %s): %s", after.id, after.status.value, after.error)
    if config.cleanup_retention > 0:
        cutoff = utcnow() - dt.timedelta(days=config.cleanup_retention)
        if deleted := await store.delete_finished_before(cutoff):
            metrics.cleaned.inc(deleted)
            log.info("Deleted %d jobs finished over %g days ago", deleted, config.cleanup_retention)
        if artifacts is not None:
            await _delete_unnamed_artifacts(store, artifacts)


async def _delete_unnamed_artifacts(store: Store, artifacts: ArtifactStore) -> None:
    stale = await artifacts.stale(UNNAMED_ARTIFACT_GRACE_S)
    unnamed = sorted(set(stale) - await store.artifacts_in_use(stale))
    if unnamed:
        freed = await artifacts.delete(unnamed)
        log.info("Deleted %d artifacts (%d bytes) no job names", len(unnamed), freed)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"


async def serve_master(
    config: MasterConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the master's API on ``config.host:config.port`` until cancelled.

    Opens the store (``config.db_dsn`` on PostgreSQL, else SQLite at
    ``config.db``; ``""`` in memory), serves the app with hypercorn (HTTPS
    with ``config.tls``, requiring client certificates when it names a client
    CA), pushes wake-ups to connected agents and keeps house
    (:func:`keep_house`). Running jobs' progress is kept in memory and written
    every few seconds (:mod:`.progress`), and once more on the way out, before
    the store is closed, also when cancelled.

    Args:
        config: the master's settings; ``port=0`` picks a free port.
        task_status: ``started()`` receives the bound URL, such as
            ``"http://127.0.0.1:43125"`` (``https`` with TLS), once the socket listens.

    Raises:
        ConfigError: the TLS files are missing or do not load.
        StoreError: the database cannot be opened.
        OSError: the address cannot be bound (port in use, no such interface).

    Example::

        url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    """
    http = hypercorn.Config()
    http.bind = [_bind(config.host, config.port)]
    http.errorlog = logging.getLogger("agent.master.http")
    # Also how long request headers may take: hypercorn counts a connection as idle
    # until its request's headers are in, so a slow sender is closed after this.
    http.keep_alive_timeout = HEADER_TIMEOUT_S
    if config.tls is not None:
        prepare_server(config.tls)
        configure_server(http, config.tls)
    with open_artifacts(config) as directory:
        artifacts: ArtifactStore = directory
        if config.artifacts:  # the bucket keeps the files; the directory stages uploads in progress
            artifacts = S3Artifacts.over(config.artifacts, config.s3_endpoint, directory)
            await artifacts.check()
        await _serve(config, http, artifacts, task_status)


async def _serve(
    config: MasterConfig, http: hypercorn.Config, artifacts: ArtifactStore, task_status: trio.TaskStatus[str]
) -> None:
    async with open_store(config.db, dsn=config.db_dsn) as store:
        hub = EventHub()
        metrics = MasterMetrics()
        progress = ProgressBook(store, metrics)
        app = BodyLimits(create_app(store, config, hub, metrics, artifacts, progress), timeout=config.body_timeout)
        try:
            async with trio.open_nursery() as nursery:
                asgi = cast("ASGIFramework", app)  # an ASGI app; Starlette's annotations differ from hypercorn's
                urls: list[str] = await nursery.start(partial(hypercorn.trio.serve, asgi, http))
                await nursery.start(hub.serve_wake_ups, store)
                nursery.start_soon(keep_house, store, hub, config, metrics, artifacts)
                # At least twice per heartbeat interval, so a node gone silent (three
                # beats) has its jobs' progress stored before they are handed back.
                nursery.start_soon(serve_progress_flush, progress, min(FLUSH_INTERVAL_S, config.heartbeat_interval / 2))
                task_status.started(urls[0])
        finally:
            await flush_on_exit(progress)


async def _main(config: MasterConfig) -> None:
    # Install the handlers before serving, so a signal during start-up is not lost.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_master, config)
            log.info("Master listening on %s", url)
            if not config.api_key and not _is_loopback(config.host):
                log.warning(
                    "No API key (--api-key or --api-key-file) and listening on %s: anyone who can reach "
                    "this address can submit, cancel and read jobs, and register nodes",
                    config.host,
                )
            if config.allow_legacy_agents:
                log.warning(
                    "--allow-legacy-agents: node routes accept the shared API key, so any key holder "
                    "can post heartbeats, progress and results for any node"
                )
            async for signum in signals:
                log.info("Received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``; a name other than localhost might not be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_open_file_limit() -> None:
    """Raise the soft limit on open files to the hard one, as Go programs do at start.

    Each client connection is a file; the usual soft limit of 1024 would let a few
    hundred slow clients plus the agents exhaust it, and then even ``/health`` waits.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _tune_garbage_collection() -> None:
    """Collect cycles less often (:data:`GC_YOUNG_THRESHOLD`), and never walk what start-up made again.

    Fewer young collections promote fewer short-lived objects (a request's, caught alive) into the
    oldest generation, whose growth is what triggers a full collection. The code and data loaded at
    start live as long as the process, so they are frozen out of every collection.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def run_master(config: MasterConfig) -> int:
    """Run the master until SIGINT or SIGTERM; the exit code for the CLI.

    Returns:
        0 after a signal; 2, a configuration to change, when the database
        cannot be opened, the TLS files do not load or the address cannot be
        bound, after one line saying which flag to change.

    Raises:
        Any other error, unchanged: it is a bug, and its traceback helps.
    """
    _raise_open_file_limit()
    _tune_garbage_collection()
    try:
        trio.run(_main, config)
    except (StoreError, ConfigError, OSError, BaseExceptionGroup) as error:
        # Start-up errors arrive wrapped in the groups of hypercorn's nurseries.
        group = error if isinstance(error, BaseExceptionGroup) else BaseExceptionGroup("", [error])
        expected, rest = group.split((StoreError, ConfigError, OSError))
        if rest is not None or expected is None:
            raise
        for leaf in _leaves(expected):
            if isinstance(leaf, (StoreError, ConfigError)):
                log.error("%s", leaf)
            else:
                log.error(
                    "Cannot listen on %s: %s; another process may hold port %d: set --port (FFRTMP_PORT) to a "
                    "free port, or --host to an address of this machine",
                    _bind(config.host, config.port), getattr(leaf, "strerror", None) or leaf, config.port,
                )
        return 2
    return 0
