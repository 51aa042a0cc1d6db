"""Real processes for tests: the master and agents as separate OS processes.

Each process logs to stderr; a background task keeps every line, so a test
can wait for a line (the bound URL, a log message) and show the whole log
when it fails. Network rules: everything binds 127.0.0.1 and port 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, Generator, Sequence

import attrs
import httpx
import trio

from agent.client import MasterClient
from agent.config import API_KEY_ENV
from agent.models import Job, JobResult
from agent.scenarios import JobRejected
from agent.worker.jobrunner import JobRunner
from agent.worker.lifecycle import Claimed, EncoderExited, JobLife, Progressed, Report, StartEncoder
from agent.worker.progress import ProgressSnapshot

REPO = Path(__file__).resolve().parent.parent

# Start-up of a Python process with trio, httpx and hypercorn: about a second.
START_TIMEOUT_S = 20.0


@attrs.define
class RunningProcess:
    """A child process whose stderr lines are collected as they come."""

    name: str
    process: trio.Process
    lines: list[str] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    async def collect(self) -> None:
        assert self.process.stderr is not None
        pending = b""
        async for chunk in self.process.stderr:
            *done, pending = (pending + chunk).split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in done)
            self._changed.set()
            self._changed = trio.Event()
        if pending:
            self.lines.append(pending.decode(errors="replace"))
        self._changed.set()

    async def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first log line matching ``pattern``; fails with the log if none comes in time."""
        regex = re.compile(pattern)
        with trio.move_on_after(timeout):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                if self.process.returncode is not None and self._changed.is_set():
                    break
                await self._changed.wait()
        raise AssertionError(f"{self.name}: no line matching {pattern!r}; log:\n{self.log}")

    def signal(self, sig: signal.Signals) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait(self, timeout: float = 30.0) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL; used when a test ends with the process still up."""
        await stop_process(self.process, grace=15.0)


async def stop_process(process: trio.Process, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process has exited.

    A test's servers (ours, nginx, Prometheus) exit cleanly on SIGTERM well
    within ``grace``; SIGKILL is only for a hung one, so no test leaves a
    process behind. Call it shielded from the test's cancellation.
    """
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server that cannot bind port 0 and say which it got."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class Processes:
    """Starts processes for one test and stops every one of them when the test ends."""

    nursery: trio.Nursery
    started: list[RunningProcess] = attrs.field(factory=list)

    async def stop_all(self) -> None:
        """Newest first: agents stop before the master they report to."""
        with trio.CancelScope(shield=True):
            for running in reversed(self.started):
                await running.stop()


async def start_process(
    procs: Processes, name: str, args: Sequence[str], wrapper: Sequence[str] = (), **env: str
) -> RunningProcess:
    """Start ``[WRAPPER...] python -m agent ARGS`` and collect its log."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop(API_KEY_ENV, None)  # a key from the developer's shell must not leak in
    environment.update(env)
    process = await trio.lowlevel.open_process(
        [*wrapper, sys.executable, "-m", "agent", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=environment,
    )
    running = RunningProcess(name=name, process=process)
    procs.started.append(running)
    procs.nursery.start_soon(running.collect)
    return running


async def start_master(procs: Processes, tmp_path: Path, *extra: str, **env: str) -> tuple[RunningProcess, str]:
    master = await start_process(
        procs, "master",
        ["master", "--host", "127.0.0.1", "--port", "0", "--db", str(tmp_path / "master.db"), *extra],
        **env,
    )
    match = await master.wait_for(r"listening on (https?://\S+)")
    return master, match.group(1)


async def start_agent(
    procs: Processes, name: str, master_url: str, work_dir: Path, *extra: str, **env: str
) -> tuple[RunningProcess, str]:
    """An agent with its own work dir and metrics port; returns it and its status URL.

    Tests run the master on this host too, so the agent is allowed to, without a question.
    """
    agent = await start_process(
        procs, name,
        ["--master", master_url, "--metrics-host", "127.0.0.1", "--metrics-port", "0",
         "--work-dir", str(work_dir), "--heartbeat-interval", "2s",
         "--allow-master-as-worker", "--skip-confirmation", *extra],
        **env,
    )
    match = await agent.wait_for(r"Metrics and health on (http://\S+)")
    return agent, match.group(1)


_NODE_PATH = re.compile(r"/nodes/([^/]+)/(?:heartbeat|events)$")


def named_node(request: httpx.Request) -> str:
    """The node a request speaks for: in its path, its ``node_id`` query parameter or its JSON body."""
    if match := _NODE_PATH.search(request.url.path):
        return match.group(1)
    if node_id := request.url.params.get("node_id"):
        return str(node_id)
    try:
        body = json.loads(request.content or b"null")
    except ValueError:
        return ""
    return str(body.get("node_id", "")) if isinstance(body, dict) else ""


class ActAsNode(httpx.Auth):
    """Sends each node-scoped request with the token of the node it names, as that node's agent does.

    Tokens are learned from the answers to ``POST /nodes/register`` made through
    the same client, so tests written against raw routes read as before.
    """

    requires_request_body = True
    requires_response_body = True

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.get(named_node(request))
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if request.url.path.endswith("/nodes/register") and response.status_code in (200, 201):
            body = response.json()
            self.tokens[body["id"]] = body["node_token"]


def _ignore(percent: float, snapshot: ProgressSnapshot) -> None:
    pass


async def run_job(
    runner: JobRunner, job: Job, on_progress: Callable[[float, ProgressSnapshot], None] = _ignore,
    on_launch: Callable[[], None] = lambda: None,
) -> JobResult:
    """One job through the runner and its lifecycle, as a worker runs it, with no master to report to."""
    life = JobLife(job, "node-1")
    try:
        [action] = life.handle(Claimed(spec=runner.prepare(job)))
    except JobRejected as exc:
        [action] = life.handle(Claimed(rejection=str(exc)))
    if isinstance(action, StartEncoder):

        def progressed(percent: float, snapshot: ProgressSnapshot) -> None:
            life.handle(Progressed(percent, snapshot, trio.current_time()))
            on_progress(percent, snapshot)

        outcome = await runner.run(job, action.spec, progressed, trio.CancelScope(), on_launch)
        [action] = life.handle(EncoderExited(outcome))
    assert isinstance(action, Report)
    return action.result


@attrs.frozen
class Answer:
    """What a finished command said: its exit code, stdout and stderr."""

    code: int
    out: str
    err: str


async def run_command(*args: str, cwd: Path = REPO) -> Answer:
    """``python -m agent ARGS`` from ``cwd`` to its end, as a user runs it, with this checkout's code.

    The environment drops the API key and ``FFRTMP_*`` variables of the developer's shell;
    an expected failure never prints a traceback, so none may appear.
    """
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV and not key.startswith("FFRTMP_")}
    done = await trio.run_process(
        [sys.executable, "-m", "agent", *args],
        capture_stdout=True, capture_stderr=True, check=False, cwd=cwd, env=env | {"PYTHONPATH": str(REPO)},
    )
    answer = Answer(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert "Traceback" not in answer.err + answer.out, answer.err
    return answer


async def make_clip_with_audio(ffmpeg: str, path: Path, *, size: str, seconds: float) -> Path:
    """``seconds`` of a ``size`` test pattern at 25 fps with a sine tone (H.264 and AAC): an input with sound."""
    path.parent.mkdir(parents=True, exist_ok=True)
    await trio.run_process([
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-f", "lavfi", "-i", "sine=frequency=440",
        "-t", f"{seconds:g}", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path),
    ])
    return path


async def wait_for_jobs(client: MasterClient, ids: Sequence[str], timeout: float) -> list[Job]:
    """Poll the master until every job is final; fails with their states if they are not in time."""
    wanted = set(ids)
    jobs: list[Job] = []
    with trio.move_on_after(timeout):
        while True:
            jobs = [job for job in await client.list_jobs() if job.id in wanted]
            if len(jobs) == len(wanted) and all(job.status.is_final for job in jobs):
                return jobs
            await trio.sleep(0.2)
    states = {job.id: job.status.value for job in jobs}
    raise AssertionError(f"jobs not final after {timeout}s: {states}")


async def scrape_gauge(http: httpx.AsyncClient, name: str) -> float:
    """The value of an unlabelled metric on an agent's /metrics page."""
    text = (await http.get("/metrics")).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not on /metrics:\n{text}"
    return float(match.group(1))


def processes_mentioning(marker: str) -> list[int]:
    """Live processes (zombies excluded) whose command line contains ``marker``, such as a test's own tmp dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def wait_until_gone(marker: str, timeout: float) -> None:
    """Wait until no live process mentions ``marker``; fails naming the survivors."""
    with trio.move_on_after(timeout):
        while processes_mentioning(marker):
            await trio.sleep(0.1)
        return
    survivors = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in processes_mentioning(marker)}
    raise AssertionError(f"processes still running after {timeout}s: {survivors}")
