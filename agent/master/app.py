"""The master's HTTP API as a Starlette application.

Routes translate between JSON and the wire types, call one store method, and
map the store's errors to statuses: :class:`~agent.master.store.NotFound` is
404, :class:`~agent.master.scheduler.Conflict` is 409, a database failure
(:class:`~agent.master.store.StoreError`) is 503, and a bad body is 400 — also
a job an agent would reject as ``user_error`` (see :mod:`.validation`).
Every error body is ``{"error": message}``, except the two 401 answers, which
are plain text as the Go master writes them. Who may call what is
:mod:`.auth`'s business: the API key for operators, each node's own token for
the routes that speak for a node. The app runs on Trio (anyio under
hypercorn), so the long-poll of ``GET /jobs/next`` waits with trio directly.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs
import prometheus_client
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive
from starlette.websockets import WebSocket

from ..config import MasterConfig
from ..models import (
    AgentEvent,
    HeartbeatReport,
    Job,
    JobProgress,
    JobRequest,
    JobResult,
    JobStatus,
    NodeRegistered,
    NodeRegistration,
    ResultAck,
    log_tail,
    utcnow,
)
from ..package import BadManifest, delivered_manifest
from ..scenarios import ARTIFACT_PREFIX
from . import scheduler
from .artifacts import (
    ArtifactStore,
    Busy,
    DigestMismatch,
    InvalidUpload,
    OffsetMismatch,
    StoreFull,
    is_sha256,
    package_files,
)
from .auth import Forbidden, Guard, LockedOut
from .events import EventHub
from .jsonbody import BodyRejected, JSONResponse, parse_body
from .metrics import MasterMetrics
from .nodeview import NodeView
from .paging import JobQuery, QueryRejected, cursor_after
from .progress import ProgressBook
from .store import NotFound, Store, StoreError
from .tokens import hash_token, new_token
from .ui import Dashboard
from .ui.feed import FarmFeed
from .validation import JobRejected, validate_request

__all__ = ["MAX_BODY_BYTES", "MAX_LONG_POLL_S", "create_app"]

log = logging.getLogger("agent.master")

# Job parameters are a few hundred bytes; a megabyte is a mistake or an attack.
MAX_BODY_BYTES = 1024 * 1024
# Longer than any agent asks for (20 s), shorter than proxies' idle timeouts (60 s).
MAX_LONG_POLL_S = 30.0
# A full queue drains at encoding speed: asking again sooner than this rarely finds room.
QUEUE_FULL_RETRY_AFTER_S = 30

# RFC 6455 close code for a refused client; the handshake then answers 403.
_POLICY_VIOLATION = 1008
_JOB_REQUEST_TYPES: dict[str, tuple[type, str]] = {
    "scenario": (str, "a string"),
    "confidence": (str, "a string"),
    "engine": (str, "a string"),
    "queue": (str, "a string"),
    "priority": (str, "a string"),
    "parameters": (dict, "a JSON object"),
}

_W = TypeVar("_W")


def create_app(
    store: Store,
    config: MasterConfig,
    hub: EventHub,
    metrics: MasterMetrics | None = None,
    artifacts: ArtifactStore | None = None,
    progress: ProgressBook | None = None,
) -> Starlette:
    """The master's API over ``store``.

    Args:
        store: where jobs and nodes live; the app neither opens nor closes it.
        config: ``api_key`` (empty: no authentication, for a trusted network or
            the one-process mode) and ``max_retries`` for new jobs.
        hub: the connected event channels; the app sends cancels and drains
            through it, :func:`~agent.master.server.serve_master` the wake-ups.
        metrics: what ``/metrics`` serves; shared with the housekeeping that
            counts expired and deleted jobs. None starts a fresh set.
        artifacts: where uploaded inputs and delivered outputs are kept
            (:mod:`.artifacts`); None serves no ``/artifacts`` routes, and jobs
            naming an artefact are refused.
        progress: where running jobs' progress waits to be written, shared
            with :func:`~agent.master.progress.serve_progress_flush`, which
            writes it. None: a book of the app's own, written only before a
            route hands jobs back.

    Returns:
        An ASGI app for hypercorn on Trio; :func:`~agent.master.server.serve_master` serves it.
    """
    metrics = metrics or MasterMetrics()
    # The web dashboard at / and /ui/...: a client of these routes in the same process (agent/master/ui).
    # The API key's and node tokens' checks, the dashboard's login among them (one count of wrong keys).
    guard = Guard(store, api_key=config.api_key, allow_legacy_agents=config.allow_legacy_agents)
    dashboard = Dashboard(store, config, guard, artifacts=artifacts is not None)
    api = _Api(store, config, hub, metrics, artifacts, progress or ProgressBook(store, metrics), dashboard.feed,
               guard)
    timed = api.metrics.timed
    # Who may call a route: anyone (OPEN), a holder of the API key (OPERATOR: the CLI,
    # and registration), or the node the request speaks for, with its token (NODE;
    # the handler checks it, as the node id may be in the path, the query or the body).
    http_routes: list[tuple[str, str, _Access, Callable[[Request], Awaitable[Response]]]] = [
        ("GET", "/health", _Access.OPEN, api.health),
        ("GET", "/metrics", _Access.OPERATOR, api.export_metrics),
        ("GET", "/nodes", _Access.OPERATOR, api.list_nodes),
        ("POST", "/nodes/register", _Access.OPERATOR, api.register_node),
        ("GET", "/nodes/{ref}", _Access.OPERATOR, api.get_node),
        ("DELETE", "/nodes/{ref}", _Access.OPERATOR, api.delete_node),
        ("POST", "/nodes/{node_id}/heartbeat", _Access.NODE, api.heartbeat),
        ("POST", "/nodes/{node_id}/deregister", _Access.NODE, api.deregister_node),
        ("POST", "/nodes/{ref}/drain", _Access.OPERATOR, api.drain_node),
        ("POST", "/nodes/{ref}/undrain", _Access.OPERATOR, api.undrain_node),
        ("GET", "/jobs", _Access.OPERATOR, api.list_jobs),
        ("POST", "/jobs", _Access.OPERATOR, api.submit_job),
        ("GET", "/jobs/next", _Access.NODE, api.next_job),
        ("GET", "/jobs/{ref}", _Access.OPERATOR, api.get_job),
        ("GET", "/jobs/{ref}/logs", _Access.OPERATOR, api.job_logs),
        ("GET", "/jobs/{ref}/attempts", _Access.OPERATOR, api.job_attempts),
        ("POST", "/jobs/{ref}/progress", _Access.NODE, api.job_progress),
        ("POST", "/jobs/{ref}/cancel", _Access.OPERATOR, api.changer(_cancel_now)),
        ("POST", "/jobs/{ref}/pause", _Access.OPERATOR, api.changer(lambda: scheduler.pause)),
        ("POST", "/jobs/{ref}/resume", _Access.OPERATOR, api.changer(lambda: scheduler.resume)),
        ("POST", "/jobs/{ref}/retry", _Access.OPERATOR, api.changer(lambda: scheduler.retry)),
        ("POST", "/results", _Access.NODE, api.record_result),
        ("DELETE", "/jobs/{ref}", _Access.OPERATOR, api.delete_job),
    ]
    if artifacts is not None:
        # The operator's key or a node's token, checked by the handler (auth.Guard.check_artifact).
        http_routes += [
            ("GET", "/artifacts/{sha256}", _Access.ARTIFACT, api.artifact_read),  # HEAD too, as Starlette routes it
            ("PATCH", "/artifacts/{sha256}", _Access.ARTIFACT, api.artifact_upload),
        ]
    routes: list[BaseRoute] = [
        Route(
            path,
            timed(method, path, api.guard.operator_only(endpoint) if access is _Access.OPERATOR else endpoint),
            methods=[method],
        )
        for method, path, access, endpoint in http_routes
    ]
    routes.append(WebSocketRoute("/nodes/{node_id}/events", api.events))
    routes += dashboard.routes()
    return Starlette(
        routes=routes,
        middleware=dashboard.middleware(),
        exception_handlers={
            HTTPException: _http_error,
            NotFound: partial(_error_response, 404),
            Forbidden: partial(_error_response, 403),
            LockedOut: _locked_out,
            scheduler.Conflict: partial(_error_response, 409),
            StoreError: partial(_error_response, 503),
        },
    )


class _Access(enum.Enum):
    OPEN = "open"
    OPERATOR = "operator"
    NODE = "node"
    ARTIFACT = "artifact"


def _cancel_now() -> Callable[[Job], Job]:
    return partial(scheduler.cancel, now=utcnow())


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _error_response(status: int, request: Request, exc: Exception) -> Response:
    return _error(status, str(exc))


async def _locked_out(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LockedOut)
    return _error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, exc.headers)  # Retry-After, Connection: close


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
        return parse_body(body)
    except BodyRejected as exc:
        raise HTTPException(400, str(exc)) from None


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


def _log_handed_back(jobs: list[Job]) -> None:
    for job in jobs:
        log.warning("Job %s is %s again: %s", job.id, job.status.value, job.error)


def _ack_json(ack: ResultAck) -> dict[str, Any]:
    if ack.status == "success":
        return {"status": "success"}
    return ack.to_json()


async def _wait_for_job(receive: Receive, woken: trio.Event, deadline: float) -> bool:
    """Wait until woken for a job (:mod:`.doorbell`), or the deadline; ``False`` when the client hung up.

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
            await woken.wait()
        nursery.cancel_scope.cancel()
    return not client_left


def _sha256(request: Request) -> str:
    sha256 = str(request.path_params["sha256"])
    if not is_sha256(sha256):
        raise HTTPException(400, f"{sha256[:80]!r} is not an artifact name: artifacts are named by their "
                                 "SHA-256 in lower-case hex (64 digits)")
    return sha256


def _header_number(request: Request, name: str) -> int:
    text = request.headers.get(name, "")
    if not (text.isascii() and text.isdigit()):
        raise HTTPException(400, f"an upload needs the header {name}: a whole number of bytes")
    return int(text)


def _artifact_input(request: JobRequest) -> str:
    """The SHA-256 of the job's uploaded input, ``""`` when it names none."""
    source = request.parameters.get("input")
    if isinstance(source, str) and source.startswith(ARTIFACT_PREFIX):
        return source.removeprefix(ARTIFACT_PREFIX)
    return ""


class _Api:
    """Route handlers over one store."""

    def __init__(
        self,
        store: Store,
        config: MasterConfig,
        hub: EventHub,
        metrics: MasterMetrics,
        artifacts: ArtifactStore | None,
        progress: ProgressBook,
        feed: FarmFeed,
        guard: Guard,
    ) -> None:
        self._store = store
        self._progress = progress
        self._feed = feed
        self._artifacts = artifacts
        self._config = config
        self._hub = hub
        self.metrics = metrics
        self.guard = guard
        self._nodes = NodeView(store)

    async def _explained(self, jobs: list[Job]) -> list[Job]:
        """The jobs, each pending one saying why no live node takes it (``scheduler.waiting_reason``).

        Worked out on every read from the nodes as they are now, or were at
        most a second ago (:mod:`.nodeview`); the nodes are read only when a
        job is pending. Running jobs show the progress this master holds and
        has yet to write.
        """
        jobs = [self._progress.merged(job) for job in jobs]
        if not any(job.status is JobStatus.PENDING for job in jobs):
            return jobs
        nodes = await self._nodes.nodes()
        now = utcnow()
        interval = self._config.heartbeat_interval
        return [attrs.evolve(job, waiting=scheduler.waiting_reason(job, nodes, now, interval)) for job in jobs]

    async def _explained_one(self, job: Job) -> Response:
        [explained] = await self._explained([job])
        return JSONResponse(explained.to_json())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    async def export_metrics(self, request: Request) -> Response:
        self.metrics.record_counts(await self._store.counts(), self._hub.connected)
        return Response(self.metrics.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    # --- nodes -------------------------------------------------------------------

    async def register_node(self, request: Request) -> Response:
        """Start a new incarnation of a node and hand it a fresh token; its earlier runs' leases go back.

        A registration that shows the token of the node's last run is that
        node restarted; one that does not may only take a name nobody live holds.
        """
        registration = _parse(NodeRegistration, await _read_json(request))
        await self._progress.flush()  # rare; the node's earlier runs' jobs are judged by their progress
        token = new_token()
        registered = await self._store.register_node(
            registration,
            token_hash=hash_token(token),
            heartbeat_interval=self._config.heartbeat_interval,
            trust_unproven=self._config.allow_legacy_agents and not registration.node_token,
        )
        node = registered.node
        self.guard.forget(node.id)  # the previous run's token stops working here at once
        self._hub.forget(node.id)
        self._nodes.changed()
        log.info(
            "Node %s %s as %s (run %d)",
            node.address, "registered" if registered.created else "re-registered", node.id, node.incarnation,
        )
        _log_handed_back(registered.handed_back)
        answer = NodeRegistered(node=node, node_token=token)
        return JSONResponse(answer.to_json(), status_code=201 if registered.created else 200)

    async def heartbeat(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        await self.guard.check_node(request, node_id)
        data = await _read_json(request, allow_empty=True)
        report = None if data is None else _parse(HeartbeatReport, data)
        if report is not None:
            await self._write_progress_of_unreported(node_id, report.active_job_ids)
        reply, lost = await self._store.heartbeat(node_id, report, self._config.heartbeat_interval)
        if report is not None:
            self._feed.note_heartbeat(node_id, report)
        _log_handed_back(lost)
        if reply.cancel_job_ids:
            log.info("Telling node %s to stop jobs %s", node_id, reply.cancel_job_ids)
        return JSONResponse(reply.to_json())

    async def _write_progress_of_unreported(self, node_id: str, running: list[str]) -> None:
        """Write the held progress of the node's jobs it no longer lists, before they may be handed back.

        A job that reported progress costs a retry when handed back; one that did not goes back
        free. Usually nothing is held for such a job (its result dropped it), and nothing is written.
        """
        listed = set(running)
        await self._progress.flush(lambda held: held.report.node_id == node_id and held.job_id not in listed)

    async def list_nodes(self, request: Request) -> Response:
        nodes = await self._store.list_nodes()
        return JSONResponse({"nodes": [node.to_json() for node in nodes], "count": len(nodes)})

    async def get_node(self, request: Request) -> Response:
        """One node, by id or by name (address)."""
        node = await self._store.get_node(request.path_params["ref"])
        return JSONResponse(node.to_json())

    async def delete_node(self, request: Request) -> Response:
        await self._progress.flush()
        node = await self._store.delete_node(request.path_params["ref"])
        self.guard.forget(node.id)
        self._hub.forget(node.id)
        self._nodes.changed()
        log.info("Node %s (%s) deleted; its jobs went back to the queue", node.address, node.id)
        return JSONResponse({"status": "deleted", "node_id": node.id, "address": node.address})

    async def drain_node(self, request: Request) -> Response:
        """Extension: the node finishes its jobs and gets no more until undrained, told by event or heartbeat.

        The master keeps the drain, so it holds while the agent restarts or is offline.
        """
        node = await self._store.change_node(request.path_params["ref"], scheduler.drain)
        self._nodes.changed()
        self._hub.send(node.id, AgentEvent.drain())
        log.info("Node %s (%s) is draining", node.address, node.id)
        return JSONResponse(node.to_json())

    async def undrain_node(self, request: Request) -> Response:
        """Extension: a drained node is given jobs again; woken at once when connected."""
        node = await self._store.change_node(request.path_params["ref"], scheduler.undrain)
        self._nodes.changed()
        self._hub.send(node.id, AgentEvent.job_available())
        log.info("Node %s (%s) is no longer drained", node.address, node.id)
        return JSONResponse(node.to_json())

    async def deregister_node(self, request: Request) -> Response:
        """Extension: an agent stopping cleanly says goodbye; its node is offline at once.

        Jobs still leased to it go back to the queue, as for a node gone silent,
        without the wait of three missed heartbeats.
        """
        node_id = request.path_params["node_id"]
        await self.guard.check_node(request, node_id)
        await self._write_progress_of_unreported(node_id, [])
        handed_back = await self._store.deregister_node(node_id)
        self._hub.forget(node_id)
        self._nodes.changed()
        _log_handed_back(handed_back)
        log.info("Node %s deregistered: offline until it registers again", node_id)
        return JSONResponse({"status": "offline", "node_id": node_id, "handed_back": [job.id for job in handed_back]})

    async def events(self, websocket: WebSocket) -> None:
        """Extension ``WS /nodes/{id}/events``: push events until the node hangs up.

        Only the node itself may listen (its token), on one channel: a newer
        connection replaces the older one, which is closed.
        """
        node_id = websocket.path_params["node_id"]
        try:
            await self.guard.check_node(websocket, node_id)
        except (NotFound, Forbidden, LockedOut) as refused:
            log.debug("Event channel for node %s refused: %s", node_id, refused)
            await websocket.close(code=_POLICY_VIOLATION)
            return
        await websocket.accept()
        log.debug("Node %s opened its event channel", node_id)
        with self._hub.subscribe(node_id) as events:
            async with trio.open_nursery() as nursery:

                async def until_closed() -> None:
                    while (await websocket.receive())["type"] != "websocket.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_closed)
                async for event in events:
                    await websocket.send_json(event.to_json())
        log.debug("Node %s closed its event channel", node_id)

    # --- jobs --------------------------------------------------------------------

    async def submit_job(self, request: Request) -> Response:
        job_request = _job_request(await _read_json(request))
        try:
            validate_request(job_request)
        except JobRejected as exc:
            raise HTTPException(400, str(exc)) from None
        if (sha256 := _artifact_input(job_request)) and (
            self._artifacts is None or await self._artifacts.size(sha256) is None
        ):
            raise HTTPException(
                400, f"input: artifact {sha256} is not on this master; upload the file first "
                "(ffrtmp jobs submit --input FILE uploads it and submits the job)",
            )
        pending = await self._store.count_pending()
        if pending >= self._config.max_pending_jobs:
            raise HTTPException(
                429,
                f"the queue is full: {pending} jobs are pending, the most this master takes "
                f"(--max-pending-jobs {self._config.max_pending_jobs}); submit again when agents have caught up",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )
        job = await self._store.submit(job_request, self._config.max_retries)
        # An agent's long-poll (or the push channel) woken by the submit claims it before this answer is made.
        await trio.sleep(0)
        log.info("Job %s submitted (#%d, scenario: %s)", job.id, job.sequence_number, job.scenario)
        [explained] = await self._explained([job])
        return JSONResponse(explained.to_json(), status_code=201)

    async def delete_job(self, request: Request) -> Response:
        """Extension: forget a job that is not running, and the artefacts no other job names."""
        job, orphans = await self._store.delete_job(request.path_params["ref"])
        freed = await self._artifacts.delete(orphans) if self._artifacts is not None else 0
        log.info("Job %s deleted, with %d artifacts (%d bytes) no other job names", job.id, len(orphans), freed)
        return JSONResponse({"status": "deleted", "job_id": job.id, "artifacts_deleted": orphans})

    # --- artefacts ---------------------------------------------------------------

    async def artifact_read(self, request: Request) -> Response:
        """Extension: ``GET`` streams a complete artefact, ``HEAD`` gives its size or the offset held.

        404 (with ``Upload-Offset``, the bytes of a partial upload held, 0 if none) when not complete.
        """
        assert self._artifacts is not None
        sha256 = _sha256(request)
        reading = request.method == "GET"
        await self.guard.check_artifact(request, sha256, reading=reading)
        size = await self._artifacts.size(sha256)
        if size is None:
            held = str(await self._artifacts.offset(sha256))
            if not reading:
                return Response(status_code=404, headers={"Upload-Offset": held})
            return _error(404, f"artifact {sha256} is not on this master", {"Upload-Offset": held})
        headers = {"Content-Length": str(size), "Upload-Offset": str(size)}
        if not reading:
            return Response(status_code=200, headers=headers)
        return StreamingResponse(self._artifacts.read(sha256), media_type="application/octet-stream", headers=headers)

    async def artifact_upload(self, request: Request) -> Response:
        """Extension: append the body at ``Upload-Offset`` of an artefact of ``Upload-Length`` bytes.

        Streamed to disk as it arrives. 201 when it completes the artefact (its
        SHA-256 checked), 204 with the offset held when the body ended short,
        200 when the artefact was complete already (an upload repeated); 409
        with ``Upload-Offset`` when the offset is not the one held, 422 when the
        bytes do not hash to the name, 507 when the store is full.
        """
        assert self._artifacts is not None
        sha256 = _sha256(request)
        await self.guard.check_artifact(request, sha256, reading=False)
        total = _header_number(request, "Upload-Length")
        if (size := await self._artifacts.size(sha256)) is not None:
            return JSONResponse({"sha256": sha256, "bytes": size}, headers={"Upload-Offset": str(size)})
        offset = _header_number(request, "Upload-Offset")
        try:
            appended = await self._artifacts.append(
                sha256, offset, total, request.stream(), self.metrics.artifact_bytes_received.inc
            )
        except OffsetMismatch as exc:
            return _error(409, str(exc), {"Upload-Offset": str(exc.offset)})
        except Busy as exc:
            return _error(409, str(exc))
        except InvalidUpload as exc:
            return _error(400, str(exc))
        except DigestMismatch as exc:
            log.warning("Upload of artifact %s discarded: %s", sha256, exc)
            return _error(422, str(exc))
        except StoreFull as exc:
            log.warning("Upload of artifact %s refused: %s", sha256, exc)
            return _error(507, str(exc))
        except ClientDisconnect:
            log.info("Upload of artifact %s stopped; its bytes so far are kept for a resume", sha256)
            return Response(status_code=400)  # nobody reads it
        if not appended.complete:
            return Response(status_code=204, headers={"Upload-Offset": str(appended.offset)})
        log.info("Artifact %s stored (%d bytes)", sha256, appended.offset)
        return JSONResponse({"sha256": sha256, "bytes": appended.offset}, status_code=201,
                            headers={"Upload-Offset": str(appended.offset)})

    async def list_jobs(self, request: Request) -> Response:
        """One page of jobs in submission order; ``next_cursor`` (null on the last) asks for the next."""
        try:
            query = JobQuery.from_params(request.query_params)
        except QueryRejected as exc:
            raise HTTPException(400, str(exc)) from None
        # One job more than asked for says whether another page follows.
        jobs = await self._store.list_jobs(
            query.status, node=query.node, queue=query.queue, after=query.after, limit=query.limit + 1
        )
        page = await self._explained(jobs[: query.limit])
        cursor = cursor_after(page[-1].sequence_number) if len(jobs) > query.limit else None
        return JSONResponse({"jobs": [job.to_json() for job in page], "count": len(page), "next_cursor": cursor})

    async def get_job(self, request: Request) -> Response:
        return await self._explained_one(await self._store.get_job(request.path_params["ref"]))

    async def job_logs(self, request: Request) -> Response:
        job = await self._store.get_job(request.path_params["ref"])
        return JSONResponse({"job_id": job.id, "logs": job.logs})

    async def job_attempts(self, request: Request) -> Response:
        """Extension: each ended attempt of the job, oldest first, with its node, times, outcome and error."""
        attempts = await self._store.list_attempts(request.path_params["ref"])
        return JSONResponse({"attempts": [attempt.to_json() for attempt in attempts]})

    async def _claim(self, node_id: str) -> Job | None:
        try:
            job = await self._store.claim(node_id)
        except NotFound:
            self.metrics.claims.labels("unknown_node").inc()
            raise
        self.metrics.claims.labels("empty" if job is None else "leased").inc()
        return job

    async def next_job(self, request: Request) -> Response:
        """Lease the next job; with ``wait=N``, hold the request up to N s for a submit."""
        node_id = request.query_params.get("node_id", "")
        if not node_id:
            raise HTTPException(400, "node_id query parameter is required")
        await self.guard.check_node(request, node_id)
        try:
            wait = min(MAX_LONG_POLL_S, max(0.0, float(request.query_params.get("wait", "0"))))
        except ValueError:
            raise HTTPException(400, "wait must be a number of seconds") from None
        deadline = trio.current_time() + wait
        doorbell = self._store.doorbell
        # Queued before each claim, so a job queued during the claim still wakes it.
        waiter = None
        if wait > 0:
            self._hub.note_long_poll(node_id)  # woken by its long-poll, not by pushes
            waiter = doorbell.enter(await self._nodes.node(node_id))
        try:
            while True:
                job = await self._claim(node_id)
                if job is not None or waiter is None or trio.current_time() >= deadline:
                    break
                if not await _wait_for_job(request.receive, waiter.woken, deadline):
                    return JSONResponse({"job": None})
                if not waiter.woken.is_set():
                    break  # the deadline: no job this node could take became pending, or it would have rung
                doorbell.leave(waiter, used=True)  # the claim that follows answers the wake
                waiter = doorbell.enter(waiter.node)
        finally:
            if waiter is not None:
                doorbell.leave(waiter)
        if job is not None:
            log.info("Job %s (#%d) leased to node %s", job.id, job.sequence_number, job.node_name)
        return JSONResponse({"job": job.to_json() if job is not None else None})

    async def job_progress(self, request: Request) -> Response:
        """Keep a running job's progress in memory (:mod:`.progress`); the lease is checked with a read.

        409 when the job is not leased to the node, as when it was written at once.
        """
        report = _parse(JobProgress, await _read_json(request))
        await self.guard.check_node(request, report.node_id)
        lease = await self._store.lease(request.path_params["ref"])
        self._progress.record(lease, report)
        self._feed.note_progress(lease.job_id, report, time.time())
        return JSONResponse({"status": "ok"})

    def changer(
        self, rule: Callable[[], Callable[[Job], Job]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST route applying one operator action; ``rule()`` runs per request, for its clock.

        A node that was running the job and no longer holds it is told at once
        over its event channel (and by its next heartbeat in any case).
        """

        async def change(request: Request) -> Response:
            before, job = await self._store.change_job(request.path_params["ref"], rule())
            if before.status is JobStatus.PROCESSING and job.status is not JobStatus.PROCESSING:
                self._hub.send(before.node_id, AgentEvent.cancel(job.id))
            log.info("Job %s is now %s", job.id, job.status.value)
            return await self._explained_one(job)

        return change

    async def _package_files(self, result: JobResult) -> list[str]:
        """The files of the package a completed result delivered here, to be linked to its job (none: [])."""
        manifest = delivered_manifest(result.metrics) if result.status is JobStatus.COMPLETED else ""
        if not manifest:
            return []
        try:
            if self._artifacts is None:
                raise BadManifest("this master keeps no artifacts, so it holds no package manifest")
            return await package_files(self._artifacts, manifest)
        except BadManifest as exc:
            raise HTTPException(400, f"the result of job {result.job_id} names a package: {exc}") from None

    async def record_result(self, request: Request) -> Response:
        result = _parse(JobResult, await _read_json(request))
        result.logs = log_tail(result.logs)  # the end says why it failed; the rest would only weigh on listings
        await self.guard.check_node(request, result.node_id)
        if not result.status.is_final:
            raise HTTPException(
                400, f"status must be completed, failed or canceled, not {result.status.value!r}"
            )
        try:
            outcome = await self._store.record_result(result, await self._package_files(result))
        except scheduler.Conflict:
            self.metrics.results.labels("rejected").inc()
            raise
        self._progress.forget(result.job_id)  # the result carries the attempt's last progress
        if outcome.changed:
            self._feed.note_result(result, time.time())
            label = (
                outcome.ack.status if outcome.ack.status == "retrying" else outcome.job.status.value
            )
            self.metrics.results.labels(label).inc()
            log.info(
                "Result for job %s from node %s: %s -> %s%s",
                result.job_id,
                result.node_id,
                result.status.value,
                outcome.job.status.value,
                f" ({result.failure_reason}: {result.error})" if result.error else "",
            )
        return JSONResponse(_ack_json(outcome.ack))
