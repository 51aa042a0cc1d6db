"""Take the README's picture of the dashboard over a busy farm: ``python -m tests.browser.screenshot``.

Starts a master and three agents running real FFmpeg encodes in real time
(two slots each, so six run at once and more wait), lets them get going, and
saves the overview as it looks in chromium on a desktop (``docs/dashboard.png``)
and, with ``--phone PATH``, at a phone's width. Everything binds 127.0.0.1 and
stops when the pictures are taken.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from tests.browser.farm import CHROMIUM, CHROMIUM_ARGS, running, start_agent, start_master
from tests.support import REPO

KEY = "screenshot-key-0123456789"
NODES = ("encoder-a:9101", "encoder-b:9102", "gpu-box:9103")
# (scenario, parameters, queue): short ones finish first, the real-time ones keep the slots busy.
Jobs = list[tuple[str, dict[str, object], str]]
FINISHED: Jobs = [("480p30-h264", {"duration": 2, "preset": "ultrafast"}, "default")] * 3
RUNNING: Jobs = [
    ("480p30-h264", {"duration": 60, "preset": "ultrafast", "realtime": True}, "live"),
    ("360p30-h264", {"duration": 60, "preset": "veryfast", "realtime": True}, "default"),
    ("240p30-vp9", {"duration": 60, "preset": "realtime", "realtime": True}, "default"),
    ("360p30-h264", {"duration": 90, "realtime": True}, "default"),
    ("480p30-h264", {"duration": 90, "preset": "ultrafast", "realtime": True}, "batch"),
    ("240p30-h264", {"duration": 120, "realtime": True, "bitrate": "600k"}, "batch"),
]
WAITING: Jobs = [
    ("1080p30-h264", {"duration": 60}, "batch"),
    ("720p60-h265", {"duration": 30}, "default"),
    ("480p30-vp9", {"duration": 45}, "default"),
]
# Seconds the encodes run once all report progress: long enough for it to show.
WARM_UP_S = 10.0


def submit(api: httpx.Client, jobs: Jobs) -> list[str]:
    ids = []
    for scenario, parameters, queue in jobs:
        answer = api.post("/jobs", json={"scenario": scenario, "parameters": parameters, "queue": queue})
        answer.raise_for_status()
        ids.append(answer.json()["id"])
    return ids


def wait_until(check: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"the farm did not get there in {timeout:g} s: {check}")
        time.sleep(0.5)


def take(url: str, desktop: Path, phone: Path | None) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        sizes = [(desktop, {"width": 1440, "height": 1000}, 1)]
        if phone is not None:
            sizes.append((phone, {"width": 390, "height": 844}, 2))
        for path, viewport, scale in sizes:
            context = browser.new_context(viewport=viewport, device_scale_factor=scale)  # type: ignore[arg-type]
            page = context.new_page()
            page.goto(url + "/")
            page.fill("input[name=key]", KEY)
            page.click("button[type=submit]")
            page.wait_for_selector("#running tr[data-job]")
            page.wait_for_selector("#live-state[data-state=live]")
            page.wait_for_timeout(1500)  # one live update, so the progress is the latest
            page.screenshot(path=str(path), full_page=True)
            context.close()
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--phone", type=Path, help="also save the page at a phone's width here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ffrtmp-screenshot-") as directory:
        tmp = Path(directory)
        master, url = start_master(tmp, "--api-key", KEY)
        with running(master), httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as api:
            agents = [
                start_agent(name, url, tmp / name.split(":")[0], "--api-key", KEY, "--node-name", name,
                            "--max-concurrent-jobs", "2")
                for name in NODES
            ]
            with running(*agents):
                finished = submit(api, FINISHED)
                wait_until("the short jobs complete", lambda: all(
                    api.get(f"/jobs/{job_id}").json()["status"] == "completed" for job_id in finished))
                submit(api, RUNNING)
                wait_until("six jobs run", lambda: api.get("/jobs", params={"status": "processing"}).json()["count"] == 6)
                submit(api, WAITING)
                wait_until("every running job reports progress", lambda: all(
                    job["progress"] > 0 for job in api.get("/jobs", params={"status": "processing"}).json()["jobs"]
                ), timeout=300)
                time.sleep(WARM_UP_S)
                api.post(f"/nodes/{NODES[2]}/drain").raise_for_status()
                take(url, args.out, args.phone)
    print(f"saved {args.out}" + (f" and {args.phone}" if args.phone else ""))


if __name__ == "__main__":
    main()
