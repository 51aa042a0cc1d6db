"""A ladder as a user runs it: ``local --input`` on one machine, and a farm with ``jobs download``.

Real processes: ``python -m agent local`` run from the test's directory; a
master with an API key and an agent with a work dir of its own (it reaches
the clip only through the master), driven by the ``ffrtmp`` commands. The
package that comes back must pass the player checks
(:func:`~agent.worker.package_check.check_package`). Network rules:
127.0.0.1, ports chosen by the OS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.client import MasterClient
from agent.ladder import Ladder, Package
from agent.worker.package_check import ExpectedRung, check_package
from tests.integration.test_ladder_jobs import CLIP_SECONDS, LADDER, make_clip
from tests.support import Answer, Processes, run_command, start_agent, start_master, wait_for_jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

KEY = "ladder-key"
RUNGS = [ExpectedRung(r.text, r.width, r.height, r.fps, r.codec) for r in Ladder.parse(LADDER).rungs]
# What jobs download prints last: the package's entry, or for plain files the package's directory.
ENTRY = {"hls": "master.m3u8", "dash": "manifest.mpd"}


async def ffrtmp(url: str, *args: str) -> Answer:
    return await run_command(*args, "--master", url, "--api-key", KEY)


@pytest.mark.parametrize("package", ["hls", "dash", "files"])
async def test_local_turns_a_clip_into_a_package_that_plays(tmp_path: Path, ffmpeg: str, package: Package) -> None:
    """local --input clip.mp4 --param ladder=... writes ffrtmp-output/clip.ladder.<package>/, which passes the checks."""
    clip = await make_clip(ffmpeg, tmp_path / "media" / "clip.mp4")
    answer = await run_command("local", "--work-dir", str(tmp_path / "work"), "--input", str(clip),
                               "--scenario", "180p30-h264", "--param", f"ladder={LADDER}",
                               "--param", f"package={package}", cwd=tmp_path)
    directory = tmp_path / "ffrtmp-output" / f"clip.ladder.{package}"
    assert answer.code == 0, answer
    assert f"x ladder {LADDER} ({package})" in answer.out and str(directory) in answer.out, answer.out
    assert await check_package(directory, package, RUNGS, ffmpeg=ffmpeg, duration=CLIP_SECONDS, audio=True) == []


async def test_local_names_the_bad_rung_before_anything_starts(tmp_path: Path) -> None:
    """Exit 2 and one line naming the flag, the rung and what to fix."""
    answer = await run_command("local", "--work-dir", str(tmp_path / "work"), "--jobs", "1",
                               "--param", "ladder=180p30-h264,144p30-h264@abc", cwd=tmp_path)
    assert answer.code == 2, answer
    assert answer.err.strip() == (
        "error: --param ladder=180p30-h264,144p30-h264@abc: invalid ladder: rung 2 (144p30-h264@abc): "
        "bitrate 'abc' must look like 2500k, 5M or a number of kbit/s"
    )


@pytest.mark.parametrize(("mode", "package"), [("single", "hls"), ("split", "hls"), ("single", "dash"),
                                               ("split", "files")])
async def test_a_farm_encodes_an_uploaded_clip_into_a_ladder_that_downloads_and_plays(
    procs: Processes, tmp_path: Path, ffmpeg: str, mode: str, package: Package
) -> None:
    """submit --input with a ladder; the agent's mode is in the result; jobs download writes a package that plays."""
    clip = await make_clip(ffmpeg, tmp_path / "mine" / "clip.mp4")
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    await start_agent(procs, "agent", url, tmp_path / "agent", "--api-key", KEY, "--ladder-mode", mode)

    submitted = await ffrtmp(url, "jobs", "submit", "--scenario", "180p30-h264", "--param", f"ladder={LADDER}",
                             "--param", f"package={package}", "--input", str(clip), "--output", "json")
    assert submitted.code == 0, submitted
    job_id = str(json.loads(submitted.out)["jobs"][0]["id"])
    async with MasterClient(url, KEY) as client:
        [job] = await wait_for_jobs(client, [job_id], timeout=90)
    assert job.status.value == "completed", (job.error, job.logs)
    assert (job.metrics["ladder_mode"], job.metrics["package_check"]) == (mode, "passed")

    downloaded = await ffrtmp(url, "jobs", "download", job_id, "-o", str(tmp_path / "back"))
    assert downloaded.code == 0, downloaded
    printed = Path(downloaded.out.strip().splitlines()[-1])  # the entry (playlist, MPD), or the directory of files
    directory = printed if package == "files" else printed.parent
    assert directory.parent == tmp_path / "back" and printed.name == ENTRY.get(package, directory.name)
    assert await check_package(directory, package, RUNGS, ffmpeg=ffmpeg, duration=CLIP_SECONDS, audio=True) == []


async def test_a_farm_refuses_a_bad_rung_at_submit(procs: Processes, tmp_path: Path) -> None:
    """The master runs the agent's check: exit 1 and the rung named, no job queued."""
    _, url = await start_master(procs, tmp_path, "--api-key", KEY)
    submitted = await ffrtmp(url, "jobs", "submit", "--scenario", "180p30-h264",
                             "--param", "ladder=180p30-h264,144p30-h264@abc")
    assert submitted.code != 0, submitted
    assert "rung 2 (144p30-h264@abc): bitrate 'abc' must look like" in submitted.err, submitted


async def test_local_runs_a_ladder_of_the_generated_clip_with_a_relative_work_dir(tmp_path: Path, ffmpeg: str) -> None:
    """--work-dir work, as typed: the generated clip and the package are found from every encoder's directory."""
    answer = await run_command("local", "--work-dir", "work", "--jobs", "1", "--duration", "2",
                               "--scenario", "180p30-h264", "--param", f"ladder={LADDER}", cwd=tmp_path)
    assert answer.code == 0, answer
    [package] = (tmp_path / "work" / "outputs").glob("*/*.hls")
    assert await check_package(package, "hls", RUNGS, ffmpeg=ffmpeg, duration=2.0, audio=False) == []
