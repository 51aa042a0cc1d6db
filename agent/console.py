"""The operator commands behind ``ffrtmp jobs ...`` and ``ffrtmp nodes ...``.

Tables for people, ``--output json`` for scripts. Errors end in one line on
stderr, never a traceback: exit code 2 when a setting must change (the API key,
the TLS trust), 1 for anything else the master answers or cannot.

JSON shapes: a command about one job (``jobs status ID``, ``cancel``,
``pause``, ``resume``, ``retry``) prints the job object, as each line of
``jobs status ID --follow`` does; commands that show several (``jobs list``,
``jobs status`` with no ID, ``jobs submit``) print ``{"jobs": [...], "count":
n}``; ``jobs logs`` prints ``{"job_id", "status", "failure_reason", "error",
"logs"}``; ``jobs attempts`` prints ``{"attempts": [...]}``, the master's answer.

Files: ``jobs submit --input FILE`` hashes the file, uploads to the master
only what it does not hold yet (nothing for a file sent before, the rest of
an interrupted upload) and submits jobs naming it; ``jobs download ID``
writes the job's delivered outputs, each checked against its SHA-256 (a
package, :mod:`agent.package`, as a directory of its files, skipping those
already there whole);
``jobs delete ID`` forgets a job and the files no other job names. Transfers
show their progress on a terminal (:mod:`agent.transfers`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from agent.client import AuthError, MasterClient, MasterError, TLSVerifyError, file_sha256
from agent.models import Job, JobAttempt, JobProgress, JobRequest, JobStatus, Node
from agent.package import Manifest, PackageFile, delivered_manifest, safe_relative
from agent.scenarios import ARTIFACT_PREFIX
from agent.transfers import TransferProgress

# How often `jobs status --follow` asks the master.
FOLLOW_INTERVAL_S = 1.0

JOB_COLUMNS = ("seq", "id", "scenario", "status", "progress", "fps", "speed", "eta", "node", "output / error")
# Longer errors are cut, ending in an ellipsis; `jobs status --output json` has them whole.
ERROR_WIDTH = 60
ATTEMPT_COLUMNS = ("attempt", "node", "started", "ended", "outcome", "error")
NODE_COLUMNS = ("id", "address", "status", "cpu_threads", "max_jobs", "active", "last_heartbeat")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(value) for value in row] for row in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def status_shown(job: Job) -> str:
    """The status; for a pending job no node can take, why: ``waiting: no node offers nvenc``;
    ``prefetched`` for a job leased to a node that waits for a free slot there."""
    if is_prefetched(job):
        return JobProgress.PREFETCHED
    return job.waiting or job.status.value


def is_prefetched(job: Job) -> bool:
    """Leased to a node that said it waits there for a free slot: the job holds no slot yet."""
    return job.status is JobStatus.PROCESSING and job.live is not None and job.live.stage == JobProgress.PREFETCHED


def _cut(text: str, width: int = ERROR_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def outcome_shown(job: Job) -> str:
    """Where a completed job's output went, or why a job failed; ``-`` for neither."""
    if job.status is JobStatus.COMPLETED:
        return str(job.metrics.get("output_file") or job.metrics.get("rtmp_url") or "-")
    return _cut(" ".join(filter(None, (job.failure_reason, job.error)))) or "-"


def eta_seconds(job: Job) -> float | None:
    """Seconds left for a running job at its current speed; None when unknown.

    The media still to encode is ``out_time_s`` scaled by the percentage left,
    so no duration needs to be known (a URL input may not say).
    """
    live = job.live
    if job.status is not JobStatus.PROCESSING or live is None or not 0 < job.progress < 100:
        return None
    if live.speed <= 0 or live.out_time_s <= 0:
        return None
    return live.out_time_s * (100 - job.progress) / job.progress / live.speed


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def pace_shown(job: Job) -> tuple[str, str, str]:
    """fps, speed and ETA of a running job; dashes for others, and before its attempt's first report."""
    live = job.live
    if job.status is not JobStatus.PROCESSING or live is None or job.progress <= 0:
        return "-", "-", "-"
    eta = eta_seconds(job)
    return f"{live.fps:.0f}", f"{live.speed:.2f}x", _clock(eta) if eta is not None else "-"


def _job_row(job: Job) -> list[Any]:
    return [
        job.sequence_number, job.id, job.scenario, status_shown(job), f"{job.progress:.0f}%", *pace_shown(job),
        job.node_name or job.node_id or "-", outcome_shown(job),
    ]


def _follow_line(job: Job) -> str:
    """One line of ``--follow``: progress, then fps, speed and ETA while running, the outcome once final."""
    fps, speed, eta = pace_shown(job)
    pace = f" {fps} fps {speed} eta {eta}" if fps != "-" else ""
    outcome = f" {outcome_shown(job)}" if job.status.is_final else ""
    return f"{job.id} {status_shown(job)} {job.progress:.0f}%{pace} {job.node_name or '-'}{outcome}"


def _moment(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _attempt_row(attempt: JobAttempt) -> list[Any]:
    """One attempt; its error whole (the master keeps up to 2 KiB) on one line, as the last column."""
    error = " ".join(": ".join(filter(None, (attempt.failure_reason, attempt.error))).split())
    return [
        attempt.number, attempt.node_name or attempt.node_id or "-", _moment(attempt.started_at),
        _moment(attempt.ended_at), attempt.outcome, error or "-",
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


def _show_job(job: Job, args: argparse.Namespace, out: TextIO) -> None:
    """One job: its bare object in JSON, a one-row table for people."""
    if args.output == "json":
        out.write(json.dumps(job.to_json(), indent=2) + "\n")
    else:
        _show_jobs([job], args, out)


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
        line = json.dumps(job.to_json()) if args.output == "json" else _follow_line(job)
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


class UsageError(Exception):
    """A value on the command line cannot be used: one line, exit 2."""


async def upload_input(client: MasterClient, path: Path) -> str:
    """Put ``path`` on the master, sending only what it lacks; its ``artifact:`` name for the job."""
    if not path.is_file():
        raise UsageError(f"--input {path}: no such file; give the path of a media file to transcode")
    size = path.stat().st_size
    hashing = TransferProgress(f"hashing {path.name}", size)
    sha256 = await trio.to_thread.run_sync(file_sha256, path, hashing.update)
    hashing.finish()
    sending = TransferProgress(f"uploading {path.name}", size)
    sent = await client.upload_artifact(path, sha256, on_progress=sending.update)
    sending.finish()
    held = "already on the master, nothing sent" if not sent else f"{sent} bytes sent"
    print(f"{path.name}: artifact {sha256} ({held})", file=sys.stderr)
    return ARTIFACT_PREFIX + sha256


def delivered_outputs(job: Job) -> list[tuple[str, str]]:
    """(file name, SHA-256) of each output the job delivered to the master."""
    outputs = job.metrics.get("outputs")
    if isinstance(outputs, list):
        found = [(str(each.get("name", "")), str(each.get("sha256", ""))) for each in outputs if isinstance(each, dict)]
    elif isinstance(sha := job.metrics.get("output_sha256"), str):
        found = [(Path(str(job.metrics.get("output_file") or f"{job.id}.out")).name, sha)]
    else:
        found = []
    # Only a bare name is written into DIR: a result cannot point the CLI at another directory.
    named = [(Path(name).name, sha) for name, sha in found]
    return [(name if name not in ("", "..") else f"{job.id}.{i}", sha) for i, (name, sha) in enumerate(named)]


async def _holds(target: Path, file: PackageFile) -> bool:
    """Whether ``target`` is already this file, whole: a download run again skips it."""
    if not target.is_file() or target.stat().st_size != file.bytes:
        return False
    return await trio.to_thread.run_sync(file_sha256, target) == file.sha256


async def download_package(client: MasterClient, sha256: str, root: Path) -> tuple[Manifest, int]:
    """Write the package whose manifest is ``sha256`` into the directory ``root``; the manifest, files written.

    Every path of the manifest is checked before anything is written; each
    file is renamed into place only once its SHA-256 matches, and one that is
    already there whole is not downloaded again, so an interrupted download
    run again fetches only what is missing.

    Raises:
        BadManifest: the manifest names a path that would leave ``root`` (or is no manifest).
        MasterError: as :meth:`MasterClient.download_artifact`.
    """
    kept = root.with_name(f".{root.name}.manifest.json")
    try:
        await client.download_artifact(sha256, kept)
        manifest = Manifest.from_bytes(kept.read_bytes())
    finally:
        kept.unlink(missing_ok=True)
    targets = [(root.joinpath(*safe_relative(file.path).parts), file) for file in manifest.files]
    receiving = TransferProgress(f"downloading {root.name}", manifest.total_bytes)
    done = written = 0

    def show(got: int, _total: int) -> None:
        receiving.update(done + got)

    for target, file in targets:
        if not await _holds(target, file):
            target.parent.mkdir(parents=True, exist_ok=True)
            await client.download_artifact(file.sha256, target, on_progress=show)
            written += 1
        done += file.bytes
        receiving.update(done)
    receiving.finish()
    return manifest, written


async def download_outputs(client: MasterClient, job_ref: str, directory: Path, out: TextIO) -> int:
    """Write the job's delivered outputs into ``directory``, each verified; prints each path.

    A package goes into ``directory/<package name>/`` (:func:`download_package`); its entry's path is printed
    (the directory's for a package of plain files), and on stderr how many files were fetched or already there.
    """
    job = await client.get_job(job_ref)
    outputs = delivered_outputs(job)
    if not outputs:
        delivered_to = job.metrics.get("delivered_to")
        if job.status is not JobStatus.COMPLETED:
            why = "it has not completed"
        elif delivered_to:
            why = f"its output was delivered to {delivered_to}"
        else:
            why = "its output was kept on the worker that ran it (deliver=none)"
        print(f"error: job {job.sequence_number} ({job.status.value}) has no output on the master: {why}",
              file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    package = delivered_manifest(job.metrics)
    for name, sha256 in outputs:
        target = directory / name
        if sha256 == package:
            manifest, written = await download_package(client, sha256, target)
            print(f"{name}: {len(manifest.files)} files, {written} downloaded, {len(manifest.files) - written} "
                  "already there; each checked against its SHA-256", file=sys.stderr)
            out.write(f"{target / manifest.entry if manifest.entry else target}\n")
            continue
        receiving = TransferProgress(f"downloading {name}", 0)
        await client.download_artifact(sha256, target, on_progress=receiving.update)
        receiving.finish()
        out.write(f"{target}\n")
    return 0


async def run_command(client: MasterClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.role == "nodes":
        return await _nodes_command(client, args, out)
    if args.command == "submit":
        request = submission(args)
        if args.input is not None:
            request.parameters["input"] = await upload_input(client, args.input)
        jobs = [await client.submit_job(request) for _ in range(args.count)]
        _show_jobs(jobs, args, out)
        return 0
    if args.command == "list":
        _show_jobs(await _list_jobs(client, args), args, out)
        return 0
    if action := _job_actions(client).get(args.command):
        _show_job(await action(args.job_id), args, out)
        return 0
    if args.command == "logs":
        await _show_logs(client, args, out)
        return 0
    if args.command == "attempts":
        attempts = await client.job_attempts(args.job_id)
        if args.output == "json":
            out.write(json.dumps({"attempts": [attempt.to_json() for attempt in attempts]}, indent=2) + "\n")
        else:
            out.write(format_table(ATTEMPT_COLUMNS, [_attempt_row(attempt) for attempt in attempts]) + "\n")
        return 0
    if args.command == "download":
        return await download_outputs(client, args.job_id, args.output_dir, out)
    if args.command == "delete":
        deleted = await client.delete_job(args.job_id)
        files = f"{len(deleted)} file{'' if len(deleted) == 1 else 's'}"
        out.write(f"job {args.job_id} deleted, and {files} no other job uses\n")
        return 0
    # status
    if args.job_id is None:
        _show_jobs(await client.list_jobs(), args, out)
        return 0
    if args.follow:
        job = await _follow(client, args.job_id, args, out)
        return 0 if job.status.value == "completed" else 1
    _show_job(await client.get_job(args.job_id), args, out)
    return 0


async def _show_logs(client: MasterClient, args: argparse.Namespace, out: TextIO) -> None:
    """The encoder's log; when there is none (a job refused before an encoder ran), why the job ended as it did."""
    logs = await client.job_logs(args.job_id)
    job = await client.get_job(args.job_id)
    if args.output == "json":
        out.write(json.dumps({
            "job_id": job.id, "status": job.status.value, "failure_reason": job.failure_reason,
            "error": job.error, "logs": logs,
        }) + "\n")
    elif logs:
        out.write(logs.rstrip("\n") + "\n")
    else:
        why = ": ".join(filter(None, (job.failure_reason, job.error)))
        print(f"no encoder log for job {job.sequence_number} ({status_shown(job)}{': ' + why if why else ''})",
              file=sys.stderr)


async def run_console(args: argparse.Namespace, verify: ssl.SSLContext | bool = True) -> int:
    """Run one command; ``verify`` trusts an https master (see :func:`agent.tls.client_context`)."""
    try:
        async with MasterClient(args.master, args.api_key, verify=verify) as client:
            return await run_command(client, args, sys.stdout)
    except (AuthError, TLSVerifyError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (MasterError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
