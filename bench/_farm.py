"""A master in the bench process and agents as processes, with the CPU time they use.

The master is the real application and store served by hypercorn, behind an
:class:`ExtensionGate` that can switch its dispatch extensions off, so one
agent build can be measured with push, with long-poll or with plain polling
(the gate answers as the original Go master does). Agents are real
``python -m agent`` processes, started by the test suite's helpers.
"""

from __future__ import annotations

import argparse
import logging
import math
import urllib.parse
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, cast

import attrs
import hypercorn
import hypercorn.trio
import psutil
import trio

from agent.client import MasterClient
from agent.config import ConfigError, MasterConfig, parse_duration
from agent.master.app import create_app
from agent.master.events import EventHub
from agent.master.store import open_store
from agent.models import Job
from tests.support import Processes, RunningProcess, start_agent

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "BenchAgent", "BenchMaster", "CpuReading", "ExtensionGate", "checkout_path", "duration_flag", "levels_flag",
    "positive_seconds", "require_running", "serve_bench_master", "start_bench_agent", "wait_until_final",
]


@attrs.define
class ExtensionGate:
    """The master's app with push and long-poll each on or off, counting the long-polls it sees.

    Off, they answer as the original Go master: the event channel is 404 and
    ``wait`` is dropped from ``GET /jobs/next``, which then answers at once.
    """

    app: ASGIApp
    push: bool = True
    long_poll: bool = True
    long_polls_seen: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.push:
            await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
            await send({"type": "websocket.http.response.body", "body": b"404 page not found\n"})
            return
        if scope["type"] == "http" and scope["path"] == "/jobs/next":
            query = urllib.parse.parse_qsl(scope["query_string"].decode())
            if any(key == "wait" for key, _ in query):
                self.long_polls_seen += 1
                if not self.long_poll:
                    kept = urllib.parse.urlencode([(k, v) for k, v in query if k != "wait"])
                    scope = {**scope, "query_string": kept.encode()}
        await self.app(scope, receive, send)


@attrs.frozen
class BenchMaster:
    url: str
    gate: ExtensionGate
    hub: EventHub


async def serve_bench_master(
    db: Path, *, push: bool = True, long_poll: bool = True,
    task_status: trio.TaskStatus[BenchMaster] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the master on 127.0.0.1 until cancelled; ``started()`` hands back its URL and gate.

    The store is SQLite in ``db``, as a master runs by default. Housekeeping
    (offline nodes, retention) is left out: it has nothing to do in a bench.
    """
    config = MasterConfig(host="127.0.0.1", port=0, db=str(db))
    http = hypercorn.Config()
    http.bind = ["127.0.0.1:0"]
    http.errorlog = logging.getLogger("bench.master.http")
    async with open_store(config.db) as store:
        hub = EventHub()
        gate = ExtensionGate(create_app(store, config, hub), push=push, long_poll=long_poll)
        async with trio.open_nursery() as nursery:
            serve = partial(hypercorn.trio.serve, cast("ASGIFramework", gate), http)
            urls: list[str] = await nursery.start(serve)
            await nursery.start(hub.serve_wake_ups, store)
            task_status.started(BenchMaster(url=urls[0], gate=gate, hub=hub))


@attrs.frozen
class CpuReading:
    """CPU seconds of an agent: its own (with the helpers still running: the guardian) and its encoders'.

    Encoders count once they have exited and been reaped, so read this when
    no job is running.
    """

    agent_s: float
    encoders_s: float

    def __sub__(self, other: CpuReading) -> CpuReading:
        return CpuReading(self.agent_s - other.agent_s, self.encoders_s - other.encoders_s)


@attrs.define
class BenchAgent:
    process: RunningProcess

    def cpu(self) -> CpuReading:
        proc = psutil.Process(self.process.process.pid)
        with proc.oneshot():
            times = proc.cpu_times()
            helpers = proc.children(recursive=True)
        own = times.user + times.system
        for helper in helpers:
            try:
                helper_times = helper.cpu_times()
            except psutil.NoSuchProcess:
                continue
            own += helper_times.user + helper_times.system
        return CpuReading(agent_s=own, encoders_s=times.children_user + times.children_system)

    def limit_changes(self) -> list[str]:
        """The ``--adaptive`` log lines, ``"1 -> 2"`` each."""
        marker = "Adaptive concurrency: "
        return [line.split(marker, 1)[1].split(" max")[0] for line in self.process.lines if marker in line]

    async def polling(self) -> None:
        """Return once the agent has registered and started its claim loop."""
        await self.process.wait_for(r"Starting job polling loop")

    async def stop(self) -> None:
        await self.process.stop()


async def start_bench_agent(
    procs: Processes, name: str, master_url: str, work_dir: Path, *flags: str, checkout: Path | None = None
) -> BenchAgent:
    """A real agent process; returns as soon as it serves its metrics, before it registers.

    The bench puts master and agent on one machine on purpose, so the agent
    is told that this is wanted. ``checkout``: run the agent of that other
    checkout (see :func:`checkout_path`) instead of this one's.
    """
    # Safe path: this checkout's directory (the cwd) must not shadow the other one on sys.path.
    env = {} if checkout is None else {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(checkout)}
    running, _ = await start_agent(
        procs, name, master_url, work_dir, "--allow-master-as-worker", "--skip-confirmation", *flags, **env
    )
    return BenchAgent(running)


def require_running(running: RunningProcess, what: str) -> None:
    """Stop the bench, with the end of its log, if ``what`` (a master, say) has exited: the figures would be void.

    Raises:
        SystemExit: the process has exited; the message names ``what``, its exit code and its last log lines.
    """
    code = running.process.returncode
    if code is not None:
        tail = "\n".join(running.lines[-20:])
        raise SystemExit(f"error: {what} exited with {code}; its log ends:\n{tail}")


# How often a run asks the master whether its jobs are done. Each question costs the
# master and this process CPU the encoders share, so it is one small read, not a listing.
DONE_POLL_S = 0.5


async def wait_until_final(client: MasterClient, ids: Sequence[str], timeout: float) -> list[Job]:
    """The jobs, once every one is final: one job read per poll, then one listing at the end.

    Raises:
        TooSlowError: not all final within ``timeout`` seconds.
    """
    waiting = list(ids)
    with trio.fail_after(timeout):
        while waiting:
            if (await client.get_job(waiting[0])).status.is_final:
                waiting.pop(0)
            else:
                await trio.sleep(DONE_POLL_S)
    wanted = set(ids)
    return [job for job in await client.list_jobs() if job.id in wanted]


def checkout_path(text: str) -> Path:
    """A ``--before`` flag: another checkout of this project, made with ``git worktree add PATH COMMIT``."""
    path = Path(text).resolve()
    if not (path / "agent" / "__main__.py").is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a checkout of this project (no agent/__main__.py); make one with "
            "git worktree add PATH COMMIT"
        )
    return path


def duration_flag(text: str) -> str:
    """An agent duration flag (``5s``, ``250ms``), checked here and passed on as written."""
    try:
        parse_duration(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def positive_seconds(text: str) -> float:
    """A flag of seconds, a number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def levels_flag(meaning: str) -> Callable[[str], list[int]]:
    """A flag of comma-separated whole numbers of 1 or more, read sorted and once each.

    ``meaning`` completes the error message, as in ``"concurrency levels of 1
    or more, such as 1,2,4,8"``.
    """
    def levels(text: str) -> list[int]:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
        if not values or values[0] < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: give {meaning}")
        return values

    return levels
