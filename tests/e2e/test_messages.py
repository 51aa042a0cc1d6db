"""What a user reads after a mistake or an interruption: one line naming the value and the flag, a documented exit code.

Real processes (``python -m agent local``, the worker agent, the ``ffrtmp``
commands) on 127.0.0.1, ports chosen by the OS. Every check asserts the exit
code, the line a user reads, and that no traceback reached them.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
import trio

from agent.client import MasterClient
from agent.models import JobRequest, JobStatus
from agent.worker.engines.ffmpeg import probe_media
from tests.support import (
    Answer,
    Processes,
    RunningProcess,
    processes_mentioning,
    run_command,
    start_agent,
    start_master,
    start_process,
    wait_for_jobs,
)

pytestmark = pytest.mark.timeout(120)


run = run_command


def usage_error(answer: Answer) -> str:
    """The ``error:`` line of a refused command line, which exits 2 and runs nothing."""
    [line] = [line for line in answer.err.splitlines() if "error:" in line]
    assert answer.code == 2 and answer.out == "", answer
    return line


# --- local: bad values are refused before anything starts --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--scenario", "720p30-h246"], ["--scenario 720p30-h246", "unknown codec 'h246'", "h264, h265 (hevc), vp9"]),
        (["--param", "codec=av1"], ["--param codec=av1", "invalid codec"]),
        (["--param", "bitrate=lots"], ["--param bitrate=lots", "invalid bitrate"]),
        (["--param", "presett=fast"], ["--param presett=fast", "did you mean preset"]),
        (["--duration", "-1"], ["--duration -1", "invalid duration"]),
    ],
)
async def test_local_refuses_a_bad_scenario_or_parameter_in_one_line_before_it_starts(
    tmp_path: Path, args: list[str], names: list[str]
) -> None:
    """One error line naming the flag, the value and what is allowed; exit 2; no master, no input generated."""
    answer = await run("local", "--jobs", "1", "--work-dir", str(tmp_path), *args)
    [line] = answer.err.strip().splitlines()
    assert answer.code == 2 and line.startswith("error: ") and answer.out == "", answer
    for name in names:
        assert name in line, line
    assert not (tmp_path / "inputs").exists()


@pytest.mark.parametrize("args", [["local", "--jobs", "-3"], ["local", "--jobs", "0"]])
async def test_local_jobs_must_be_at_least_one(args: list[str], tmp_path: Path) -> None:
    """--jobs -3 is a usage error naming --jobs, exit 2, instead of running '-3 x 720p30-h264'."""
    line = usage_error(await run(*args, "--work-dir", str(tmp_path)))
    assert "--jobs" in line and "must be at least 1" in line, line


async def test_jobs_submit_count_must_be_at_least_one() -> None:
    """jobs submit --count -1 is a usage error naming --count, exit 2, before the master is asked."""
    line = usage_error(await run("jobs", "submit", "--scenario", "144p30-h264", "--count", "-1",
                                 "--master", "http://127.0.0.1:9"))
    assert "--count" in line and "must be at least 1" in line, line


# --- the agent: a taken --metrics-port -----------------------------------------------------------------------


async def test_an_agent_whose_metrics_port_is_taken_says_so_in_one_line(procs: Processes, tmp_path: Path) -> None:
    """The port, --metrics-port and FFRTMP_METRICS_PORT named in one ERROR line; exit 2; no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = await start_process(
            procs, "agent",
            ["--master", "http://127.0.0.1:9", "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
             "--work-dir", str(tmp_path), "--allow-master-as-worker", "--skip-confirmation"],
        )
        assert await agent.wait() == 2, agent.log
    await agent.wait_for("cannot serve")
    errors = [line for line in agent.lines if "ERROR" in line]
    assert len(errors) == 1, agent.log
    assert f"127.0.0.1:{port}: Address already in use" in errors[0], errors
    assert "--metrics-port (FFRTMP_METRICS_PORT)" in errors[0], errors
    assert "Traceback" not in agent.log


# --- local: Ctrl-C and SIGTERM stop the run and show what finished ------------------------------------------


async def start_local(procs: Processes, tmp_path: Path, *args: str) -> tuple[RunningProcess, Path]:
    """``python -m agent local ARGS`` in the background; its stdout goes to a file the test reads."""
    out = tmp_path / "stdout.txt"
    local = await start_process(
        procs, "local", ["local", "--work-dir", str(tmp_path / "work"), *args],
        wrapper=["sh", "-c", f'exec "$@" >{out}', "sh"],
    )
    return local, out


async def until_shown(out: Path, text: str, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while text not in (out.read_text() if out.exists() else ""):
            await trio.sleep(0.1)


@pytest.mark.slow
async def test_ctrl_c_in_local_cancels_the_jobs_stops_the_encoders_and_prints_the_table(
    procs: Processes, tmp_path: Path
) -> None:
    """SIGINT mid-encode: exit 130, every job in the table as canceled, one line saying so, no encoder left."""
    local, out = await start_local(
        procs, tmp_path, "--scenario", "144p30-h264", "--jobs", "3", "--max-concurrent-jobs", "1",
        "--duration", "30", "--param", "realtime=true",
    )
    await until_shown(out, "running: #1 ")
    await until_shown(out, "%")
    local.signal(signal.SIGINT)
    assert await local.wait() == 130, local.log
    table = out.read_text()
    assert table.count(" canceled ") == 3 and "0/3 jobs completed" in table, table
    assert "interrupted by SIGINT: unfinished jobs were canceled" in local.log
    assert "Traceback" not in local.log
    assert not processes_mentioning(str(tmp_path / "work")), "an encoder outlived local"


@pytest.mark.slow
async def test_local_says_it_is_generating_the_input_and_sigterm_stops_it_with_143(
    procs: Processes, tmp_path: Path
) -> None:
    """'#1 generating input' while the test clip is made, not '#1 0%'; SIGTERM then exits 143 with the table."""
    local, out = await start_local(procs, tmp_path, "--scenario", "1080p30-h264", "--jobs", "1", "--duration", "20")
    await until_shown(out, "running: #1 generating input")
    local.signal(signal.SIGTERM)
    assert await local.wait() == 143, local.log
    assert "1    canceled" in out.read_text()
    assert "interrupted by SIGTERM" in local.log and "Traceback" not in local.log
    assert not processes_mentioning(str(tmp_path / "work")), "the input generator outlived local"
    assert not list((tmp_path / "work" / "inputs").glob("*.mp4")), "a half-made clip was kept"


# --- ffrtmp: logs, tables and JSON shapes -------------------------------------------------------------------


async def ffrtmp(url: str, *args: str) -> Answer:
    return await run(*args, "--master", url)


@pytest.mark.slow
async def test_logs_of_a_job_refused_before_any_encoder_ran_say_why_it_failed(
    procs: Processes, tmp_path: Path
) -> None:
    """No encoder log: stderr names the status, failure reason and error; exit 0; JSON carries them too."""
    _, url = await start_master(procs, tmp_path)
    await start_agent(procs, "agent", url, tmp_path / "agent")
    async with MasterClient(url) as client:
        job = await client.submit_job(JobRequest.from_json(
            {"scenario": "144p30-h264", "parameters": {"input": str(tmp_path / "missing.mp4")}}
        ))
        [failed] = await wait_for_jobs(client, [job.id], timeout=30)
    assert failed.failure_reason == "user_error", failed
    logs = await ffrtmp(url, "jobs", "logs", "1")
    assert logs.code == 0 and logs.out == "", logs
    assert logs.err.strip() == f"no encoder log for job 1 (failed: user_error: {failed.error})", logs
    shown = json.loads((await ffrtmp(url, "jobs", "logs", "1", "--output", "json")).out)
    assert shown == {"job_id": job.id, "status": "failed", "failure_reason": "user_error",
                     "error": failed.error, "logs": ""}
    listed = await ffrtmp(url, "jobs", "list")
    assert listed.out.rstrip().endswith("…") and len(failed.error) > 60, listed.out


@pytest.mark.slow
async def test_status_and_list_show_fps_speed_and_eta_while_running_and_the_output_once_done(
    procs: Processes, tmp_path: Path
) -> None:
    """Running: FPS, SPEED and ETA columns filled and --follow lines with them; done: the output file; bare JSON."""
    _, url = await start_master(procs, tmp_path)
    await start_agent(procs, "agent", url, tmp_path / "agent")
    async with MasterClient(url) as client:
        job = await client.submit_job(JobRequest.from_json(
            {"scenario": "144p30-h264", "parameters": {"duration": 8, "realtime": True, "preset": "ultrafast"}}
        ))
        async with trio.open_nursery() as nursery:
            followed: list[Answer] = []

            async def follow() -> None:
                followed.append(await ffrtmp(url, "jobs", "status", "1", "--follow"))

            nursery.start_soon(follow)
            with trio.fail_after(30):
                while (running := await client.get_job(job.id)).progress < 20 or running.live is None:
                    await trio.sleep(0.2)
            for command in ("status", "list"):
                table = await ffrtmp(url, "jobs", command)
                header, row = table.out.splitlines()
                assert header.split()[5:9] == ["FPS", "SPEED", "ETA", "NODE"], table.out
                fps, speed, eta = row.split()[5:8]
                assert float(fps) > 0 and speed.endswith("x") and float(speed[:-1]) > 0, row
                minutes, seconds = map(int, eta.split(":"))
                assert 0 < minutes * 60 + seconds <= 8, row
        [done] = await wait_for_jobs(client, [job.id], timeout=30)
    assert done.status is JobStatus.COMPLETED, done.error
    assert followed[0].code == 0 and any(" fps " in line and " eta " in line for line in followed[0].out.splitlines())
    assert followed[0].out.splitlines()[-1].endswith(done.metrics["output_file"]), followed[0].out
    status = await ffrtmp(url, "jobs", "status", "1")
    assert status.out.splitlines()[1].endswith(done.metrics["output_file"]), status.out
    bare = json.loads((await ffrtmp(url, "jobs", "status", "1", "--output", "json")).out)
    assert bare["id"] == job.id and bare["status"] == "completed" and bare["live"]["fps"] > 0
    listed = json.loads((await ffrtmp(url, "jobs", "list", "--output", "json")).out)
    assert listed["count"] == 1 and listed["jobs"][0]["id"] == job.id


# --- encoders: clean logs, true figures ---------------------------------------------------------------------


@pytest.mark.slow
async def test_short_jobs_report_fps_and_speed_on_both_engines_and_ffmpeg_logs_no_unused_audio_option(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """1-second FFmpeg and GStreamer jobs: fps and speed above 0; no 'has not been used' in FFmpeg's log."""
    _, url = await start_master(procs, tmp_path)
    await start_agent(procs, "agent", url, tmp_path / "agent")
    async with MasterClient(url) as client:
        ids = [
            (await client.submit_job(JobRequest.from_json(
                {"scenario": "144p30-h264", "engine": engine, "parameters": {"duration": 1}}
            ))).id
            for engine in ("ffmpeg", "gstreamer")
        ]
        jobs = await wait_for_jobs(client, ids, timeout=60)
    for job in jobs:
        assert job.status is JobStatus.COMPLETED, job.error
        assert job.metrics["fps"] > 0 and job.metrics["speed"] > 0 and job.metrics["frames"] == 30, job.metrics
    assert [job.metrics["engine"] for job in jobs] == ["ffmpeg", "gstreamer"]
    logs = await ffrtmp(url, "jobs", "logs", "1")
    assert logs.code == 0 and "has not been used" not in logs.out, logs.out
    [clip] = (tmp_path / "agent" / "inputs").glob("*.mp4")
    assert (await probe_media(ffmpeg, clip)).audio_codec == "", "the generated input has no audio"
