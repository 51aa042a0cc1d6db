"""The agent's own HTTP endpoints: /metrics, /health, /ready and /jobs.

``/health`` is liveness: it answers while the event loop runs. ``/ready`` is
readiness: 503 with the reasons while the agent should not get work.
"""

from __future__ import annotations

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
    """
    config = hypercorn.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    config.accesslog = None
    config.errorlog = None
    await hypercorn.trio.serve(
        app, config, shutdown_trigger=shutdown_trigger, task_status=task_status  # type: ignore[arg-type]
    )
