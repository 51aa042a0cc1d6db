"""A simulated farm against a real master: the largest farm it serves at p99 claim latency under 100 ms.

Usage (from the repository root; needs the ``[bench]`` extra, ``pip install '.[bench]'``)::

    python -m bench.farm_sim                                  # a short ramp, about 2 minutes
    python -m bench.farm_sim --agents 50,100,200,500,1000 --slots 4 --job-seconds 30
    python -m bench.farm_sim --postgres postgresql://user@host/db --masters 2
    python bench/farm_sim.py --help

The master is real: ``python -m agent master`` as a process of its own, on a
fresh SQLite file, or (``--postgres``) one or more masters sharing a
PostgreSQL database, the simulated agents split evenly between them. The
agents are simulated, all in this one trio process, and speak the real
protocol (the agent's routes, bodies and node tokens): register (node
token), heartbeat listing the jobs they hold, long-poll claims
(``GET /jobs/next?wait=N``) one at a time, each for a free slot, as the
agent's poller claims (without its prefetch), progress every
``--progress-interval`` while a stub job runs (a ``trio.sleep``, no process),
then the result; and, as the agent does, each holds its node's event
channel (``WS /nodes/{id}/events``, counting what is pushed on it; not with
``--no-events``). A submitter keeps the queue fed, so a claim never waits
for work and its time is the master's.

The simulated agents talk through :class:`bench._keepalive.KeptAlive`, HTTP/1.1
on kept-alive sockets with the request bytes built by hand, not the agent's
own client (httpx and the wire types): that costs a few times less CPU per
request, and the simulator shares the machine's cores with the master it
measures. Each agent holds a connection per slot (its jobs' progress and
results), one for its claims and one for its heartbeat, so the master sees
about as many connections as a real farm of that size would open.

The ramp grows one farm: each step adds agents, lets their staggered slots
reach a steady rate for one job length, then measures for ``--window``
seconds: requests/s by route (the master's ``/metrics`` histogram counts,
before and after), claim latency p50/p99 (measured by the agents, claims that
returned a job), master CPU, memory and open connections (psutil), and the
master's CPU per running job: its CPU milliseconds per second divided by the
jobs the agents held on average over the window. The ramp stops after the
first step whose p99 is over the bar. The simulator shares the machine's
cores with the master, so its own CPU is reported beside it.

Writes ``<name>.json``, ``.csv`` (one row per step), ``.md`` and ``.png`` into
``--out``, by default a new ``bench-results/<name>-<date>-<time>/``. A missed
goal exits 1 only with ``--check``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import logging
import math
import random
import resource
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file too: import this checkout

import attrs
import httpx
import psutil
import trio
from prometheus_client.parser import text_string_to_metric_families

from agent.models import HeartbeatReport, JobRequest, NodeRegistered, NodeRegistration
from agent.worker.events import listen_events
from agent.worker.lifecycle import PROGRESS_INTERVAL_S
from bench._farm import checkout_path, positive_seconds, require_running
from bench._keepalive import KeptAlive, ProtocolError
from bench._report import (
    GOALS_NOTE,
    add_output_flags,
    fresh_out_dir,
    goal,
    goal_line,
    goals_exit_code,
    machine,
    markdown_table,
    median,
    percentile,
    revision,
    say,
    work_directory,
    write_outputs,
)
from tests.support import REPO, Processes, RunningProcess, start_master

# Every job is the same small one: the simulated agent ignores what it asks for.
REQUEST = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 1}})
# The long-poll a free slot asks for; a fed queue answers long before it ends.
LONG_POLL_S = 5
# A failed call (503 from the master's body limit, a timeout) is tried again after this, as an agent backs off.
RETRY_AFTER_S = 1.0
# Registrations sent at once while a step adds agents: a burst of hundreds would meet the body limit.
REGISTRATIONS_AT_ONCE = 32
# Tasks submitting jobs; a few, so the queue keeps up with a large farm on a slow master.
SUBMITTERS = 4
# Pending jobs kept beyond this share of the farm's slots (and at least the minimum).
BACKLOG_PER_SLOT, BACKLOG_MIN = 0.5, 32
# How often the master's memory and connections are read during a window.
SAMPLE_EVERY_S = 1.0
BAR_P99_S = 0.100
BAR_AGENTS = 1000
HISTOGRAM = "ffrtmp_master_request_seconds"
# The bench's own scrapes of /metrics are no part of the farm's load.
OWN_ROUTE = "GET /metrics"

COLUMNS = ("agents", "slots", "claims/s", "claim p50 ms", "claim p99 ms", "empty claims", "failed calls",
           "requests/s", "pushed events/s", "master CPU %", "running jobs", "master CPU ms/s per running job", "master RSS MiB",
           "connections", "simulator CPU %", "p99 held")


@attrs.define
class Tally:
    """What the simulated agents saw; latencies and counts only while a window is open."""

    claimed_total: int = 0
    window_open: bool = False
    claim_latencies_s: list[float] = attrs.field(factory=list)
    empty_claims: int = 0
    completed: int = 0
    events_received: int = 0
    failures: collections.Counter[str] = attrs.field(factory=collections.Counter)

    def open_window(self) -> None:
        self.window_open = True
        self.claim_latencies_s, self.empty_claims, self.completed, self.events_received = [], 0, 0, 0
        self.failures = collections.Counter()

    def claimed(self, seconds: float) -> None:
        self.claimed_total += 1
        if self.window_open:
            self.claim_latencies_s.append(seconds)

    def empty(self) -> None:
        self.empty_claims += self.window_open

    def done(self) -> None:
        self.completed += self.window_open

    def pushed(self) -> None:
        self.events_received += self.window_open

    def failed(self, failure: CallFailed) -> None:
        if self.window_open:
            self.failures[str(failure)] += 1


class CallFailed(Exception):
    """A simulated agent's request did not succeed; the message is its tally key (``claim: HTTP 503``)."""


async def call(connection: KeptAlive, what: str, request: bytes) -> Any:
    """Send one request; its decoded JSON body on 2xx.

    Raises:
        CallFailed: any other answer (409 when a lease was lost), or a broken connection.
    """
    try:
        status, body = await connection.send(request)
    except ProtocolError as exc:
        raise CallFailed(f"{what}: {type(exc).__name__}") from exc
    if not 200 <= status < 300:
        raise CallFailed(f"{what}: HTTP {status}")
    return json.loads(body) if body else None


@attrs.define
class SimAgent:
    """One simulated agent: a heartbeat, and one claim loop that claims for a free slot, as the agent's poller does.

    Each slot has a connection for the progress and result of the jobs it
    runs; the claims have one of their own, and so has the heartbeat.
    """

    node_id: str
    token: str
    address: tuple[str, int]
    slots: int
    job_s: float
    progress_s: float
    heartbeat_s: float
    tally: Tally
    events: bool
    active: set[str] = attrs.field(factory=set)

    async def serve(self) -> None:
        """Beat and work (and hold the event channel) until cancelled."""
        slots = [self._connection() for _ in range(self.slots)]
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._beat)
                if self.events:
                    nursery.start_soon(self._listen)
                nursery.start_soon(self._poll, slots, nursery)
        finally:
            with trio.CancelScope(shield=True):
                for slot in slots:
                    await slot.aclose()

    def _connection(self) -> KeptAlive:
        return KeptAlive(*self.address)

    async def _beat(self) -> None:
        connection = self._connection()
        try:
            await trio.sleep(random.uniform(0, self.heartbeat_s))
            while True:
                report = HeartbeatReport(active_job_ids=sorted(self.active), max_concurrent_jobs=self.slots)
                body = json.dumps(report.to_json()).encode()
                try:
                    await call(connection, "heartbeat", connection.prepared(
                        "POST", f"/nodes/{self.node_id}/heartbeat", self.token, body))
                except CallFailed as exc:
                    self.tally.failed(exc)
                await trio.sleep(self.heartbeat_s)
        finally:
            with trio.CancelScope(shield=True):
                await connection.aclose()

    async def _listen(self) -> None:
        """Hold the node's event channel with the agent's own listener, counting what the master pushes on it.

        The listener also reports a wake-up of its own on each (re)connection; the
        agents connect while a step settles, before its window opens.
        """
        host, port = self.address
        await listen_events(f"http://{host}:{port}", self.node_id, lambda _: self.tally.pushed(), api_key=self.token)

    async def _poll(self, slots: list[KeptAlive], jobs: trio.Nursery) -> None:
        """Take a free slot, long-poll until a job comes, run it in that slot; one claim at a time."""
        free_slots, slot_freed = trio.open_memory_channel[KeptAlive](len(slots))
        for slot in slots:
            # Staggered over one job length, so a step's load arrives at its steady rate, not as one burst.
            jobs.start_soon(self._free_after, random.uniform(0, self.job_s), slot, free_slots)
        connection = self._connection()
        claim = connection.prepared("GET", f"/jobs/next?node_id={self.node_id}&wait={LONG_POLL_S}", self.token)
        try:
            while True:
                slot = await slot_freed.receive()
                job_id = await self._claim(connection, claim)
                self.active.add(job_id)
                jobs.start_soon(self._run_in, slot, job_id, free_slots)
        finally:
            with trio.CancelScope(shield=True):
                await connection.aclose()

    async def _claim(self, connection: KeptAlive, claim: bytes) -> str:
        """Long-poll until a job is leased; its id."""
        while True:
            asked = trio.current_time()
            try:
                job = (await call(connection, "claim", claim))["job"]
            except CallFailed as exc:
                self.tally.failed(exc)
                await trio.sleep(RETRY_AFTER_S)
                continue
            if job is not None:
                self.tally.claimed(trio.current_time() - asked)
                return str(job["id"])
            self.tally.empty()

    @staticmethod
    async def _free_after(delay: float, slot: KeptAlive, free_slots: trio.MemorySendChannel[KeptAlive]) -> None:
        await trio.sleep(delay)
        free_slots.send_nowait(slot)

    async def _run_in(self, slot: KeptAlive, job_id: str, free_slots: trio.MemorySendChannel[KeptAlive]) -> None:
        """Run the job on its slot's connection, then free the slot."""
        try:
            await self._run(slot, job_id)
        except CallFailed as exc:  # 409: the lease was lost, the master gave the job to another node
            self.tally.failed(exc)
            await trio.sleep(RETRY_AFTER_S)
        finally:
            self.active.discard(job_id)
        free_slots.send_nowait(slot)

    async def _run(self, connection: KeptAlive, job_id: str) -> None:
        """The stub job: progress every ``progress_s`` until ``job_s`` has passed, then the result."""
        end = trio.current_time() + self.job_s
        while self.progress_s > 0 and (left := end - trio.current_time()) > self.progress_s:
            await trio.sleep(self.progress_s)
            done = 100 * (1 - (left - self.progress_s) / self.job_s)
            body = json.dumps({"node_id": self.node_id, "progress": done, "fps": 30.0, "speed": 1.0}).encode()
            await call(connection, "progress", connection.prepared("POST", f"/jobs/{job_id}/progress", self.token, body))
        await trio.sleep_until(end)
        result = json.dumps({"job_id": job_id, "node_id": self.node_id, "status": "completed", "progress": 100.0})
        await call(connection, "result", connection.prepared("POST", "/results", self.token, result.encode()))
        self.tally.done()


@attrs.frozen
class MasterReading:
    """A master's request counts by route (``"GET /jobs/next"``) and histogram sums, and its CPU seconds."""

    counts: dict[str, float]
    sums: dict[str, float]
    cpu_s: float


@attrs.define
class SimMaster:
    running: RunningProcess
    url: str
    http: httpx.AsyncClient

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host, int(port)

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.running.process.pid)

    async def read(self) -> MasterReading:
        text = (await self.http.get("/metrics")).text
        counts: dict[str, float] = {}
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != HISTOGRAM:
                continue
            for sample in family.samples:
                route = f"{sample.labels.get('method')} {sample.labels.get('route')}"
                if route == OWN_ROUTE:
                    continue
                if sample.name == f"{HISTOGRAM}_count":
                    counts[route] = sample.value
                elif sample.name == f"{HISTOGRAM}_sum":
                    sums[route] = sample.value
        times = self.process.cpu_times()
        return MasterReading(counts, sums, times.user + times.system)

    def sample(self) -> tuple[int, int]:
        """Resident memory in bytes and established TCP connections."""
        process = self.process
        connections = process.net_connections(kind="tcp")
        return process.memory_info().rss, sum(conn.status == psutil.CONN_ESTABLISHED for conn in connections)

    def check_alive(self) -> None:
        require_running(self.running, f"the master at {self.url}")


@attrs.define
class Farm:
    """The masters, the simulated agents added so far, and the submitter keeping the queue fed."""

    args: argparse.Namespace
    masters: list[SimMaster]
    nursery: trio.Nursery
    tally: Tally = attrs.field(factory=Tally)
    agents: list[SimAgent] = attrs.field(factory=list)
    # The farm size the queue is fed for: the step being grown to.
    planned_agents: int = 0
    submitted: int = 0

    async def grow(self, total: int) -> None:
        """Register agents up to ``total`` and start them; registrations go a few at a time."""
        limiter = trio.CapacityLimiter(REGISTRATIONS_AT_ONCE)
        async with trio.open_nursery() as registering:
            for index in range(len(self.agents), total):
                registering.start_soon(self._add, index, limiter)

    async def _add(self, index: int, limiter: trio.CapacityLimiter) -> None:
        master = self.masters[index % len(self.masters)]
        connection = KeptAlive(*master.address)
        body = json.dumps(NodeRegistration(address=f"sim-{index:05d}", cpu_threads=self.args.slots).to_json())
        register = connection.prepared("POST", "/nodes/register", "", body.encode())
        async with limiter:
            while True:
                try:
                    registered = NodeRegistered.from_json(await call(connection, "register", register))
                    break
                except CallFailed as exc:
                    self.tally.failed(exc)
                    await trio.sleep(RETRY_AFTER_S)
        await connection.aclose()
        agent = SimAgent(registered.node.id, registered.node_token, master.address, self.args.slots,
                         self.args.job_seconds, self.args.progress_interval, self.args.heartbeat_interval,
                         self.tally, self.args.events)
        self.agents.append(agent)
        self.nursery.start_soon(agent.serve)

    def running_jobs(self) -> int:
        return sum(len(agent.active) for agent in self.agents)

    def backlog_target(self) -> int:
        slots: int = self.planned_agents * self.args.slots
        return max(BACKLOG_MIN, math.ceil(BACKLOG_PER_SLOT * slots))

    def backlog(self) -> int:
        return self.submitted - self.tally.claimed_total

    async def submit(self, index: int) -> None:
        """Keep the queue ``backlog_target`` jobs ahead of the claims, until cancelled."""
        connection = KeptAlive(*self.masters[index % len(self.masters)].address)
        request = connection.prepared("POST", "/jobs", "", json.dumps(REQUEST.to_json()).encode())
        while True:
            if self.backlog() >= self.backlog_target():
                await trio.sleep(0.02)
                continue
            self.submitted += 1
            try:
                await call(connection, "submit", request)
            except CallFailed as exc:
                self.submitted -= 1
                self.tally.failed(exc)
                await trio.sleep(RETRY_AFTER_S)

    async def measure(self, agents: int) -> dict[str, Any]:
        """Feed the queue for ``agents``, grow to them, let them settle for one job length, then measure a window.

        The queue is fed first: a slot that found it empty would wait for a
        submit, and slots that start together end together, so the staggered
        starts would bunch into bursts that the window may miss or catch.
        """
        self.planned_agents = agents
        while self.backlog() < self.backlog_target():
            await trio.sleep(0.05)
        await self.grow(agents)
        await trio.sleep(self.args.job_seconds)
        myself = psutil.Process()
        # The simulator's own garbage collections would stall every simulated agent at once (a full one
        # over a thousand agents' connections takes a few hundred milliseconds) and count as claim
        # latency: one is made now, and none during the window.
        gc.collect()
        gc.disable()
        before = [await master.read() for master in self.masters]
        own_before = sum(myself.cpu_times()[:2])
        self.tally.open_window()
        peaks = [0, 0]
        running: list[int] = []
        started = trio.current_time()
        with trio.move_on_after(self.args.window):
            while True:
                for master in self.masters:
                    master.check_alive()
                samples = [master.sample() for master in self.masters]
                peaks = [max(peaks[0], sum(s[0] for s in samples)), max(peaks[1], sum(s[1] for s in samples))]
                running.append(self.running_jobs())
                await trio.sleep(SAMPLE_EVERY_S)
        self.tally.window_open = False
        gc.enable()
        seconds = trio.current_time() - started
        own_cpu = sum(myself.cpu_times()[:2]) - own_before
        after = [await master.read() for master in self.masters]
        return _step(self, agents, seconds, before, after, own_cpu, peaks, statistics.fmean(running or [0]))


def _step(farm: Farm, agents: int, seconds: float, before: Sequence[MasterReading],
          after: Sequence[MasterReading], own_cpu_s: float, peaks: list[int], running: float) -> dict[str, Any]:
    counts: collections.defaultdict[str, float] = collections.defaultdict(float)
    sums: collections.defaultdict[str, float] = collections.defaultdict(float)
    for old, new in zip(before, after, strict=True):
        for route, count in new.counts.items():
            counts[route] += count - old.counts.get(route, 0.0)
            sums[route] += new.sums.get(route, 0.0) - old.sums.get(route, 0.0)
    tally = farm.tally
    latencies = tally.claim_latencies_s
    master_cpu_percent = 100 * sum(n.cpu_s - o.cpu_s for o, n in zip(before, after, strict=True)) / seconds
    p99 = percentile(latencies, 99)
    return {
        "agents": agents, "slots": farm.args.slots, "window_s": seconds,
        "claims": len(latencies), "claims_per_s": len(latencies) / seconds, "results": tally.completed,
        "claim_p50_s": median(latencies), "claim_p99_s": p99, "claim_max_s": max(latencies, default=math.nan),
        "empty_claims": tally.empty_claims, "failed_calls": dict(tally.failures),
        "events_per_s": tally.events_received / seconds,
        "requests_per_s": {route: count / seconds for route, count in sorted(counts.items()) if count},
        "master_ms_per_request": {route: 1000 * sums[route] / count for route, count in counts.items() if count},
        "master_cpu_percent": master_cpu_percent,
        "running_jobs": running,
        "master_cpu_ms_per_s_per_running_job": 10 * master_cpu_percent / running if running else math.nan,
        "master_rss_bytes": peaks[0], "master_connections": peaks[1],
        "simulator_cpu_percent": 100 * own_cpu_s / seconds,
        "held": bool(latencies) and p99 < BAR_P99_S,
    }


async def _open_master(procs: Processes, work: Path, index: int, args: argparse.Namespace) -> SimMaster:
    home = work / f"master-{index}"
    home.mkdir()
    store = ["--db-dsn", args.postgres] if args.postgres else []
    # Safe path: this checkout's directory (the cwd) must not shadow the other one on sys.path.
    env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(args.before)} if args.before else {}
    running, url = await start_master(procs, home, *store, "--artifacts-dir", str(home / "artifacts"),
                                      "--heartbeat-interval", f"{args.heartbeat_interval:g}s", **env)
    return SimMaster(running, url, httpx.AsyncClient(base_url=url, timeout=30))


async def simulate(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        procs = Processes(nursery)
        masters: list[SimMaster] = []
        try:
            for index in range(args.masters):
                masters.append(await _open_master(procs, work, index, args))
            farm = Farm(args, masters, nursery)
            for index in range(SUBMITTERS):
                nursery.start_soon(farm.submit, index)
            for agents in args.agents:
                step = await farm.measure(agents)
                steps.append(step)
                say(f"{agents} agents x {args.slots}: {step['claims_per_s']:.1f} claims/s, claim p50 "
                     f"{1000 * step['claim_p50_s']:.1f} ms p99 {1000 * step['claim_p99_s']:.1f} ms, master CPU "
                     f"{step['master_cpu_percent']:.0f}%, {sum(step['requests_per_s'].values()):.0f} requests/s")
                if not step["held"]:
                    say(f"p99 claim latency not under {1000 * BAR_P99_S:g} ms at {agents} agents: the ramp stops")
                    break
            nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for master in masters:
                    await master.http.aclose()
            await procs.stop_all()
    return steps


def largest_held(steps: Sequence[dict[str, Any]]) -> int:
    """Agents at the last step of the unbroken run of held steps from the start; 0 if the first failed."""
    held = 0
    for step in steps:
        if not step["held"]:
            break
        held = step["agents"]
    return held


def rows(steps: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[
        step["agents"], step["slots"], step["claims_per_s"], 1000 * step["claim_p50_s"], 1000 * step["claim_p99_s"],
        step["empty_claims"], sum(step["failed_calls"].values()), sum(step["requests_per_s"].values()),
        step.get("events_per_s", 0.0), step["master_cpu_percent"], step["running_jobs"], step["master_cpu_ms_per_s_per_running_job"],
        step["master_rss_bytes"] / 2**20, step["master_connections"],
        step["simulator_cpu_percent"], "yes" if step["held"] else "no",
    ] for step in steps]


def route_rows(steps: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    routes = sorted({route for step in steps for route in step["requests_per_s"]})
    return ["agents", *routes], [[step["agents"], *(step["requests_per_s"].get(r, 0.0) for r in routes)]
                                 for step in steps]


def markdown(steps: Sequence[dict[str, Any]], bars: dict[str, Any], settings: dict[str, Any],
             host: dict[str, Any], name: str) -> str:
    store = f"PostgreSQL, {settings['masters']} masters" if settings["postgres"] else "SQLite, 1 master"
    route_columns, per_route = route_rows(steps)
    lines = [
        f"# Simulated farm: {settings['slots']} slots per agent, {settings['job_seconds']:g} s stub jobs, {store}",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), Python {host['python']}; progress every "
        f"{settings['progress_interval']:g} s, heartbeat every {settings['heartbeat_interval']:g} s, long-poll "
        f"claims (wait={LONG_POLL_S}), "
        + ("each agent holding its event channel as the agent does (pushed events/s: what they received); "
           if settings.get("events") else "no event channels; ")
        + f"{settings['window']:g} s window per step after one job length of settling. "
        "The simulator shares the cores with the master(s)"
        + (", and so does PostgreSQL, whose CPU is not in the masters' figure." if settings["postgres"] else ".")
        + " Empty claims mean the submitter fell behind and the queue ran dry: claims then waited for work too, "
        "so their latency is no longer the master's alone.",
        f"Command: `{host['command']}`, master at commit {settings['revision']}"
        + (f" (the checkout {settings['before']}; the simulator is this one's)." if settings["before"] else "."),
        "",
        f"Largest farm with p99 claim latency under {1000 * BAR_P99_S:g} ms: {largest_held(steps)} agents "
        f"x {settings['slots']} slots.",
        "",
        markdown_table(COLUMNS, rows(steps)),
        "",
        "## Requests/s by route (the master's own counts)",
        "",
        markdown_table(route_columns, per_route),
        "",
        f"![claim latency and requests by farm size]({name}.png)",
        "",
        GOALS_NOTE,
        "",
    ]
    lines += [goal_line(goal_name, result) for goal_name, result in bars.items()]
    return "\n".join(lines)


def plot(steps: Sequence[dict[str, Any]], path: Path) -> None:
    """Claim latency p50/p99 against farm size with the bar, and requests/s by route."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    agents = [step["agents"] for step in steps]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(agents, [1000 * step["claim_p50_s"] for step in steps], "o-", label="p50")
    left.plot(agents, [1000 * step["claim_p99_s"] for step in steps], "s-", label="p99")
    left.axhline(1000 * BAR_P99_S, color="grey", linestyle=":", label=f"bar {1000 * BAR_P99_S:g} ms")
    left.set_yscale("log")
    left.set_title("claim latency (ms)")
    route_columns, per_route = route_rows(steps)
    for column, route in enumerate(route_columns[1:], start=1):
        right.plot(agents, [row[column] for row in per_route], "o-", label=route)
    right.set_title("requests/s by route")
    right.set_ylim(bottom=0)
    for axes in (left, right):
        axes.set_xlabel("simulated agents")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"{text!r}: give growing whole numbers of 1 or more separated by commas")
    return values


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.farm_sim", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=_ints, default=[10, 25, 50, 100],
                        help="farm sizes of the ramp, growing (default 10,25,50,100: about 2 minutes)")
    parser.add_argument("--slots", type=int, default=4, help="job slots per simulated agent (default 4)")
    parser.add_argument("--job-seconds", type=positive_seconds, default=10.0,
                        help="length of each stub job; also the settling time of each step (default 10)")
    parser.add_argument("--progress-interval", type=float, default=PROGRESS_INTERVAL_S,
                        help=f"seconds between progress reports of a running job, as the agent sends them "
                        f"(default {PROGRESS_INTERVAL_S:g}; 0 sends none)")
    parser.add_argument("--heartbeat-interval", type=positive_seconds, default=30.0,
                        help="seconds between heartbeats, also given to the master (default 30, the agent's)")
    parser.add_argument("--window", type=positive_seconds, default=10.0, help="seconds measured per step (default 10)")
    parser.add_argument("--no-events", dest="events", action="store_false",
                        help="simulated agents do not hold the event channel (WS /nodes/{id}/events) the agent holds")
    parser.add_argument("--postgres", metavar="DSN", default="",
                        help="run the master(s) on this PostgreSQL database instead of SQLite (a throw-away one: "
                        "the run fills its queue)")
    parser.add_argument("--masters", type=int, default=1,
                        help="masters sharing --postgres, agents split between them (default 1)")
    parser.add_argument("--before", type=checkout_path, metavar="CHECKOUT",
                        help="run the master(s) of this other checkout instead of this one's, against the same "
                        "simulator (git worktree add /tmp/before <commit>)")
    add_output_flags(parser, "farm_sim")
    return parser


def _raise_open_file_limit() -> None:
    """Each simulated agent holds a few connections: the usual soft limit of 1024 would end a large farm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.masters < 1 or args.slots < 1:
        cli.error("--masters and --slots must be 1 or more")
    if args.masters > 1 and not args.postgres:
        cli.error(f"--masters {args.masters} needs --postgres DSN: masters share one queue only through PostgreSQL")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _raise_open_file_limit()
    with work_directory(prefix="ffrtmp-farm-sim-") as work:
        steps = trio.run(simulate, args, work)
    held = largest_held(steps)
    bars = {"largest_farm_held": goal(
        held, BAR_AGENTS, f"agents x {args.slots} slots served at p99 claim latency under {1000 * BAR_P99_S:g} ms "
        f"({'PostgreSQL' if args.postgres else 'SQLite'}, {args.masters} master(s)); the ramp went to "
        f"{steps[-1]['agents'] if steps else 0}",
    )}
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "check")}
    settings["postgres"] = bool(args.postgres)  # a DSN may carry a password: say only whether one was used
    settings["revision"] = revision(args.before or REPO)
    settings["before"] = str(args.before or "")
    host = machine()
    text = markdown(steps, bars, settings, host, args.name)
    out = fresh_out_dir(args.name, args.out)
    write_outputs(out, args.name, {"machine": host, "settings": settings, "largest_farm_held": held, "bars": bars,
                                   "steps": steps}, COLUMNS, rows(steps), text)
    plot(steps, out / f"{args.name}.png")
    print(text)
    print(f"wrote {out}/{args.name}.{{json,csv,md,png}}", file=sys.stderr)
    return goals_exit_code(bars, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
