"""The master's HTTP API (DESIGN §3) as a Starlette application.

Routes translate between JSON and the wire types, call one store method, and
map the store's errors to statuses: :class:`~agent.master.store.NotFound` is
404, :class:`~agent.master.scheduler.Conflict` is 409, a bad body is 400.
Every error body is ``{"error": message}``, except the two 401 answers, which
are plain text as the Go master writes them. The app runs on Trio (anyio under
hypercorn), so the long-poll of ``GET /jobs/next`` waits with trio directly.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import prometheus_client
import trio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import MasterConfig
from ..models import (
    HeartbeatReport,
    Job,
    JobProgress,
    JobRequest,
    JobResult,
    JobStatus,
    NodeRegistration,
    ResultAck,
    utcnow,
)
from . import scheduler
from .store import NotFound, Store

__all__ = ["MAX_BODY_BYTES", "MAX_LONG_POLL_S", "create_app"]

log = logging.getLogger("agent.master")

# Job parameters are a few hundred bytes; a megabyte is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024
# Longer than any agent asks for (20 s), shorter than proxies' idle timeouts (60 s).
MAX_LONG_POLL_S = 30.0

_NODE_STATUSES = ("available", "busy", "offline")
_JOB_REQUEST_TYPES: dict[str, tuple[type, str]] = {
    "scenario": (str, "a string"),
    "confidence": (str, "a string"),
    "engine": (str, "a string"),
    "queue": (str, "a string"),
    "priority": (str, "a string"),
    "parameters": (dict, "a JSON object"),
}

_W = TypeVar("_W")


def create_app(store: Store, config: MasterConfig) -> Starlette:
    """The master's API over ``store``.

    Args:
        store: where jobs and nodes live; the app neither opens nor closes it.
        config: ``api_key`` (empty: no authentication, for a trusted network or
            the one-process mode) and ``max_retries`` for new jobs.

    Returns:
        An ASGI app for hypercorn on Trio; :func:`~agent.master.server.serve_master` serves it.
    """
    api = _Api(store, config)
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/nodes", api.list_nodes, methods=["GET"]),
        Route("/nodes/register", api.register_node, methods=["POST"]),
        Route("/nodes/{node_id}", api.delete_node, methods=["DELETE"]),
        Route("/nodes/{node_id}/heartbeat", api.heartbeat, methods=["POST"]),
        Route("/jobs", api.list_jobs, methods=["GET"]),
        Route("/jobs", api.submit_job, methods=["POST"]),
        Route("/jobs/next", api.next_job, methods=["GET"]),
        Route("/jobs/{ref}", api.get_job, methods=["GET"]),
        Route("/jobs/{ref}/logs", api.job_logs, methods=["GET"]),
        Route("/jobs/{ref}/progress", api.job_progress, methods=["POST"]),
        Route("/jobs/{ref}/cancel", api.changer(_cancel_now), methods=["POST"]),
        Route("/jobs/{ref}/pause", api.changer(lambda: scheduler.pause), methods=["POST"]),
        Route("/jobs/{ref}/resume", api.changer(lambda: scheduler.resume), methods=["POST"]),
        Route("/jobs/{ref}/retry", api.changer(lambda: scheduler.retry), methods=["POST"]),
        Route("/results", api.record_result, methods=["POST"]),
    ]
    middleware = [Middleware(_BearerAuth, api_key=config.api_key)] if config.api_key else []
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            HTTPException: _http_error,
            NotFound: partial(_error_response, 404),
            scheduler.Conflict: partial(_error_response, 409),
        },
    )


def _cancel_now() -> Callable[[Job], Job]:
    return partial(scheduler.cancel, now=utcnow())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _error_response(status: int, request: Request, exc: Exception) -> Response:
    return _error(status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail)


def _go_http_error(message: str, status: int) -> Response:
    """A plain-text error as Go's ``http.Error`` writes it, so Go clients read it the same."""
    return PlainTextResponse(
        message + "\n", status_code=status, headers={"X-Content-Type-Options": "nosniff"}
    )


class _BearerAuth:
    """Require ``Authorization: Bearer <api key>`` on every route but ``/health``.

    ``/health`` stays open so load balancers and orchestrators can probe without the key.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self._app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            header = Headers(scope=scope).get("authorization")
            if header is None:
                await _go_http_error("Missing Authorization header", 401)(scope, receive, send)
                return
            scheme, _, token = header.partition(" ")
            valid = scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self._key
            )
            if not valid:
                await _go_http_error("Invalid API key", 401)(scope, receive, send)
                return
        await self._app(scope, receive, send)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"request body is over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body is over {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def _read_json(request: Request, *, allow_empty: bool = False) -> Any:
    body = await _read_body(request)
    if allow_empty and not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"request body is not valid JSON: {exc}") from None


def _parse(cls: type[_W], data: Any) -> _W:
    try:
        return cls.from_json(data)  # type: ignore[attr-defined, no-any-return]
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _job_request(data: Any) -> JobRequest:
    """Check JSON types strictly first: the converter would quietly turn ``5`` into ``"5"``."""
    if isinstance(data, dict):
        for name, (kind, described) in _JOB_REQUEST_TYPES.items():
            value = data.get(name)
            if value is not None and not isinstance(value, kind):
                raise HTTPException(400, f"{name} must be {described}")
    request = _parse(JobRequest, data)
    if not request.scenario.strip():
        raise HTTPException(400, "scenario must not be empty")
    return request


def _ack_json(ack: ResultAck) -> dict[str, Any]:
    if ack.status == "success":
        return {"status": "success"}
    return ack.to_json()


async def _wait_for_job(receive: Receive, available: trio.Event, deadline: float) -> bool:
    """Wait until a job may be pending, or the deadline; ``False`` when the client hung up.

    Claiming for a client that left would lease a job nobody runs.
    """
    client_left = False
    async with trio.open_nursery() as nursery:

        async def watch_client() -> None:
            nonlocal client_left
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left = True
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_client)
        with trio.move_on_at(deadline):
            await available.wait()
        nursery.cancel_scope.cancel()
    return not client_left


class _Metrics:
    """The master's own Prometheus registry: an embedded master and agent in one process
    must not collide in the global one."""

    def __init__(self) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        self.jobs = prometheus_client.Gauge(
            "ffrtmp_master_jobs",
            "Jobs in the master's store by status.",
            ["status"],
            registry=self.registry,
        )
        self.nodes = prometheus_client.Gauge(
            "ffrtmp_master_nodes",
            "Registered nodes by status.",
            ["status"],
            registry=self.registry,
        )
        self.results = prometheus_client.Counter(
            "ffrtmp_master_results",
            "Worker results by what they did to the job.",
            ["outcome"],
            registry=self.registry,
        )


class _Api:
    """Route handlers over one store."""

    def __init__(self, store: Store, config: MasterConfig) -> None:
        self._store = store
        self._config = config
        self._metrics = _Metrics()

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    async def metrics(self, request: Request) -> Response:
        counts = await self._store.counts()
        for status in JobStatus:
            self._metrics.jobs.labels(status.value).set(counts.jobs.get(status.value, 0))
        for node_status in {*_NODE_STATUSES, *counts.nodes}:
            self._metrics.nodes.labels(node_status).set(counts.nodes.get(node_status, 0))
        return Response(
            prometheus_client.generate_latest(self._metrics.registry),
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    # --- nodes -------------------------------------------------------------------

    async def register_node(self, request: Request) -> Response:
        registration = _parse(NodeRegistration, await _read_json(request))
        node, created = await self._store.register_node(registration)
        log.info(
            "Node %s %s as %s", node.address, "registered" if created else "re-registered", node.id
        )
        return JSONResponse(node.to_json(), status_code=201 if created else 200)

    async def heartbeat(self, request: Request) -> Response:
        data = await _read_json(request, allow_empty=True)
        report = None if data is None else _parse(HeartbeatReport, data)
        reply = await self._store.heartbeat(request.path_params["node_id"], report)
        if reply.cancel_job_ids:
            log.info(
                "Telling node %s to stop jobs %s",
                request.path_params["node_id"],
                reply.cancel_job_ids,
            )
        return JSONResponse(reply.to_json())

    async def list_nodes(self, request: Request) -> Response:
        nodes = await self._store.list_nodes()
        return JSONResponse({"nodes": [node.to_json() for node in nodes], "count": len(nodes)})

    async def delete_node(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self._store.delete_node(node_id)
        log.info("Node %s deleted; its jobs went back to the queue", node_id)
        return JSONResponse({"status": "deleted", "node_id": node_id})

    # --- jobs --------------------------------------------------------------------

    async def submit_job(self, request: Request) -> Response:
        job_request = _job_request(await _read_json(request))
        job = await self._store.submit(job_request, self._config.max_retries)
        log.info("Job %s submitted (#%d, scenario: %s)", job.id, job.sequence_number, job.scenario)
        return JSONResponse(job.to_json(), status_code=201)

    async def list_jobs(self, request: Request) -> Response:
        wanted = request.query_params.get("status")
        try:
            status = JobStatus(wanted) if wanted else None
        except ValueError:
            choices = ", ".join(s.value for s in JobStatus)
            raise HTTPException(400, f"status must be one of {choices}") from None
        jobs = await self._store.list_jobs(status)
        return JSONResponse({"jobs": [job.to_json() for job in jobs], "count": len(jobs)})

    async def get_job(self, request: Request) -> Response:
        job = await self._store.get_job(request.path_params["ref"])
        return JSONResponse(job.to_json())

    async def job_logs(self, request: Request) -> Response:
        job = await self._store.get_job(request.path_params["ref"])
        return JSONResponse({"job_id": job.id, "logs": job.logs})

    async def next_job(self, request: Request) -> Response:
        """Lease the next job; with ``wait=N``, hold the request up to N s for a submit."""
        node_id = request.query_params.get("node_id", "")
        if not node_id:
            raise HTTPException(400, "node_id query parameter is required")
        try:
            wait = min(MAX_LONG_POLL_S, max(0.0, float(request.query_params.get("wait", "0"))))
        except ValueError:
            raise HTTPException(400, "wait must be a number of seconds") from None
        deadline = trio.current_time() + wait
        while True:
            # Taken before the claim, so a submit between the two still wakes us.
            available = self._store.job_available
            job = await self._store.claim(node_id)
            if job is not None or trio.current_time() >= deadline:
                break
            if not await _wait_for_job(request.receive, available, deadline):
                return JSONResponse({"job": None})
        if job is not None:
            log.info("Job %s (#%d) leased to node %s", job.id, job.sequence_number, job.node_name)
        return JSONResponse({"job": job.to_json() if job is not None else None})

    async def job_progress(self, request: Request) -> Response:
        report = _parse(JobProgress, await _read_json(request))
        change = partial(scheduler.record_progress, report=report)
        await self._store.change_job(request.path_params["ref"], change)
        return JSONResponse({"status": "ok"})

    def changer(
        self, rule: Callable[[], Callable[[Job], Job]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST route applying one operator action; ``rule()`` runs per request, for its clock."""

        async def change(request: Request) -> Response:
            job = await self._store.change_job(request.path_params["ref"], rule())
            log.info("Job %s is now %s", job.id, job.status.value)
            return JSONResponse(job.to_json())

        return change

    async def record_result(self, request: Request) -> Response:
        result = _parse(JobResult, await _read_json(request))
        if not result.status.is_final:
            raise HTTPException(
                400, f"status must be completed, failed or canceled, not {result.status.value!r}"
            )
        try:
            outcome = await self._store.record_result(result)
        except scheduler.Conflict:
            self._metrics.results.labels("rejected").inc()
            raise
        if outcome.changed:
            label = (
                outcome.ack.status if outcome.ack.status == "retrying" else outcome.job.status.value
            )
            self._metrics.results.labels(label).inc()
            log.info(
                "Result for job %s from node %s: %s -> %s%s",
                result.job_id,
                result.node_id,
                result.status.value,
                outcome.job.status.value,
                f" ({result.failure_reason}: {result.error})" if result.error else "",
            )
        return JSONResponse(_ack_json(outcome.ack))
