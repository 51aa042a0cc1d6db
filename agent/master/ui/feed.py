"""What the dashboard learns from the writes the master accepts: a change feed, CPU loads, progress history.

Every state change of the farm reaches the master as a request that writes —
a submit, a cancel, a heartbeat, a progress report, a result — so
:class:`WatchWrites`, a middleware around the API, notes each one answered
2xx in a :class:`FarmFeed`. Pages subscribed over server-sent events
(``/ui/events``) wake on it, and the master's handlers stay as they are.

Three things the store does not keep are taken from the small bodies of
those requests and held here, bounded: each node's CPU load from its last
heartbeat, each running job's recent progress reports (the job page's
history), and when results completed a job (the farm's throughput). They
are this master's view: behind several masters on one PostgreSQL each sees
the agents that talk to it, and a restart starts them afresh.
"""

from __future__ import annotations

import collections
import json
import re
import time

import attrs
import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...models import HeartbeatReport, JobProgress, JobResult, JobStatus

__all__ = ["HISTORY_POINTS", "THROUGHPUT_WINDOW_S", "FarmFeed", "ProgressPoint", "WatchWrites"]

# One point a second: the last five minutes of a job, enough to see it speed up or stall.
HISTORY_POINTS = 300
# Jobs with a history kept; the oldest is forgotten past it (a finished job's history goes with it).
HISTORY_JOBS = 500
# Completed jobs per this window make the farm's throughput.
THROUGHPUT_WINDOW_S = 600.0
# Heartbeats, progress reports and results are a few hundred bytes; more is not one of them.
_BODY_LIMIT = 16 * 1024
_HEARTBEAT = re.compile(r"/nodes/(?P<ref>[^/]+)/heartbeat")
_PROGRESS = re.compile(r"/jobs/(?P<ref>[^/]+)/progress")
_READS = ("GET", "HEAD", "OPTIONS")


@attrs.frozen
class ProgressPoint:
    """One progress report of a job as this master received it (``at``: seconds since the epoch)."""

    at: float
    percent: float
    fps: float
    speed: float


class FarmFeed:
    """A change counter pages wait on, and the farm facts the store does not keep."""

    def __init__(self) -> None:
        self.version = 0
        self._changed = trio.Event()
        self.cpu_load: dict[str, float] = {}
        self._history: collections.OrderedDict[str, collections.deque[ProgressPoint]] = collections.OrderedDict()
        self._completed: collections.deque[float] = collections.deque()

    def note_change(self) -> None:
        """Something in the farm changed: wake every waiting page."""
        self.version += 1
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_change(self, seen: int) -> int:
        """Return the version once it is past ``seen`` (at once if it is already)."""
        while self.version <= seen:
            await self._changed.wait()
        return self.version

    def note_heartbeat(self, node_id: str, report: HeartbeatReport) -> None:
        # A measured load is never exactly 0.0; that is the field's default, sent by agents that do not measure it.
        if report.cpu_load_percent > 0:
            self.cpu_load[node_id] = report.cpu_load_percent

    def note_progress(self, job_ref: str, report: JobProgress, at: float) -> None:
        points = self._history.get(job_ref)
        if points is None:
            points = self._history[job_ref] = collections.deque(maxlen=HISTORY_POINTS)
            while len(self._history) > HISTORY_JOBS:
                self._history.popitem(last=False)
        points.append(ProgressPoint(at, report.progress, report.fps, report.speed))

    def note_result(self, result: JobResult, at: float) -> None:
        if result.status is JobStatus.COMPLETED:
            self._completed.append(at)
        self._drop_old_completions(at)

    def history(self, job_id: str) -> list[ProgressPoint]:
        """The job's recent progress reports, oldest first; empty when this master has seen none."""
        return list(self._history.get(job_id, ()))

    def completed_recently(self, now: float) -> int:
        """Jobs completed within :data:`THROUGHPUT_WINDOW_S` before ``now``, by results sent to this master."""
        self._drop_old_completions(now)
        return len(self._completed)

    def _drop_old_completions(self, now: float) -> None:
        while self._completed and self._completed[0] < now - THROUGHPUT_WINDOW_S:
            self._completed.popleft()

    def note_write(self, method: str, path: str, body: bytes) -> None:
        """A write answered 2xx: take what the dashboard keeps from its body, then wake the pages."""
        now = time.time()
        try:
            data = json.loads(body) if body else None
            if (match := _HEARTBEAT.fullmatch(path)) and data is not None:
                self.note_heartbeat(match["ref"], HeartbeatReport.from_json(data))
            elif match := _PROGRESS.fullmatch(path):
                self.note_progress(match["ref"], JobProgress.from_json(data), now)
            elif path == "/results" and method == "POST":
                self.note_result(JobResult.from_json(data), now)
        except ValueError:
            pass  # the handler accepted it; a body we cannot read only costs the dashboard a detail
        self.note_change()


def _wants_body(method: str, path: str) -> bool:
    return method == "POST" and (
        path == "/results" or _HEARTBEAT.fullmatch(path) is not None or _PROGRESS.fullmatch(path) is not None
    )


class WatchWrites:
    """ASGI middleware: tell ``feed`` of every request that writes and is answered 2xx.

    Reads pass untouched; the bodies of heartbeats, progress reports and
    results are copied as the handler reads them (at most 16 KiB each).
    """

    def __init__(self, app: ASGIApp, feed: FarmFeed) -> None:
        self._app = app
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self._app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        body = bytearray()
        status = 0

        async def copying_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _BODY_LIMIT:
                body.extend(message.get("body", b""))
            return message

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self._app(scope, copying_receive if _wants_body(method, path) else receive, watching_send)
        if 200 <= status < 300:
            self._feed.note_write(method, path, bytes(body) if len(body) <= _BODY_LIMIT else b"")

