"""The dashboard over plain HTTP, no browser: login, cookies, CSRF, and pages that need no JavaScript.

Network rules: one real master process per module (127.0.0.1, port 0, an API
key, no agent, so its jobs stay pending), driven with httpx; the TLS test and
the download test (with an agent) start their own.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
import trio

from agent.config import MasterConfig
from agent.master.server import serve_master
from tests import encoder_stubs
from tests.browser.farm import running, start_agent, start_master

KEY = "dashboard-test-key-0123456789"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def master_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    master, url = start_master(tmp_path_factory.mktemp("master"), "--api-key", KEY)
    with running(master):
        yield url


@pytest.fixture
def api(master_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=master_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def csrf_of(page: httpx.Response) -> str:
    match = _CSRF.search(page.text)
    assert match, page.text
    return match.group(1)


@contextmanager
def logged_in(url: str) -> Iterator[httpx.Client]:
    """A browser-like client that logged in with the key, holding the session cookie."""
    with httpx.Client(base_url=url) as browser:
        form = browser.get("/ui/login")
        answer = browser.post("/ui/login", data={"key": KEY, "csrf": csrf_of(form), "next": "/"})
        assert answer.status_code == 303, answer.text
        yield browser


def submit_pending_job(api: httpx.Client) -> str:
    """A job no agent will take (the module's master has none): it stays pending."""
    answer = api.post("/jobs", json={"scenario": "720p30-h264", "parameters": {"duration": 5}})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def test_pages_without_a_session_lead_to_the_login(master_url: str) -> None:
    """A visitor without a session is sent to the login form, which says where it will go back to."""
    with httpx.Client(base_url=master_url) as browser:
        page = browser.get("/ui/jobs?status=pending")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Dpending"
        assert browser.get("/ui/events").status_code == 401
        login = browser.get(page.headers["location"])
        assert login.status_code == 200 and 'name="key"' in login.text
        assert 'value="/ui/jobs?status=pending"' in login.text


def test_a_wrong_key_is_refused_with_a_message_and_no_session(master_url: str) -> None:
    """The login form answers 401 naming the flags to check, and the session stays logged out."""
    with httpx.Client(base_url=master_url) as browser:
        form = browser.get("/ui/login")
        answer = browser.post("/ui/login", data={"key": "not-the-key", "csrf": csrf_of(form), "next": "/"})
        assert answer.status_code == 401
        assert "That is not this master&#39;s API key" in answer.text and "--api-key-file" in answer.text
        assert browser.get("/").status_code == 303


def test_the_session_cookie_is_httponly_samesite_strict_and_holds_no_key(master_url: str) -> None:
    """Over plain HTTP the cookie is HttpOnly and SameSite=Strict, not Secure, and the key is not in it."""
    with httpx.Client(base_url=master_url) as browser:
        form = browser.get("/ui/login")
        answer = browser.post("/ui/login", data={"key": KEY, "csrf": csrf_of(form), "next": "/"})
        header = answer.headers["set-cookie"]
        morsel = SimpleCookie(header)["ffrtmp_session"]
        assert morsel["httponly"] is True and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
        assert not morsel["secure"]
        assert KEY not in header and KEY.encode().hex() not in header
        assert morsel.value != SimpleCookie(form.headers["set-cookie"])["ffrtmp_session"].value  # a new session


def test_a_session_cookie_does_not_open_the_json_routes(master_url: str) -> None:
    """The JSON API still wants the key in Authorization: a logged-in browser's cookie is not enough."""
    with logged_in(master_url) as browser:
        assert browser.get("/").status_code == 200
        refused = browser.get("/jobs")
        assert refused.status_code == 401 and refused.text == "Missing Authorization header\n"


def test_reading_needs_no_javascript(master_url: str, api: httpx.Client) -> None:
    """The overview, the jobs list and a job's page are whole in the HTML the master sends."""
    registered = api.post("/nodes/register", json={"address": "reader-test:9091", "cpu_threads": 8,
                                                   "labels": {"engines": "ffmpeg,gstreamer"}})
    assert registered.status_code in (200, 201), registered.text
    job_id = submit_pending_job(api)
    with logged_in(master_url) as browser:
        overview = browser.get("/")
        assert "reader-test:9091" in overview.text and "ffmpeg,gstreamer" in overview.text
        assert f'data-job="{job_id}"' in overview.text
        listing = browser.get("/ui/jobs", params={"status": "pending"})
        assert f'data-job="{job_id}"' in listing.text and "720p30-h264" in listing.text
        page = browser.get(f"/ui/jobs/{job_id}")
        assert page.status_code == 200 and "&#34;duration&#34;: 5" in page.text
        assert browser.get("/ui/jobs/no-such-job").status_code == 404


def test_a_form_without_its_csrf_token_changes_nothing(master_url: str, api: httpx.Client) -> None:
    """A cancel without the session's token, or with another session's, is refused 403; the job stays pending."""
    job_id = submit_pending_job(api)
    with logged_in(master_url) as browser, logged_in(master_url) as other:
        other_token = csrf_of(other.get("/"))
        for form in ({}, {"csrf": other_token}, {"csrf": ""}):
            refused = browser.post(f"/ui/jobs/{job_id}/cancel", data=form)
            assert refused.status_code == 403
            assert "nothing was done" in refused.text
        assert api.get(f"/jobs/{job_id}").json()["status"] == "pending"
        done = browser.post(f"/ui/jobs/{job_id}/cancel", data={"csrf": csrf_of(browser.get("/")), "next": "/"})
        assert done.status_code == 303
        assert api.get(f"/jobs/{job_id}").json()["status"] == "canceled"


def test_an_action_the_job_s_state_forbids_shows_the_master_s_reason(master_url: str, api: httpx.Client) -> None:
    """Resuming a job that is not paused is answered 409 with the scheduler's message."""
    job_id = submit_pending_job(api)
    with logged_in(master_url) as browser:
        answer = browser.post(f"/ui/jobs/{job_id}/resume", data={"csrf": csrf_of(browser.get("/"))})
        assert answer.status_code == 409 and "not paused" in answer.text


def test_a_submit_form_with_a_bad_scenario_is_shown_again_with_the_reason(master_url: str) -> None:
    """The form comes back 400, the values kept, with the master's validation message."""
    with logged_in(master_url) as browser:
        token = csrf_of(browser.get("/ui/submit"))
        answer = browser.post("/ui/submit", data={"csrf": token, "scenario": "720x30", "duration": "5"})
        assert answer.status_code == 400
        assert "does not read as &lt;height&gt;p&lt;fps&gt;-&lt;codec&gt;" in answer.text
        assert 'value="720x30"' in answer.text


def test_a_file_uploaded_with_the_submit_form_becomes_the_job_s_input(master_url: str, api: httpx.Client) -> None:
    """The file goes to the artefact store and the job names it as artifact:<sha256>."""
    with logged_in(master_url) as browser:
        token = csrf_of(browser.get("/ui/submit"))
        answer = browser.post(
            "/ui/submit", data={"csrf": token, "scenario": "480p30-h264", "count": "1"},
            files={"file": ("clip.mp4", b"not really a video", "video/mp4")},
        )
        assert answer.status_code == 303, answer.text
        job_id = answer.headers["location"].rsplit("/", 1)[1]
    sha256 = hashlib.sha256(b"not really a video").hexdigest()
    assert api.get(f"/jobs/{job_id}").json()["parameters"]["input"] == f"artifact:{sha256}"
    assert api.head(f"/artifacts/{sha256}").headers["content-length"] == "18"


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    """A master serving HTTPS marks the session cookie Secure."""
    cert = tmp_path / "master.crt"
    master, url = start_master(tmp_path, "--api-key", KEY, "--generate-cert", "--cert", str(cert),
                               "--key", str(tmp_path / "master.key"))
    with running(master):
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trust) as browser:
            answer = browser.get("/ui/login")
    assert url.startswith("https://")
    assert SimpleCookie(answer.headers["set-cookie"])["ffrtmp_session"]["secure"] is True


async def test_without_an_api_key_pages_are_open_but_forms_still_need_the_token(nursery: trio.Nursery) -> None:
    """A master with no key needs no login (like its JSON routes), yet a form without the token does nothing."""
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    async with httpx.AsyncClient(base_url=url) as browser:
        assert (await browser.get("/ui/login")).headers["location"] == "/"
        overview = await browser.get("/")
        assert overview.status_code == 200 and "Log out" not in overview.text
        submitted = await browser.post("/ui/submit", data={"scenario": "720p30-h264"})
        assert submitted.status_code == 403
        assert (await browser.get("/jobs")).json()["count"] == 0
        token = csrf_of(await browser.get("/ui/submit"))
        submitted = await browser.post("/ui/submit", data={"scenario": "720p30-h264", "csrf": token})
        assert submitted.status_code == 303
        assert (await browser.get("/jobs")).json()["count"] == 1
    nursery.cancel_scope.cancel()


async def test_the_overview_counts_a_prefetched_job_apart_from_the_slots(nursery: trio.Nursery) -> None:
    """A node of one slot holding two jobs, the second waiting there for the slot: 1/1 slots used, +1 prefetched."""
    url = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, db=""))
    async with httpx.AsyncClient(base_url=url) as api:
        registered = await api.post("/nodes/register", json={"address": "prefetch-test:9091",
                                                             "labels": {"max_concurrent_jobs": "1"}})
        node = registered.json()
        as_node = {"Authorization": f"Bearer {node['node_token']}"}
        for _ in range(2):
            await api.post("/jobs", json={"scenario": "720p30-h264"})
        claimed = [(await api.get("/jobs/next", params={"node_id": node["id"]}, headers=as_node)).json()["job"]["id"]
                   for _ in range(2)]
        waiting = {"node_id": node["id"], "progress": 0, "stage": "prefetched"}
        assert (await api.post(f"/jobs/{claimed[1]}/progress", json=waiting, headers=as_node)).status_code == 200
        overview = (await api.get("/")).text
    row = re.search(rf'<tr data-node="{node["id"]}">.*?</tr>', overview, re.S)
    assert row and re.search(r'<td class="num">1/1 <span class="muted">\+1 prefetched</span></td>', row.group(0)), row
    assert re.search(r'<span class="value">1/1</span><span class="label">slots used <small>\+1 prefetched</small>',
                     overview), overview
    nursery.cancel_scope.cancel()


@pytest.mark.slow
def test_a_delivered_output_downloads_from_the_job_s_page(tmp_path: Path) -> None:
    """The page links each output the master holds; the link streams it under its file name, other files are 404."""
    stub = encoder_stubs.succeeding(tmp_path / "stub")
    master, url = start_master(tmp_path, "--api-key", KEY)
    with running(master):
        agent = start_agent("agent", url, tmp_path / "work", "--api-key", KEY, "--ffmpeg", str(stub.path))
        with running(agent), httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as api:
            job_id = api.post("/jobs", json={"scenario": "480p30-h264",
                                             "parameters": {"duration": 1, "deliver": "master"}}).json()["id"]
            deadline = time.monotonic() + 30
            while (job := api.get(f"/jobs/{job_id}").json())["status"] != "completed":
                assert time.monotonic() < deadline and job["status"] not in ("failed", "canceled"), job
                time.sleep(0.2)
            with logged_in(url) as browser:
                page = browser.get(f"/ui/jobs/{job_id}")
                link = re.search(rf'href="(/ui/jobs/{job_id}/outputs/[0-9a-f]{{64}})"', page.text)
                assert link, page.text
                output = browser.get(link.group(1))
                assert output.status_code == 200 and output.content == b"encoded"
                assert output.headers["content-disposition"].startswith('attachment; filename="')
                other = browser.get(f"/ui/jobs/{job_id}/outputs/{'0' * 64}")
                assert other.status_code == 404


def test_a_node_is_drained_and_undrained_from_the_overview(master_url: str, api: httpx.Client) -> None:
    """The overview's drain button drains the node as 'nodes drain' does, and then offers undrain."""
    node_id = api.post("/nodes/register", json={"address": "drain-test:9091"}).json()["id"]
    with logged_in(master_url) as browser:
        token = csrf_of(browser.get("/"))
        assert browser.post(f"/ui/nodes/{node_id}/drain", data={"csrf": token, "next": "/"}).status_code == 303
        assert api.get(f"/nodes/{node_id}").json()["draining"] is True
        overview = browser.get("/").text
        assert f'action="/ui/nodes/{node_id}/undrain"' in overview
        assert browser.post(f"/ui/nodes/{node_id}/undrain", data={"csrf": token}).status_code == 303
        assert api.get(f"/nodes/{node_id}").json()["draining"] is False


def test_a_job_s_page_lists_its_attempts_with_their_errors(master_url: str, api: httpx.Client) -> None:
    """A failed attempt, then the running one, then the completed one: each on the page with its node and error."""
    job_id = api.post("/jobs", json={"scenario": "720p30-h264", "queue": "live", "priority": "high"}).json()["id"]
    node = api.post("/nodes/register", json={"address": "attempts-test:9091"}).json()
    as_node = {"Authorization": f"Bearer {node['node_token']}"}

    def claim_and_report(**result: str) -> None:
        claimed = api.get("/jobs/next", params={"node_id": node["id"]}, headers=as_node).json()["job"]
        assert claimed["id"] == job_id, claimed
        if result:
            answer = api.post("/results", json={"job_id": job_id, "node_id": node["id"], **result}, headers=as_node)
            assert answer.status_code == 200, answer.text

    def attempt_rows(page: str) -> list[tuple[str, str]]:
        return re.findall(r'<tr data-attempt="(\d+)" data-outcome="([^"]+)"', page)

    claim_and_report(status="failed", failure_reason="runtime_error", error="ffmpeg exited with code 1: <boom>")
    claim_and_report()
    with logged_in(master_url) as browser:
        running_page = browser.get(f"/ui/jobs/{job_id}").text
        api.post("/results", json={"job_id": job_id, "node_id": node["id"], "status": "completed"}, headers=as_node)
        done_page = browser.get(f"/ui/jobs/{job_id}", headers={"x-live": "1"}).text
    assert attempt_rows(running_page) == [("1", "failed"), ("2", "running")]
    assert attempt_rows(done_page) == [("1", "failed"), ("2", "completed")]
    for page in (running_page, done_page):
        assert "<strong>runtime_error</strong>: ffmpeg exited with code 1: &lt;boom&gt;" in page
        assert page.count("attempts-test:9091") >= 2
        assert "earlier attempts" not in page
