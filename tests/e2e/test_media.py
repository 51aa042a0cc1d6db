"""The media a farm makes: both engines, the promised scenarios, and honest progress and metrics.

Master and agent run as separate OS processes with real FFmpeg and the real
gst-launch-1.0; every output is probed and fully decoded. Network rules:
127.0.0.1, ports chosen by the OS, each process stopped by its fixture.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import httpx
import pytest
import trio

from agent.client import MasterClient
from agent.models import JobRequest, JobStatus
from agent.worker.engines.ffmpeg import decodes_cleanly, probe_media
from agent.worker.jobrunner import bandwidth_mbps
from tests.support import REPO, Processes, start_agent, start_master, wait_for_jobs

pytestmark = pytest.mark.slow

# scenario -> (codec as FFmpeg names it, width, height, fps)
SCENARIOS = {
    "480p30-vp9": ("vp9", 854, 480, 30.0),
    "720p30-h264": ("h264", 1280, 720, 30.0),
    "1080p60-h265": ("hevc", 1920, 1080, 60.0),
}


def job(scenario: str, engine: str = "auto", **parameters: object) -> JobRequest:
    return JobRequest.from_json({"scenario": scenario, "engine": engine, "parameters": parameters})


async def test_each_scenario_through_each_engine_makes_the_promised_video(
    procs: Processes, tmp_path: Path, ffmpeg: str
) -> None:
    """480p30-vp9, 720p30-h264, 1080p60-h265 via FFmpeg and GStreamer: codec, size, rate, length, clean decode."""
    _, master_url = await start_master(procs, tmp_path)
    async with MasterClient(master_url) as client:
        submitted = {
            (await client.submit_job(job(scenario, engine, duration=1, preset="ultrafast"))).id: (scenario, engine)
            for scenario in SCENARIOS
            for engine in ("ffmpeg", "gstreamer")
        }
        _, status_url = await start_agent(
            procs, "agent", master_url, tmp_path / "work", "--max-concurrent-jobs", "2", "--poll-interval", "1s"
        )
        jobs = await wait_for_jobs(client, list(submitted), timeout=180)
        [node] = await client.list_nodes()
    async with httpx.AsyncClient(base_url=status_url) as http:
        metrics = (await http.get("/metrics")).text

    assert node.labels["engines"] == "ffmpeg,gstreamer"
    assert (node.has_gpu, node.gpu_capabilities) == (False, [])
    assert 'ffrtmp_engine_available{engine="gstreamer"} 1.0' in metrics
    assert 'ffrtmp_hw_encoder_available{encoder="h264_nvenc"} 0.0' in metrics
    for finished in jobs:
        scenario, engine = submitted[finished.id]
        assert finished.status is JobStatus.COMPLETED, (scenario, engine, finished.error, finished.logs)
        assert finished.metrics["engine"] == engine and "fallback_from" not in finished.metrics
        output = finished.metrics["output_file"]
        info = await probe_media(ffmpeg, output)
        assert (info.codec, info.width, info.height, info.fps) == SCENARIOS[scenario], (engine, info)
        assert info.duration == pytest.approx(1.0, abs=0.1), (engine, info)
        assert info.size_bytes == finished.metrics["output_file_bytes"]
        assert await decodes_cleanly(ffmpeg, output), (scenario, engine)


async def test_progress_of_a_10s_job_rises_to_100_and_bandwidth_is_the_formula(
    procs: Processes, tmp_path: Path
) -> None:
    """Sampled from the master and from `jobs status --follow`: never falling, ending at 100; metrics match the files."""
    _, master_url = await start_master(procs, tmp_path)
    follow_out: list[bytes] = []
    async with MasterClient(master_url) as client:
        job_id = (await client.submit_job(job("144p30-h264", duration=10, realtime=True))).id
        await start_agent(procs, "agent", master_url, tmp_path / "work", "--poll-interval", "0.2s")
        seen: list[float] = []
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                argv = [sys.executable, "-m", "agent", "jobs", "status", "--follow", job_id, "--master", master_url]
                done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, cwd=REPO)
                follow_out.append(done.stdout)

            nursery.start_soon(follow)
            with trio.fail_after(60):
                while not (current := await client.get_job(job_id)).status.is_final:
                    seen.append(current.progress)
                    await trio.sleep(0.2)
        final = current

    assert final.status is JobStatus.COMPLETED, final.error
    seen.append(final.progress)
    assert seen == sorted(seen) and seen[-1] == 100.0, seen
    assert len({p for p in seen if 0 < p < 100}) >= 5, f"progress came in steps during the job: {seen}"
    shown = [int(p) for p in re.findall(rb" (\d+)% ", follow_out[0])]
    assert shown == sorted(shown) and shown[-1] == 100 and len(shown) >= 5, follow_out[0]

    metrics = final.metrics
    input_bytes = (tmp_path / "work" / "inputs" / "testsrc2_256x144_30fps_10s.mp4").stat().st_size
    output_bytes = Path(metrics["output_file"]).stat().st_size
    assert (metrics["input_file_bytes"], metrics["output_file_bytes"]) == (input_bytes, output_bytes)
    assert metrics["bandwidth_mbps"] == round(bandwidth_mbps(input_bytes, output_bytes, metrics["duration"]), 3)
    assert metrics["frames"] == 300 and metrics["fps"] > 0 and metrics["speed"] > 0, "from FFmpeg's last report"
