"""The agent's own HTTP endpoints: /metrics, /health, /ready and /jobs.

``/health`` is liveness: it answers while the event loop runs. ``/ready`` is
readiness: 503 with the reasons while the agent should not get work.
"""

from __future__ import annotations

import errno
import socket
from typing import Awaitable, Callable

import hypercorn
import hypercorn.trio
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.worker.metrics import AgentMetrics
from agent.worker.state import AgentState

# Scrapes and probes are tiny; a stuck client must not hold up shutdown.
GRACEFUL_TIMEOUT_S = 2.0


class StatusPortUnavailable(Exception):
    """The status server cannot listen on ``--metrics-host``:``--metrics-port``; the message says what to change."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        if error.errno == errno.EADDRINUSE:
            advice = (
                f"another process (a second agent?) listens on port {port}; set --metrics-port "
                "(FFRTMP_METRICS_PORT) to a free port, or 0 for any free one"
            )
        else:
            advice = (
                "check --metrics-host (FFRTMP_METRICS_HOST) and --metrics-port (FFRTMP_METRICS_PORT); "
                "ports below 1024 need privileges"
            )
        where = _bind(host, port)
        super().__init__(f"cannot serve /metrics and /health on {where}: {error.strerror or error}; {advice}")


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_socket(host: str, port: int) -> socket.socket:
    """A bound socket, so a taken port is our error, not one deep in hypercorn's nurseries."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as hypercorn sets on the sockets it binds
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StatusPortUnavailable(host, port, exc) from None
    return sock


def create_status_app(state: AgentState, metrics: AgentMetrics) -> Starlette:
    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "healthy"})

    async def ready(_: Request) -> JSONResponse:
        reasons = state.not_ready_reasons()
        return JSONResponse(
            {"ready": not reasons, "reasons": reasons, "node_id": state.node_id},
            status_code=503 if reasons else 200,
        )

    async def jobs(_: Request) -> JSONResponse:
        running = [job.to_json() for job in state.running.values()]
        return JSONResponse({"jobs": running, "count": len(running)})

    async def metrics_page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/ready", ready),
            Route("/jobs", jobs),
            Route("/metrics", metrics_page),
        ]
    )


async def serve_status(
    app: Starlette,
    host: str,
    port: int,
    shutdown_trigger: Callable[..., Awaitable[None]] | None = None,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled (or until shutdown_trigger returns).

    ``started()`` hands back the bound URLs, so port 0 works: the caller learns
    the real port and registers under it.

    Raises:
        StatusPortUnavailable: before ``started()``, when the address cannot be
            bound (the port is taken, the host is not this machine's).
    """
    config = hypercorn.Config()
    # hypercorn adopts the descriptor and closes it when it stops serving.
    config.bind = [f"fd://{_listen_socket(host, port).detach()}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None
    config.errorlog = None
    await hypercorn.trio.serve(
        app, config, shutdown_trigger=shutdown_trigger, task_status=task_status  # type: ignore[arg-type]
    )
