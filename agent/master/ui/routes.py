"""The dashboard's routes: pages, forms, downloads and the live feed, on the master's own Starlette app.

The dashboard is a client of the master's API, in the same process: it reads
and acts through :class:`~agent.client.MasterClient` (the CLI's client) over an
in-process ASGI transport, with the operator's key, so every page shows what
the JSON routes answer and every button does what the matching CLI command
does — the same validation, scheduler rules, logs and metrics — and the JSON
routes and their auth stay exactly as they were. Only the farm totals read the
store directly, with the call ``/metrics`` makes.

Browsers authenticate with a session cookie (:mod:`.sessions`), given for the
API key at ``/ui/login``; every form that changes something carries the
session's CSRF token. Without an API key the master's routes are open to
anyone who can reach it, and so is the dashboard, but its forms still need
the token, so another site cannot make a visitor's browser act on the farm.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import jinja2
import trio
from starlette.datastructures import FormData, UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from ...client import (
    MasterClient,
    MasterError,
    MasterUnavailable,
    RequestRejected,
    StateConflict,
    StorageFull,
    UnknownToMaster,
)
from ...config import MasterConfig
from ...console import submission
from ...models import Engine, JobRequest, JobStatus, Priority, Queue, utcnow
from ...scenarios import ARTIFACT_PREFIX
from ..auth import Guard, LockedOut, client_address
from ..store import Store
from .feed import FarmFeed, WatchWrites
from .sessions import SESSION_LIFETIME_S, Session, SessionSigner
from .views import FarmTotals, JobView, NodeView, Sparkline, prefetched_ids

__all__ = ["Dashboard"]

log = logging.getLogger("agent.master")

COOKIE = "ffrtmp_session"
# Jobs on a page of the jobs list: a screenful on a laptop.
PAGE_SIZE = 50
# Running jobs the overview reads for its totals; the API's largest page.
RUNNING_READ = 1000
# Pending jobs the overview lists; the jobs page has them all.
PENDING_SHOWN = 20
# A page told of changes more often than this would only redraw what nobody can read.
MIN_UPDATE_INTERVAL_S = 1.0
# Pages are told to redraw at least this often, so "last seen" ages and changes made
# through another master on the same database show.
MAX_QUIET_S = 10.0
# The most identical jobs one submit makes, as a guard against a typo; the CLI's --count has none.
MAX_COUNT = 100
# Scenarios offered in the picker; any other name that follows the grammar may be typed.
SCENARIOS = (
    "480p30-h264", "720p30-h264", "720p60-h264", "1080p30-h264", "1080p60-h264",
    "1080p30-h265", "1080p60-h265", "4K30-h265", "480p30-vp9", "720p30-vp9",
)
_INTERNAL_URL = "http://master.internal"
_SECURITY_HEADERS = {
    # Everything the pages use comes from the master itself; nothing may frame them.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_ERROR_STATUS: tuple[tuple[type[MasterError], int], ...] = (
    (UnknownToMaster, 404), (StateConflict, 409), (StorageFull, 507), (RequestRejected, 400), (MasterUnavailable, 503),
)
_JOB_ACTIONS = ("cancel", "pause", "resume", "retry")
_NODE_ACTIONS = ("drain", "undrain")

_Handler = Callable[[Request, Session], Awaitable[Response]]
_FormHandler = Callable[[Request, Session, FormData], Awaitable[Response]]


class _FormRejected(Exception):
    """A submitted form value cannot be used; the message says which and why."""


def _safe_next(target: str) -> str:
    """``target`` if it is a path on this site, else ``/``: a redirect must not lead elsewhere."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def _status_of(error: MasterError) -> int:
    return next((status for kind, status in _ERROR_STATUS if isinstance(error, kind)), 500)


def _download_headers(name: str) -> list[tuple[bytes, bytes]]:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    quoted = urllib.parse.quote(name, safe="")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"
    return [(b"content-disposition", disposition.encode())]


def _when(moment: dt.datetime | None) -> str:
    """A stored time as the page shows it, to the second in UTC."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def _copy_and_hash(source: IO[bytes], target: Path) -> str:
    digest = hashlib.sha256()
    source.seek(0)
    with target.open("wb") as out:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


class _Forwarded(Response):
    """The answer of one of the master's own routes, streamed through: a download is never buffered."""

    def __init__(self, path: str, api_key: str, extra_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self._path = path
        self._api_key = api_key
        self._extra = extra_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"authorization", f"Bearer {self._api_key}".encode())] if self._api_key else []
        inner: Scope = {
            key: value for key, value in scope.items() if key not in ("path_params", "endpoint", "route", "router")
        }
        inner.update(method="GET", path=self._path, raw_path=self._path.encode(), query_string=b"", headers=headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                message = {**message, "headers": [*message.get("headers", []), *self._extra]}
            await send(message)

        await scope["app"](inner, receive, send_with_headers)


class Dashboard:
    """The web dashboard over one master's API and store.

    Args:
        store: read for the farm totals only (jobs by status and queue).
        config: ``api_key`` decides whether a login is needed (and signs sessions).
        guard: checks the key at login, counting wrong keys with the API's checks.
        artifacts: whether the master keeps artefacts: without them the submit
            form takes no file and outputs cannot be downloaded.
    """

    def __init__(self, store: Store, config: MasterConfig, guard: Guard, *, artifacts: bool) -> None:
        self._store = store
        self._key = config.api_key
        self._guard = guard
        self._artifacts = artifacts
        self.feed = FarmFeed()
        self._signer = SessionSigner.for_key(config.api_key)
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("agent.master.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates.filters["when"] = _when
        self._api_client: MasterClient | None = None

    def routes(self) -> list[BaseRoute]:
        static = Path(__file__).parent / "static"
        return [
            Route("/", self._page(self.overview), methods=["GET"]),
            Route("/ui", lambda request: RedirectResponse("/", status_code=303), methods=["GET"]),
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self._action(self.logout), methods=["POST"]),
            Route("/ui/jobs", self._page(self.jobs), methods=["GET"]),
            Route("/ui/submit", self._page(self.submit_form), methods=["GET"]),
            Route("/ui/submit", self._action(self.submit), methods=["POST"]),
            Route("/ui/jobs/{ref}", self._page(self.job), methods=["GET"]),
            Route("/ui/jobs/{ref}/outputs/{sha256}", self._page(self.download), methods=["GET"]),
            Route("/ui/jobs/{ref}/{action}", self._action(self.job_action), methods=["POST"]),
            Route("/ui/nodes/{ref}/{action}", self._action(self.node_action), methods=["POST"]),
            Route("/ui/events", self._page(self.events), methods=["GET"]),
            Mount("/ui/static", StaticFiles(directory=static), name="static"),
        ]

    def middleware(self) -> list[Middleware]:
        """The change feed around the whole app, so the pages hear of every write."""
        return [Middleware(WatchWrites, feed=self.feed)]

    # --- sessions, access and rendering ---------------------------------------------

    def _session(self, request: Request) -> Session | None:
        value = request.cookies.get(COOKIE)
        return self._signer.loads(value) if value else None

    def _set_session(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE, self._signer.dumps(session), max_age=SESSION_LIFETIME_S, path="/",
            secure=request.url.scheme == "https", httponly=True, samesite="strict",
        )

    def _allowed(self, session: Session | None) -> bool:
        return session is not None and (session.operator or not self._key)

    def _api(self, request: Request) -> MasterClient:
        """The master's API in this process, with the operator's key.

        One client for the app's lifetime: the transport holds no connection to close.
        """
        if self._api_client is None:
            # A client address no peer can have: these calls are the dashboard's, not 127.0.0.1's, so a
            # guesser locked out there (agent/master/guesses.py) does not lock every operator out.
            transport = httpx.ASGITransport(app=request.app, client=("dashboard", 0))
            self._api_client = MasterClient(_INTERNAL_URL, self._key, transport=transport)
        return self._api_client

    def _render(self, request: Request, session: Session, template: str, status: int = 200, **context: Any) -> Response:
        html = self._templates.get_template(template).render(
            request=request, session=session, login_needed=bool(self._key), artifacts=self._artifacts, **context
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def _error(self, request: Request, session: Session, status: int, message: str) -> Response:
        return self._render(request, session, "error.html", status, message=message)

    def _page(self, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page that needs a login when the master has a key; a visitor without a session gets one."""

        async def page(request: Request) -> Response:
            session = self._session(request)
            fresh = session is None
            if session is None:
                session = Session.new(operator=not self._key)
            if not self._allowed(session):
                if request.headers.get("x-live") or request.url.path == "/ui/events":
                    return PlainTextResponse("log in again", status_code=401, headers=_SECURITY_HEADERS)
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/ui/login?" + urllib.parse.urlencode({"next": target}), status_code=303)
            try:
                response = await handler(request, session)
            except MasterError as exc:
                response = self._error(request, session, _status_of(exc), str(exc))
            if fresh:
                self._set_session(request, response, session)
            return response

        return page

    def _action(self, handler: _FormHandler) -> Callable[[Request], Awaitable[Response]]:
        """A form that changes something: a logged-in session, and its CSRF token in the form."""

        async def action(request: Request) -> Response:
            session = self._session(request)
            form = await request.form(max_files=1, max_fields=100)
            try:
                if session is None or not session.csrf_matches(str(form.get("csrf", ""))):
                    return self._error(
                        request, session or Session.new(operator=False), 403,
                        "This form has expired or was sent from another site, so nothing was done: "
                        "reload the page and send it again.",
                    )
                if not self._allowed(session):
                    return RedirectResponse("/ui/login", status_code=303)
                return await handler(request, session, form)
            except MasterError as exc:
                return self._error(request, session or Session.new(operator=False), _status_of(exc), str(exc))
            finally:
                await form.close()

        return action

    def _page_or_live(self, request: Request, session: Session, name: str, **context: Any) -> Response:
        """The whole page, or only its live part when the page's script asks for an update."""
        live = request.headers.get("x-live") == "1"
        return self._render(request, session, f"{name}_live.html" if live else f"{name}.html", **context)

    # --- login ------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if not self._key:
            return RedirectResponse("/", status_code=303)
        session = self._session(request)
        fresh = session is None or session.operator
        if session is None or session.operator:
            session = Session.new(operator=False)
        response = self._render(
            request, session, "login.html", next=_safe_next(request.query_params.get("next", "/")), message=""
        )
        if fresh:
            self._set_session(request, response, session)
        return response

    async def login(self, request: Request) -> Response:
        """Check the key; on success a new session (never the one used before the login)."""
        if not self._key:
            return RedirectResponse("/", status_code=303)
        form = await request.form(max_files=0, max_fields=10)
        session = self._session(request)
        target = _safe_next(str(form.get("next", "/")))
        if session is None or not session.csrf_matches(str(form.get("csrf", ""))):
            session = Session.new(operator=False)
            response = self._render(
                request, session, "login.html", 403, next=target,
                message="This login form has expired or was sent from another site: enter the key again.",
            )
            self._set_session(request, response, session)
            return response
        try:
            right = self._guard.presents_key(request, str(form.get("key", "")))
        except LockedOut as locked_out:
            response = self._render(request, session, "login.html", 429, next=target,
                                    message=f"Not checked: {locked_out}.")
            response.headers["Retry-After"] = str(locked_out.retry_after)
            return response
        if not right:
            log.warning("Dashboard login refused from %s: not the API key", client_address(request))
            return self._render(
                request, session, "login.html", 401, next=target,
                message="That is not this master's API key. Use the key the master was started with "
                        "(--api-key or --api-key-file).",
            )
        response = RedirectResponse(target, status_code=303)
        self._set_session(request, response, Session.new(operator=True))
        return response

    async def logout(self, request: Request, session: Session, form: FormData) -> Response:
        response = RedirectResponse("/ui/login" if self._key else "/", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=request.url.scheme == "https", httponly=True, samesite="strict")
        return response

    # --- pages --------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        api = self._api(request)
        nodes = await api.list_nodes()
        running = (await api.list_jobs_page(status=JobStatus.PROCESSING.value, limit=RUNNING_READ)).jobs
        pending = await api.list_jobs_page(status=JobStatus.PENDING.value, limit=PENDING_SHOWN)
        totals = FarmTotals.of(await self._store.counts(), nodes, running, self.feed.completed_recently(time.time()))
        prefetched = prefetched_ids(running)
        now = utcnow()
        return self._page_or_live(
            request, session, "overview",
            totals=totals,
            nodes=[NodeView.of(node, self.feed.cpu_load.get(node.id), now, prefetched) for node in nodes],
            running=[JobView.of(job) for job in running],
            pending=[JobView.of(job) for job in pending.jobs],
            more_pending=pending.next_cursor is not None,
        )

    async def jobs(self, request: Request, session: Session) -> Response:
        wanted = {name: request.query_params.get(name, "") for name in ("status", "queue", "node", "cursor")}
        api = self._api(request)
        page = await api.list_jobs_page(limit=PAGE_SIZE, **wanted)
        filters = {name: value for name, value in wanted.items() if value and name != "cursor"}
        following = urllib.parse.urlencode({**filters, "cursor": page.next_cursor}) if page.next_cursor else ""
        return self._page_or_live(
            request, session, "jobs",
            jobs=[JobView.of(job) for job in page.jobs],
            filters=wanted,
            first_page="/ui/jobs?" + urllib.parse.urlencode(filters) if wanted["cursor"] else "",
            next_page=f"/ui/jobs?{following}" if following else "",
            statuses=[status.value for status in JobStatus],
            queues=[queue.value for queue in Queue],
            node_names=sorted(node.address for node in await api.list_nodes()),
        )

    async def job(self, request: Request, session: Session) -> Response:
        api = self._api(request)
        job = await api.get_job(request.path_params["ref"])
        return self._page_or_live(
            request, session, "job",
            view=JobView.of(job),
            attempts=await api.job_attempts(job.id),
            parameters=json.dumps(job.parameters, indent=2, sort_keys=True),
            history=Sparkline.of(self.feed.history(job.id)),
            points=len(self.feed.history(job.id)),
        )

    async def download(self, request: Request, session: Session) -> Response:
        """One output of a job, streamed from the artefact store with the job's file name."""
        job = await self._api(request).get_job(request.path_params["ref"])
        sha256 = request.path_params["sha256"]
        names = [name for name, digest in JobView.of(job).outputs if digest == sha256]
        if not names or not self._artifacts:
            raise UnknownToMaster(f"job {job.sequence_number} has no output {sha256} on this master")
        return _Forwarded(f"/artifacts/{sha256}", self._key, _download_headers(names[0]))

    async def events(self, request: Request, session: Session) -> Response:
        """Server-sent events: ``change`` whenever the farm changed, at most once a second, at least every 10 s."""

        async def changes() -> AsyncIterator[str]:
            seen = self.feed.version
            yield f"retry: 3000\n\nevent: change\ndata: {seen}\n\n"
            while True:
                await trio.sleep(MIN_UPDATE_INTERVAL_S)
                with trio.move_on_after(MAX_QUIET_S):
                    await self.feed.wait_for_change(seen)
                seen = self.feed.version
                yield f"event: change\ndata: {seen}\n\n"

        headers = {**_SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(changes(), media_type="text/event-stream", headers=headers)

    # --- forms ----------------------------------------------------------------------------

    def _submit_page(
        self, request: Request, session: Session, status: int = 200, message: str = "",
        values: Mapping[str, str] | None = None,
    ) -> Response:
        return self._render(
            request, session, "submit.html", status, message=message, values=values or {},
            scenarios=SCENARIOS, engines=[engine.value for engine in Engine],
            queues=[queue.value for queue in Queue], priorities=[priority.value for priority in Priority],
        )

    async def submit_form(self, request: Request, session: Session) -> Response:
        return self._submit_page(request, session)

    async def submit(self, request: Request, session: Session, form: FormData) -> Response:
        """Submit ``count`` jobs as ``ffrtmp jobs submit`` does, after uploading the file if one was given."""
        values = {key: value for key, value in form.items() if isinstance(value, str) and key != "csrf"}
        try:
            job_request, count = _submission(form)
            upload = form.get("file")
            if isinstance(upload, UploadFile) and upload.filename:
                if not self._artifacts:
                    raise _FormRejected("this master keeps no files (no artifact store): give an input URL instead")
                job_request.parameters["input"] = await self._upload(request, upload)
            api = self._api(request)
            jobs = [await api.submit_job(job_request) for _ in range(count)]
        except _FormRejected as exc:
            return self._submit_page(request, session, 400, str(exc), values)
        except (RequestRejected, StorageFull) as exc:
            return self._submit_page(request, session, _status_of(exc), str(exc), values)
        target = f"/ui/jobs/{jobs[0].id}" if count == 1 else "/ui/jobs?status=pending"
        return RedirectResponse(target, status_code=303)

    async def _upload(self, request: Request, upload: UploadFile) -> str:
        """Put the uploaded file in the artefact store through the API; its ``artifact:`` name."""
        with tempfile.TemporaryDirectory(prefix="ffrtmp-upload-") as directory:
            path = Path(directory) / "input"
            sha256 = await trio.to_thread.run_sync(_copy_and_hash, upload.file, path)
            await upload.close()
            await self._api(request).upload_artifact(path, sha256)
        log.info("Dashboard upload %r stored as artifact %s", upload.filename, sha256)
        return ARTIFACT_PREFIX + sha256

    async def job_action(self, request: Request, session: Session, form: FormData) -> Response:
        action = request.path_params["action"]
        if action not in _JOB_ACTIONS:
            raise UnknownToMaster(f"no job action {action!r}; the dashboard offers {', '.join(_JOB_ACTIONS)}")
        api = self._api(request)
        act = {"cancel": api.cancel_job, "pause": api.pause_job, "resume": api.resume_job, "retry": api.retry_job}
        job = await act[action](request.path_params["ref"])
        return RedirectResponse(_safe_next(str(form.get("next", f"/ui/jobs/{job.id}"))), status_code=303)

    async def node_action(self, request: Request, session: Session, form: FormData) -> Response:
        action = request.path_params["action"]
        if action not in _NODE_ACTIONS:
            raise UnknownToMaster(f"no node action {action!r}; the dashboard offers {', '.join(_NODE_ACTIONS)}")
        api = self._api(request)
        change = api.drain_node if action == "drain" else api.undrain_node
        await change(request.path_params["ref"])
        return RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)


def _submission(form: FormData) -> tuple[JobRequest, int]:
    """The job request and count a submit form asks for, built as the CLI builds ``jobs submit``'s.

    Raises:
        _FormRejected: a field is not a value the CLI would take either.
    """

    def text(name: str) -> str:
        value = form.get(name, "")
        return value.strip() if isinstance(value, str) else ""

    pairs = []
    for line in text("params").splitlines():
        key, sep, value = line.strip().partition("=")
        if line.strip() and (not sep or not key):
            raise _FormRejected(
                f"more parameters: {line.strip()!r} is not key=value; write for example preset=veryfast"
            )
        if sep:
            pairs.append((key.strip(), value.strip()))
    try:
        duration = float(text("duration")) if text("duration") else None
    except ValueError:
        raise _FormRejected(f"duration: {text('duration')!r} is not a number of seconds") from None
    count_text = text("count") or "1"
    if not (count_text.isdigit() and 1 <= int(count_text) <= MAX_COUNT):
        raise _FormRejected(f"count: {count_text!r} is not a whole number from 1 to {MAX_COUNT}")
    if not text("scenario"):
        raise _FormRejected("scenario: pick one, or type one such as 720p30-h264")
    args = argparse.Namespace(
        scenario=text("scenario"), engine=text("engine") or "auto", queue=text("queue") or "default",
        priority=text("priority") or "medium", param=pairs, duration=duration, bitrate=text("bitrate"),
    )
    if input_url := text("input"):
        args.param.append(("input", input_url))
    try:
        return submission(args), int(count_text)
    except ValueError as exc:
        raise _FormRejected(str(exc)) from None
