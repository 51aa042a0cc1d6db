"""The dashboard in a real browser: Debian's chromium, driven by Playwright, over a real farm.

One farm per module: a master with an API key and an agent whose encoder is
a stub reporting steady progress for two minutes (tests/encoder_stubs.py), so
a job stays running while the page is watched. Network rules: 127.0.0.1,
port 0; each test closes its browser context, and cancels the jobs it started.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests import encoder_stubs
from tests.browser.farm import CHROMIUM, CHROMIUM_ARGS, running, start_agent, start_master

pytestmark = pytest.mark.slow

KEY = "browser-test-key-0123456789"
# Media seconds of each job; the stub encodes one per wall-clock second, so a job runs this long.
JOB_SECONDS = 120
# Milliseconds the page may take to show a change: a few heartbeats and progress reports.
SHOWN_WITHIN_MS = 20_000


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("farm")
    stub = encoder_stubs.progressing(tmp / "stub", JOB_SECONDS)
    master, url = start_master(tmp, "--api-key", KEY)
    with running(master):
        agent = start_agent("agent", url, tmp / "work", "--api-key", KEY, "--ffmpeg", str(stub.path),
                            "--max-concurrent-jobs", "2", "--node-name", "browser-node:1")
        with running(agent):
            yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (tests/setup.sh installs tests/apt-packages.txt)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def api(farm: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=farm, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def log_in(page: Page, url: str, path: str = "/") -> None:
    page.goto(url + path)
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("input[name=key]", KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(url + path)


def progress_of(page: Page, job_id: str) -> float:
    return float(page.locator(f'#running tr[data-job="{job_id}"] progress').get_attribute("value") or "0")


def test_an_operator_logs_in_and_watches_a_running_job_progress_without_reloading(
    page: Page, farm: str, api: httpx.Client
) -> None:
    """After the login the overview shows the node, its CPU load and the job, whose progress bar moves by itself."""
    job_id = api.post("/jobs", json={"scenario": "480p30-h264", "parameters": {"duration": JOB_SECONDS}}).json()["id"]
    try:
        log_in(page, farm)
        expect(page.locator('#nodes tr[data-node] >> text="browser-node:1"')).to_be_visible()
        page.evaluate("window.notReloaded = true")
        expect(page.locator("#live-state")).to_have_text("live")
        row = page.locator(f'#running tr[data-job="{job_id}"]')
        expect(row).to_be_visible(timeout=SHOWN_WITHIN_MS)
        first = progress_of(page, job_id)
        page.wait_for_function(
            "([id, first]) => parseFloat(document.querySelector(`#running tr[data-job='${id}'] progress`)"
            "?.getAttribute('value') ?? '0') > first",
            arg=[job_id, first], timeout=SHOWN_WITHIN_MS,
        )
        assert progress_of(page, job_id) > first
        expect(page.locator('#nodes tr[data-node] td.num').first).to_have_text(re.compile(r"[12]/2"))
        expect(page.locator("#nodes tr[data-node] td.cpu").first).to_have_text(re.compile(r"\d+%"))
        assert page.evaluate("window.notReloaded") is True
    finally:
        api.post(f"/jobs/{job_id}/cancel")


def test_a_job_submitted_from_the_form_is_canceled_from_its_page(page: Page, farm: str, api: httpx.Client) -> None:
    """The submit form leads to the new job's page, which turns running, then canceled after the cancel button."""
    log_in(page, farm, "/ui/submit")
    page.fill("input[name=scenario]", "720p30-h264")
    page.fill("input[name=duration]", str(JOB_SECONDS))
    page.click("button.primary")
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    status = page.locator(".job-head .status")
    expect(status).to_have_text("processing", timeout=SHOWN_WITHIN_MS)
    expect(page.locator("#job-progress progress")).not_to_have_attribute("value", "0.0", timeout=SHOWN_WITHIN_MS)
    page.click("button[data-action=cancel]")
    expect(status).to_have_text("canceled")
    expect(page.locator("button[data-action=retry]")).to_be_visible()
    expect(page.locator("#attempts tr[data-attempt]")).to_have_count(1)
    expect(page.locator("#attempts tr[data-attempt='1']")).to_have_attribute("data-outcome", "canceled")
    assert api.get(f"/jobs/{job_id}").json()["status"] == "canceled"
