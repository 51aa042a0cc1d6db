"""The master's cost per request: claim + result cycles/s against ``GET /health``/s of the same master and clients.

Usage (from the repository root; needs the ``[bench]`` extra, ``pip install '.[bench]'``)::

    python -m bench.master_load                                  # 8 clients, 3 repeats of 5 s, about a minute
    python -m bench.master_load --before /tmp/before             # also the master of another checkout, interleaved
    python -m bench.master_load --postgres postgresql://user@host/postgres
    python bench/master_load.py --help

The master is real: ``python -m agent master`` as a process of its own, on a
fresh SQLite file (or, with ``--postgres``, a fresh database created on that
server). ``--clients`` keep-alive clients register as nodes (each gets its
node token), then, in turn:

- **health**: each loops ``GET /health`` for ``--seconds``: the cheapest
  answer the master gives, what its HTTP stack alone costs;
- **cycles**: each loops ``GET /jobs/next`` then ``POST /results`` (completed)
  for ``--seconds``, on stub jobs submitted beforehand (not timed), so every
  claim finds one. A cycle is two requests, so 0.5 cycles per health request
  is the ceiling; the gap is what a claim and a result cost beyond HTTP.

The clients speak HTTP/1.1 over one kept-alive socket each, with requests
built once, so that the client costs little and the master is what is
measured; the bench's own CPU is reported beside the master's. Repeats
interleave health and cycles (and, with ``--before``, the two masters,
which take turns in alternating order), so drift and other load on the
machine fall on both sides; medians are reported, and the ratio is the
median of each repeat's ratio. The master's CPU time per request comes from
the same phases (psutil), and says what a request costs it whatever the
client does.

``--profile`` adds, after the repeats, one more cycles phase per master,
sampled with py-spy (which slows it, so it is not in the medians): the share
of the master's CPU spent in the two routes' own work (the handlers of
``GET /jobs/next`` and ``POST /results``, with the store, the scheduler and
their JSON), the rest being the HTTP server, Starlette's layers and the event
loop, and so the ratio that routes costing nothing would reach: the CPU of a
health request over the rest of a cycle's.

``--before CHECKOUT`` measures the master of another checkout of this
repository (``git worktree add /tmp/before <commit>``) in the same run, against
its own store: before and after a change, side by side.

Writes ``<name>.json``, ``.csv`` (one row per master), ``.md`` into ``--out``,
by default a new ``bench-results/<name>-<date>-<time>/``. A missed goal exits
1 only with ``--check``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file too: import this checkout

import attrs
import httpx
import psutil
import trio

from agent.client import MasterClient
from agent.models import JobRequest, JobResult, JobStatus, NodeRegistration
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
    revision,
    say,
    work_directory,
    write_outputs,
)
from bench._sampling import RATE_HZ, Samples, SamplingError, count_under, py_spy, sampled
from tests.support import REPO, Processes, RunningProcess, start_master

# Every job is the same small one: the clients never run it, they only report it done.
REQUEST = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 1}})
BAR_RATIO = 0.4
# Jobs queued before a cycles phase: the fastest cycles/s seen so far on that master, with this margin,
# for the length of the phase. A phase that empties the queue anyway is measured until then.
QUEUE_MARGIN = 1.5
# Seconds of each warm-up phase; the first requests import and compile lazily.
WARM_UP_S = 2.0
# Submissions in flight while the queue is filled (not timed).
SUBMITTERS = 8
# No housekeeping round during a run: nodes that only claim stay online anyway.
MASTER_HEARTBEAT = "1h"
# --profile: the handlers of a cycle's two routes, whose samples are the routes' own work.
ROUTE_HANDLERS = ("next_job", "record_result")
ROUTES_MODULE = "agent/master/app.py"

CLIENTS = {
    "raw": "Clients: raw, requests built once and sent on one kept-alive HTTP/1.1 socket each, so that the master "
           "is what is measured.",
    "agent": "Clients: agent, the agent's own MasterClient (httpx, wire types decoded and encoded), as a farm "
             "speaks; its cost in this process then bounds both rates.",
}
COLUMNS = ("master", "health req/s", "cycles/s", "ratio", "master CPU ms/health", "master CPU ms/cycle",
           "master CPU % (cycles)", "bench CPU % (cycles)")


class NodeClient(Protocol):
    """A client registered as a node, doing one phase's requests."""

    async def connect(self) -> None:
        """Ready for a phase: the master has closed connections idle for a few seconds, as between phases."""

    async def health(self) -> None: ...

    async def cycle(self) -> bool:
        """Claim a job and report it completed; False when the queue was empty."""

    async def aclose(self) -> None: ...


@attrs.define
class RawNode:
    """The cheap client: requests built once, sent on a :class:`KeptAlive` connection."""

    node_id: str
    token: str
    connection: KeptAlive
    _health: bytes = attrs.field(init=False)
    _claim: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._health = self.connection.prepared("GET", "/health", "")
        self._claim = self.connection.prepared("GET", f"/jobs/next?node_id={self.node_id}", self.token)

    async def connect(self) -> None:
        await self.connection.connect()

    async def health(self) -> None:
        status, _ = await self.connection.send(self._health)
        if status != 200:
            raise ProtocolError(f"GET /health answered {status}")

    async def cycle(self) -> bool:
        status, body = await self.connection.send(self._claim)
        if status != 200:
            raise ProtocolError(f"GET /jobs/next answered {status}: {body[:200]!r}")
        job = json.loads(body)["job"]
        if job is None:
            return False
        result = json.dumps({"job_id": job["id"], "node_id": self.node_id, "status": "completed",
                             "progress": 100.0}).encode()
        status, body = await self.connection.send(self.connection.prepared("POST", "/results", self.token, result))
        if status != 200:
            raise ProtocolError(f"POST /results answered {status}: {body[:200]!r}")
        return True

    async def aclose(self) -> None:
        await self.connection.aclose()


@attrs.define
class AgentNode:
    """The agent's own client (:class:`~agent.client.MasterClient`, httpx and the wire types) and its pool."""

    client: MasterClient
    http: httpx.AsyncClient

    async def connect(self) -> None:
        pass  # the pool opens connections as it needs them

    async def health(self) -> None:
        (await self.http.get("/health")).raise_for_status()

    async def cycle(self) -> bool:
        job = await self.client.claim_next(self.client.node_id)
        if job is None:
            return False
        await self.client.send_result(JobResult(job_id=job.id, node_id=self.client.node_id,
                                                status=JobStatus.COMPLETED, progress=100.0))
        return True

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.http.aclose()


@attrs.frozen
class Phase:
    """One timed phase on one master: what was done, in how long, at what CPU."""

    kind: str
    done: int
    seconds: float
    master_cpu_s: float
    bench_cpu_s: float
    ran_dry: bool = False

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "rate": self.rate}


@attrs.define
class LoadedMaster:
    """A master process (this checkout's or the before checkout's), its registered clients and its queue."""

    label: str
    running: RunningProcess
    operator: MasterClient
    nodes: list[NodeClient]
    queued: int = 0
    phases: list[Phase] = attrs.field(factory=list)
    profile: Samples | None = None

    def cpu_s(self) -> float:
        times = psutil.Process(self.running.process.pid).cpu_times()
        return float(times.user + times.system)

    def check_alive(self) -> None:
        require_running(self.running, f"the {self.label} master")

    async def fill_queue(self, jobs: int) -> None:
        """Submit jobs until ``jobs`` are queued (untimed)."""
        missing = jobs - self.queued
        if missing <= 0:
            return

        async def submit(count: int) -> None:
            for _ in range(count):
                await self.operator.submit_job(REQUEST)

        async with trio.open_nursery() as nursery:
            for index in range(SUBMITTERS):
                nursery.start_soon(submit, missing // SUBMITTERS + (index < missing % SUBMITTERS))
        self.queued = jobs

    async def run_phase(self, kind: str, seconds: float, *, counted: bool = True) -> Phase:
        """Every client loops ``kind`` (health or cycles) for ``seconds``, or until the queue is empty.

        A phase not ``counted`` (a profiled one) stays out of :attr:`phases`.
        """
        self.check_alive()
        done = 0
        ran_dry = False
        me = psutil.Process()

        # Each client finishes the request it is in: a request cut in the middle would leave its answer
        # in the connection for the next one to read.
        async def loop(node: NodeClient) -> None:
            nonlocal done, ran_dry
            if kind == "health":
                while trio.current_time() < deadline:
                    await node.health()
                    done += 1
                return
            while trio.current_time() < deadline and not ran_dry:
                if not await node.cycle():
                    ran_dry = True
                    return
                done += 1

        # Connected afresh, untimed: the master closes connections idle for a few seconds, as between phases.
        for node in self.nodes:
            await node.connect()
        cpu_before, bench_before = self.cpu_s(), sum(me.cpu_times()[:2])
        started = trio.current_time()
        deadline = started + seconds
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(loop, node)
        elapsed = trio.current_time() - started
        phase = Phase(kind, done, elapsed, self.cpu_s() - cpu_before, sum(me.cpu_times()[:2]) - bench_before, ran_dry)
        if kind == "cycles":
            self.queued -= done
        if counted:
            self.phases.append(phase)
        return phase

    async def profile_cycles(self, seconds: float, raw: Path) -> Samples:
        """One more cycles phase, sampled with py-spy: how many samples were in the routes' handlers."""
        await self.queue_for(seconds)
        async with sampled(self.running.process.pid, seconds, raw):
            await self.run_phase("cycles", seconds, counted=False)
        return count_under(raw, ROUTE_HANDLERS, ROUTES_MODULE)

    async def queue_for(self, seconds: float) -> None:
        """Enough jobs queued for a cycles phase of ``seconds`` at the fastest rate seen, with a margin."""
        fastest = max(phase.rate for phase in self.phases if phase.kind == "cycles")
        await self.fill_queue(math.ceil(QUEUE_MARGIN * fastest * seconds) + 2 * len(self.nodes))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for node in self.nodes:
                await node.aclose()
            await self.operator.aclose()


def _database_on(server_dsn: str, label: str) -> str:
    """A fresh database on the PostgreSQL server of ``server_dsn``; its DSN."""
    import psycopg

    name = f"ffrtmp_load_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=name)


def _drop_database(server_dsn: str, dsn: str) -> None:
    import psycopg

    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def open_master(
    procs: Processes, checkout: Path, label: str, work: Path, args: argparse.Namespace
) -> AsyncIterator[LoadedMaster]:
    """A master from ``checkout`` on a store of its own, with ``args.clients`` nodes registered."""
    home = work / label
    home.mkdir()
    dsn = _database_on(args.postgres, label) if args.postgres else ""
    store = ["--db-dsn", dsn] if dsn else []  # else SQLite in home
    try:
        # Safe path: this checkout's directory (the cwd) must not shadow the other one on sys.path.
        env = {} if checkout == REPO else {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(checkout)}
        running, url = await start_master(procs, home, *store, "--artifacts-dir", str(home / "art"),
                                          "--heartbeat-interval", MASTER_HEARTBEAT, **env)
        host, _, port = url.removeprefix("http://").rpartition(":")
        nodes: list[NodeClient] = []
        for index in range(args.clients):
            client = MasterClient(url)
            await client.register(NodeRegistration(address=f"load-{index:03d}", cpu_threads=4))
            if args.client == "agent":
                nodes.append(AgentNode(client, httpx.AsyncClient(base_url=url)))
                continue
            await client.aclose()
            nodes.append(RawNode(client.node_id, client.node_token, KeptAlive(host, int(port))))
        master = LoadedMaster(label, running, MasterClient(url, timeout=60), nodes)
        try:
            yield master
        finally:
            await master.aclose()
            await running.stop()
    finally:
        if dsn:
            _drop_database(args.postgres, dsn)


async def measure(args: argparse.Namespace, work: Path) -> list[LoadedMaster]:
    sides = [("current", REPO)] + ([("before", args.before)] if args.before else [])
    async with trio.open_nursery() as nursery:
        procs = Processes(nursery)
        try:
            async with open_master(procs, sides[0][1], sides[0][0], work, args) as first:
                masters = [first]
                if len(sides) == 1:
                    await _repeats(masters, args, work)
                else:
                    async with open_master(procs, sides[1][1], sides[1][0], work, args) as second:
                        masters.append(second)
                        await _repeats(masters, args, work)
        finally:
            await procs.stop_all()
        nursery.cancel_scope.cancel()
    return masters


async def _repeats(masters: list[LoadedMaster], args: argparse.Namespace, work: Path) -> None:
    for master in masters:
        await master.run_phase("health", WARM_UP_S)
        await master.fill_queue(args.clients * 100)
        await master.run_phase("cycles", WARM_UP_S)
    for repeat in range(args.repeats):
        for master in masters if repeat % 2 == 0 else masters[::-1]:
            health = await master.run_phase("health", args.seconds)
            await master.queue_for(args.seconds)
            cycles = await master.run_phase("cycles", args.seconds)
            say(f"{master.label} repeat {repeat + 1}: {health.rate:.0f} health/s, {cycles.rate:.0f} cycles/s "
                 f"(ratio {cycles.rate / health.rate:.3f}); master CPU {1000 * health.master_cpu_s / health.done:.2f}"
                 f" ms/health, {1000 * cycles.master_cpu_s / max(cycles.done, 1):.2f} ms/cycle"
                 + ("; the queue ran dry" if cycles.ran_dry else ""))
    if args.profile:
        for master in masters:
            master.profile = await master.profile_cycles(args.seconds, work / f"{master.label}.pyspy")
            say(f"{master.label} profiled: {100 * master.profile.share:.1f}% of {master.profile.total} samples "
                "in the routes' handlers")


def summarise(master: LoadedMaster) -> dict[str, Any]:
    """Medians over the repeats of one master (not the warm-up); the ratio is the median of each repeat's own."""
    measured = master.phases[2:]
    health = [phase for phase in measured if phase.kind == "health"]
    cycles = [phase for phase in measured if phase.kind == "cycles"]
    summary = {
        "master": master.label,
        "health_per_s": median([phase.rate for phase in health]),
        "cycles_per_s": median([phase.rate for phase in cycles]),
        "ratio": median([c.rate / h.rate for h, c in zip(health, cycles, strict=True)]),
        "ratios": [c.rate / h.rate for h, c in zip(health, cycles, strict=True)],
        "master_cpu_ms_per_health": median([1000 * p.master_cpu_s / p.done for p in health]),
        "master_cpu_ms_per_cycle": median([1000 * p.master_cpu_s / max(p.done, 1) for p in cycles]),
        "master_cpu_percent_cycles": median([100 * p.master_cpu_s / p.seconds for p in cycles]),
        "bench_cpu_percent_cycles": median([100 * p.bench_cpu_s / p.seconds for p in cycles]),
        "ran_dry": any(phase.ran_dry for phase in cycles),
        "phases": [phase.as_dict() for phase in measured],
    }
    if master.profile is not None:
        summary["profile"] = split_cycle(master.profile, summary["master_cpu_ms_per_health"],
                                         summary["master_cpu_ms_per_cycle"])
    return summary


def split_cycle(samples: Samples, ms_per_health: float, ms_per_cycle: float) -> dict[str, Any]:
    """A cycle's master CPU in the routes' own work and the rest, by the samples' share; the ratio free routes reach.

    With the routes' work gone, a cycle would cost the rest, and the master,
    CPU-bound in both phases, would run health requests and cycles in
    inverse proportion to their CPU.
    """
    routes = samples.share * ms_per_cycle
    rest = ms_per_cycle - routes
    return {"samples": samples.total, "route_share": samples.share, "route_ms_per_cycle": routes,
            "rest_ms_per_cycle": rest, "ratio_with_free_routes": ms_per_health / rest if rest else math.inf}


def rows(summaries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[s["master"], s["health_per_s"], s["cycles_per_s"], s["ratio"], s["master_cpu_ms_per_health"],
             s["master_cpu_ms_per_cycle"], s["master_cpu_percent_cycles"], s["bench_cpu_percent_cycles"]]
            for s in summaries]


def markdown(summaries: Sequence[dict[str, Any]], bars: dict[str, Any], settings: dict[str, Any],
             host: dict[str, Any]) -> str:
    store = "PostgreSQL (a fresh database per master)" if settings["postgres"] else "SQLite (a fresh file per master)"
    lines = [
        f"# Master load: claim + result cycles against GET /health, {settings['clients']} clients, {store}",
        "",
        f"{host['cores']} cores ({host['cpu_model']}), Python {host['python']}; {settings['repeats']} repeats of "
        f"{settings['seconds']:g} s per phase, interleaved; medians. "
        + CLIENTS[settings["client"]]
        + " Each loops its requests back to back; a cycle is GET /jobs/next then POST /results (completed) on a "
        "queued stub job. The bench shares the cores with the master"
        + (" and PostgreSQL, whose CPU is in neither figure." if settings["postgres"] else ".")
        + " Master CPU per request is its process's CPU time over the requests of the same phases.",
        f"Command: `{host['command']}`; this checkout at {settings['revision']}"
        + (f", before: {settings['before']} at {settings['before_revision']}." if settings["before"] else "."),
        "",
        markdown_table(COLUMNS, rows(summaries)),
        "",
        "Ratios per repeat: " + "; ".join(
            f"{s['master']}: " + ", ".join(f"{ratio:.3f}" for ratio in s["ratios"]) for s in summaries
        ) + ".",
        "",
        *_profile_lines(summaries, settings),
        GOALS_NOTE,
        "",
    ]
    lines += [goal_line(name, result) for name, result in bars.items()]
    return "\n".join(lines)


PROFILE_COLUMNS = ("master", "samples", "routes' share", "routes ms/cycle", "rest ms/cycle",
                   "ratio with free routes")


def _profile_lines(summaries: Sequence[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """The --profile table: a cycle's CPU split between the routes' own work and the rest; none without it."""
    profiled = [s for s in summaries if "profile" in s]
    if not profiled:
        return []
    return [
        f"Profiled: one more cycles phase of {settings['seconds']:g} s per master, sampled with py-spy "
        f"({RATE_HZ} Hz; it pauses the master for each sample), not in the medians above. The routes' own work is the "
        "samples under the handlers of GET /jobs/next and POST /results (the store, the scheduler, their JSON); "
        "the rest is the HTTP server, Starlette's layers, the event loop and threads. Milliseconds are the "
        "median CPU per cycle split by that share; the last column is cycles/health if the routes cost nothing "
        "(CPU per health request over the rest).",
        "",
        markdown_table(PROFILE_COLUMNS, [
            [s["master"], s["profile"]["samples"], s["profile"]["route_share"], s["profile"]["route_ms_per_cycle"],
             s["profile"]["rest_ms_per_cycle"], s["profile"]["ratio_with_free_routes"]] for s in profiled
        ]),
        "",
    ]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.master_load", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="keep-alive clients, each a node (default 8)")
    parser.add_argument("--client", choices=("raw", "agent"), default="raw",
                        help="raw: HTTP/1.1 requests built once on one kept-alive socket, so the master is what "
                        "is measured (default); agent: the agent's own client (httpx, wire types), as a farm "
                        "speaks, whose cost then bounds both rates")
    parser.add_argument("--seconds", type=positive_seconds, default=5.0, help="seconds per phase (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--before", type=checkout_path, metavar="CHECKOUT",
                        help="also measure the master of this other checkout, interleaved, on a store of its own "
                        "(git worktree add /tmp/before <commit>)")
    parser.add_argument("--postgres", metavar="DSN", default="",
                        help="run each master on a fresh database created on this PostgreSQL server (the DSN's "
                        "user needs CREATE DATABASE) instead of SQLite")
    parser.add_argument("--profile", action="store_true",
                        help="after the repeats, sample each master with py-spy through one more cycles phase and "
                        "split a cycle's CPU between the routes' own work and the HTTP stack")
    add_output_flags(parser, "master_load")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if args.clients < 1 or args.repeats < 1:
        cli.error("--clients and --repeats must be 1 or more")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.profile:
            py_spy()
        with work_directory(prefix="ffrtmp-master-load-") as work:
            masters = trio.run(measure, args, work)
    except SamplingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summaries = [summarise(master) for master in masters]
    bars = {f"cycles_per_health_{s['master']}": goal(
        s["ratio"], BAR_RATIO, f"claim + result cycles/s over GET /health requests/s of the {s['master']} master, "
        f"same clients (2 requests per cycle make 0.5 the ceiling)",
    ) for s in summaries}
    settings = {key: value for key, value in vars(args).items() if key not in ("out", "check")}
    settings["postgres"] = bool(args.postgres)  # a DSN may carry a password: say only whether one was used
    settings["before"] = str(args.before) if args.before else ""
    settings["revision"] = revision(REPO)
    settings["before_revision"] = revision(args.before) if args.before else ""
    host = machine()
    text = markdown(summaries, bars, settings, host)
    out = fresh_out_dir(args.name, args.out)
    write_outputs(out, args.name, {"machine": host, "settings": settings, "bars": bars, "masters": summaries},
                  COLUMNS, rows(summaries), text)
    print(text)
    print(f"wrote {out}/{args.name}.{{json,csv,md}}", file=sys.stderr)
    return goals_exit_code(bars, check=args.check)


if __name__ == "__main__":
    sys.exit(main())
