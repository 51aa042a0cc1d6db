"""What the dashboard learns from the writes the master accepts: a change feed, CPU loads, progress history.

Every state change of the farm reaches the master as a request that writes —
a submit, a cancel, a heartbeat, a progress report, a result — so
:class:`WatchWrites`, a middleware around the API, notes each one answered
2xx in a :class:`FarmFeed`. Pages subscribed over server-sent events
(``/ui/events``) wake on it.

Three things the store does not keep are handed to the feed by the API's
routes, from the requests they have already read, and held here, bounded:
each node's CPU load from its last heartbeat, each running job's recent
progress reports (the job page's history), and when results completed a job
(the farm's throughput). They are this master's view: behind several
masters on one PostgreSQL each sees the agents that talk to it, and a
restart starts them afresh.
"""

from __future__ import annotations

import collections

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


class WatchWrites:
    """ASGI middleware: tell ``feed`` of every request that writes and is answered 2xx."""

    def __init__(self, app: ASGIApp, feed: FarmFeed) -> None:
        self._app = app
        self._feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self._app(scope, receive, send)
            return
        status = 0

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self._app(scope, receive, watching_send)
        if 200 <= status < 300:
            self._feed.note_change()
