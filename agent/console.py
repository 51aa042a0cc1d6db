"""The operator commands behind ``ffrtmp jobs ...`` and ``ffrtmp nodes ...``.

Tables for people, ``--output json`` for scripts. Errors from the master end in
one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

import trio

from agent.client import MasterClient, MasterError
from agent.models import Job, JobRequest, Node

# How often `jobs status --follow` asks the master.
FOLLOW_INTERVAL_S = 1.0

JOB_COLUMNS = ("seq", "id", "scenario", "status", "progress", "node", "error")
NODE_COLUMNS = ("id", "address", "status", "cpu_threads", "max_jobs", "active", "last_heartbeat")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def _status(job: Job) -> str:
    """The status, or for a pending job no node can take, why: ``waiting: no node offers nvenc``."""
    return job.waiting or job.status.value


def _job_row(job: Job) -> list[Any]:
    return [
        job.sequence_number, job.id, job.scenario, _status(job), f"{job.progress:.0f}%",
        job.node_name or job.node_id or "-", (job.failure_reason + " " + job.error).strip()[:60] or "-",
    ]


def _node_row(node: Node) -> list[Any]:
    heartbeat = node.last_heartbeat.strftime("%H:%M:%S") if node.last_heartbeat else "-"
    return [
        node.id, node.address, node.status, node.cpu_threads, node.max_concurrent_jobs,
        len(node.active_job_ids), heartbeat,
    ]


def _coerce(value: str) -> Any:
    """``--param k=v`` values: numbers and booleans as JSON would carry them."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def submission(args: argparse.Namespace) -> JobRequest:
    parameters: dict[str, Any] = {key: _coerce(value) for key, value in args.param}
    if args.duration is not None:
        parameters["duration"] = args.duration
    if args.bitrate:
        parameters["bitrate"] = args.bitrate
    return JobRequest.from_json(
        {
            "scenario": args.scenario, "engine": args.engine, "queue": args.queue,
            "priority": args.priority, "parameters": parameters,
        }
    )


def _show_jobs(jobs: list[Job], args: argparse.Namespace, out: TextIO) -> None:
    if args.output == "json":
        out.write(json.dumps({"jobs": [job.to_json() for job in jobs], "count": len(jobs)}, indent=2) + "\n")
    else:
        out.write(format_table(JOB_COLUMNS, [_job_row(job) for job in jobs]) + "\n")


async def _list_jobs(client: MasterClient, args: argparse.Namespace) -> list[Job]:
    """Every job with ``--all``; else one page, and a note on stderr when more match."""
    if args.all:
        return await client.list_jobs(args.status, node=args.node, queue=args.queue)
    page = await client.list_jobs_page(status=args.status, node=args.node, queue=args.queue, limit=args.limit)
    if page.next_cursor is not None:
        print(f"showing the first {len(page.jobs)} matching jobs; --all shows every one", file=sys.stderr)
    return page.jobs


async def _follow(client: MasterClient, job_id: str, args: argparse.Namespace, out: TextIO) -> Job:
    last = ""
    while True:
        job = await client.get_job(job_id)
        if args.output == "json":
            line = json.dumps(job.to_json())
        else:
            line = f"{job.id} {_status(job)} {job.progress:.0f}% {job.node_name or '-'} {job.error}".rstrip()
        if line != last:
            out.write(line + "\n")
            out.flush()
            last = line
        if job.status.is_final:
            return job
        await trio.sleep(FOLLOW_INTERVAL_S)


async def _nodes_command(client: MasterClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "delete":
        await client.delete_node(args.node_id)
        out.write(f"node {args.node_id} deleted; its jobs went back to the queue\n")
        return 0
    one = {
        "show": client.get_node, "drain": client.drain_node, "undrain": client.undrain_node,
    }.get(args.command)
    nodes = [await one(args.node_id)] if one is not None else await client.list_nodes()
    if args.output == "json":
        out.write(json.dumps({"nodes": [n.to_json() for n in nodes], "count": len(nodes)}, indent=2) + "\n")
    else:
        out.write(format_table(NODE_COLUMNS, [_node_row(n) for n in nodes]) + "\n")
    return 0


def _job_actions(client: MasterClient) -> dict[str, Callable[[str], Awaitable[Job]]]:
    """Commands that change one job and show it as it is afterwards."""
    return {
        "cancel": client.cancel_job,
        "pause": client.pause_job,
        "resume": client.resume_job,
        "retry": client.retry_job,
    }


async def run_command(client: MasterClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.role == "nodes":
        return await _nodes_command(client, args, out)
    if args.command == "submit":
        request = submission(args)
        jobs = [await client.submit_job(request) for _ in range(args.count)]
        _show_jobs(jobs, args, out)
        return 0
    if args.command == "list":
        _show_jobs(await _list_jobs(client, args), args, out)
        return 0
    if action := _job_actions(client).get(args.command):
        _show_jobs([await action(args.job_id)], args, out)
        return 0
    if args.command == "logs":
        logs = await client.job_logs(args.job_id)
        if args.output == "json":
            out.write(json.dumps({"job_id": args.job_id, "logs": logs}) + "\n")
        elif logs:
            out.write(logs.rstrip("\n") + "\n")
        return 0
    # status
    if args.job_id is None:
        _show_jobs(await client.list_jobs(), args, out)
        return 0
    if args.follow:
        job = await _follow(client, args.job_id, args, out)
        return 0 if job.status.value == "completed" else 1
    _show_jobs([await client.get_job(args.job_id)], args, out)
    return 0


async def run_console(args: argparse.Namespace, verify: ssl.SSLContext | bool = True) -> int:
    """Run one command; ``verify`` trusts an https master (see :func:`agent.tls.client_context`)."""
    try:
        async with MasterClient(args.master, args.api_key, verify=verify) as client:
            return await run_command(client, args, sys.stdout)
    except (MasterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
