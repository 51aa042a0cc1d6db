"""Running the master: the store, hypercorn serving the app, and the offline-node sweep."""

from __future__ import annotations

import logging
import signal
from functools import partial
from typing import TYPE_CHECKING, cast

import hypercorn
import hypercorn.trio
import trio

from ..config import MasterConfig
from .app import create_app
from .scheduler import OFFLINE_AFTER_BEATS
from .store import Store, StoreError, open_store

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

__all__ = ["run_master", "serve_master", "sweep_offline_nodes"]

log = logging.getLogger("agent.master")

def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def sweep_offline_nodes(store: Store, heartbeat_interval: float) -> None:
    """Mark nodes offline after :data:`OFFLINE_AFTER_BEATS` missed heartbeats; runs until cancelled.

    Checking every half interval bounds the delay past the deadline to half a beat.
    """
    while True:
        await trio.sleep(heartbeat_interval / 2)
        for node in await store.mark_silent_nodes_offline(heartbeat_interval):
            log.warning(
                "Node %s (%s) silent for %d heartbeats: offline, its jobs went back to the queue",
                node.address,
                node.id,
                OFFLINE_AFTER_BEATS,
            )


async def serve_master(
    config: MasterConfig, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the master's API on ``config.host:config.port`` until cancelled.

    Opens the store (``config.db``; ``""`` in memory), serves the app with
    hypercorn, and sweeps silent nodes offline. The store is closed on the way
    out, also when cancelled.

    Args:
        config: the master's settings; ``port=0`` picks a free port.
        task_status: ``started()`` receives the bound URL, such as
            ``"http://127.0.0.1:43125"``, once the socket listens.

    Raises:
        StoreError: the database cannot be opened.
        OSError: the address cannot be bound (port in use, no such interface).

    Example::

        url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    """
    http = hypercorn.Config()
    http.bind = [_bind(config.host, config.port)]
    http.errorlog = logging.getLogger("agent.master.http")
    async with open_store(config.db) as store:
        app = create_app(store, config)
        async with trio.open_nursery() as nursery:
            asgi = cast("ASGIFramework", app)  # Starlette is one; its annotations differ
            urls: list[str] = await nursery.start(partial(hypercorn.trio.serve, asgi, http))
            nursery.start_soon(sweep_offline_nodes, store, config.heartbeat_interval)
            task_status.started(urls[0])


async def _main(config: MasterConfig) -> None:
    # Install the handlers before serving, so a signal during start-up is not lost.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve_master, config)
            log.info("Master listening on %s", url)
            async for signum in signals:
                log.info("Received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def run_master(config: MasterConfig) -> int:
    """Run the master until SIGINT or SIGTERM; the exit code for the CLI.

    Returns:
        0 after a signal; 1 when the database cannot be opened or the address
        cannot be bound, after logging why.

    Raises:
        Any other error, unchanged: it is a bug, and its traceback helps.
    """
    try:
        trio.run(_main, config)
    except (StoreError, OSError, BaseExceptionGroup) as error:
        # Start-up errors arrive wrapped in the groups of hypercorn's nurseries.
        group = error if isinstance(error, BaseExceptionGroup) else BaseExceptionGroup("", [error])
        expected, rest = group.split((StoreError, OSError))
        if rest is not None or expected is None:
            raise
        for leaf in _leaves(expected):
            if isinstance(leaf, StoreError):
                log.error("%s", leaf)
            else:
                log.error("Cannot listen on %s: %s", _bind(config.host, config.port), leaf)
        return 1
    return 0
