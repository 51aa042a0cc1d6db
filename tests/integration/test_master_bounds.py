"""The master's bounds: strict JSON in, servable JSON out, pages, caps, timeouts and safe defaults.

Network rules: each master binds 127.0.0.1 port 0 in the test's own Trio
loop and is cancelled at the end of the test; clients are httpx or raw Trio
sockets on the same address; every test has a timeout. The CLI runs as a
real process against that master.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import agent.client
from agent.client import MasterClient
from agent.config import ConfigError, MasterConfig, ServerTLS
from agent.master.bodylimits import MAX_BODIES_IN_FLIGHT
from agent.master.jsonbody import MAX_DEPTH
from agent.master.server import serve_master
from agent.master.store import open_store
from agent.models import MAX_RESULT_LOG_BYTES, JobRequest
from agent.tls import prepare_server
from tests.support import REPO, Processes, start_master

pytestmark = pytest.mark.timeout(60)

JOB: dict[str, Any] = {"scenario": "240p15-h264", "parameters": {"duration": 1}}


async def serve(nursery: trio.Nursery, **fields: Any) -> str:
    fields.setdefault("db", "")
    url: str = await nursery.start(serve_master, MasterConfig(host="127.0.0.1", port=0, **fields))
    return url


@pytest.fixture
async def http(nursery: trio.Nursery) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=await serve(nursery), timeout=10) as client:
        yield client


async def submit(http: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await http.post("/jobs", json={**JOB, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def leased_job(http: httpx.AsyncClient) -> tuple[dict[str, Any], str, dict[str, str]]:
    """A registered node, a job leased to it, and the headers that speak for the node.

    The node's own token when the master hands one out (``node_token``), else none.
    """
    answer = (await http.post("/nodes/register", json={"address": "worker-1:9091"})).json()
    token = answer.get("node_token")
    as_node = {"Authorization": f"Bearer {token}"} if token else {}
    await submit(http)
    claimed = await http.get("/jobs/next", params={"node_id": answer["id"]}, headers=as_node)
    assert claimed.status_code == 200, claimed.text
    return claimed.json()["job"], answer["id"], as_node


async def assert_listing_works(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    listing = await http.get("/jobs")
    assert listing.status_code == 200, listing.text
    jobs: list[dict[str, Any]] = listing.json()["jobs"]
    for job in jobs:
        assert (await http.get(f"/jobs/{job['id']}")).status_code == 200
    return jobs


# --- strict input -------------------------------------------------------------------


async def test_the_nan_body_is_refused_and_listing_still_answers(http: httpx.AsyncClient) -> None:
    """The issue's body: 400 naming parameters.note; nothing stored; GET /jobs stays 200."""
    raw = b'{"scenario":"240p15-h264","parameters":{"duration":1,"note":NaN}}'
    response = await http.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "parameters.note" in response.json()["error"]
    assert await assert_listing_works(http) == []


DEEP = b'{"scenario":"240p15-h264","parameters":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
JUST_TOO_DEEP = json.dumps({"scenario": "240p15-h264", "parameters": {"x": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)}})
UNSERVABLE = {
    "Infinity": (b'{"scenario":"240p15-h264","parameters":{"note":Infinity}}', "parameters.note"),
    "-Infinity": (b'{"scenario":"240p15-h264","parameters":{"note":[1,-Infinity]}}', "parameters.note[1]"),
    "1e999": (b'{"scenario":"240p15-h264","parameters":{"gain":1e999}}', "parameters.gain"),
    "an integer past 64 bits": (
        b'{"scenario":"240p15-h264","parameters":{"n":' + str(2**63).encode() + b"}}", "parameters.n"
    ),
    "a NUL in a string": (b'{"scenario":"240p15-h264","parameters":{"tag":"a\\u0000b"}}', "parameters.tag"),
    "a lone surrogate": (b'{"scenario":"240p15-h264","parameters":{"tag":"\\ud800"}}', "parameters.tag"),
    "a NUL in a key": (b'{"scenario":"240p15-h264","parameters":{"a\\u0000":1}}', "parameters"),
    "nesting 100000 deep": (DEEP, "nested deeper"),
    f"nesting {MAX_DEPTH + 2} deep": (JUST_TOO_DEEP.encode(), "nested deeper"),
}


@pytest.mark.parametrize("body, names", UNSERVABLE.values(), ids=UNSERVABLE.keys())
async def test_a_body_the_master_could_not_serve_back_is_refused_naming_the_field(
    http: httpx.AsyncClient, body: bytes, names: str
) -> None:
    """400 with the field's path; no job is stored, and listing answers 200."""
    response = await http.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert names in response.json()["error"]
    assert await assert_listing_works(http) == []


async def test_a_node_cannot_store_nan_in_a_result_or_its_progress(http: httpx.AsyncClient) -> None:
    """NaN metrics or progress from the node holding the job: 400, and the job is unchanged and listable."""
    job, node_id, as_node = await leased_job(http)
    result = b'{"job_id":"%s","node_id":"%s","status":"completed","metrics":{"fps":NaN}}' % (
        job["id"].encode(), node_id.encode())
    answer = await http.post("/results", content=result, headers=as_node)
    assert answer.status_code == 400 and "metrics.fps" in answer.json()["error"], answer.text
    progress = b'{"node_id":"%s","progress":Infinity}' % node_id.encode()
    answer = await http.post(f"/jobs/{job['id']}/progress", content=progress, headers=as_node)
    assert answer.status_code == 400 and "progress" in answer.json()["error"], answer.text
    [listed] = await assert_listing_works(http)
    assert (listed["status"], listed["progress"], listed["metrics"]) == ("processing", 0.0, {})


@pytest.mark.parametrize("ref", ["9" * 5000, str(2**63), "%00", "%D9%A3"], ids=["5000 digits", "2**63", "NUL", "arabic 3"])
async def test_a_job_ref_that_cannot_be_a_job_is_not_found(http: httpx.AsyncClient, ref: str) -> None:
    """404 for reads and changes alike, never a 500."""
    await submit(http)
    for method, path in (("GET", f"/jobs/{ref}"), ("GET", f"/jobs/{ref}/logs"), ("POST", f"/jobs/{ref}/cancel")):
        response = await http.request(method, path)
        assert response.status_code == 404, (method, response.text)


async def test_a_job_stored_with_nan_before_the_checks_is_still_listed(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Rows written by an older master render NaN as null instead of failing the listing."""
    db = tmp_path / "old.db"
    async with open_store(str(db)) as store:
        await store.submit(JobRequest(scenario="240p15-h264", parameters={"note": math.nan}), 3)
    async with httpx.AsyncClient(base_url=await serve(nursery, db=str(db)), timeout=10) as http:
        [listed] = await assert_listing_works(http)
    assert listed["parameters"] == {"note": None}


# --- pages --------------------------------------------------------------------------


async def test_jobs_are_listed_a_page_at_a_time_each_once_in_order(http: httpx.AsyncClient) -> None:
    """Following next_cursor with limit=2 visits all five jobs once; the last page says null."""
    submitted = [(await submit(http))["id"] for _ in range(5)]
    seen, cursor, pages = [], None, 0
    while True:
        page = (await http.get("/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        assert page["count"] == len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (submitted, 3)
    assert (await http.get("/jobs")).json()["count"] == 5  # default limit 100


async def test_jobs_are_filtered_by_status_queue_and_node(http: httpx.AsyncClient) -> None:
    """status, queue and node (id or address) narrow the page; the filters combine."""
    job, node_id, _ = await leased_job(http)
    await submit(http, queue="batch")

    async def ids(**params: str) -> list[str]:
        return [job["id"] for job in (await http.get("/jobs", params=params)).json()["jobs"]]

    assert await ids(node=node_id) == await ids(node="worker-1:9091") == [job["id"]]
    assert await ids(status="processing") == [job["id"]]
    assert len(await ids(queue="batch")) == 1
    assert await ids(queue="batch", status="processing") == []


@pytest.mark.parametrize(
    "params, says",
    [({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"),
     ({"limit": "9" * 5000}, "limit"), ({"cursor": "bm9wZQ"}, "cursor"), ({"cursor": "%%%"}, "cursor"),
     ({"status": "lost"}, "status"), ({"queue": "vip"}, "queue")],
)
async def test_a_bad_listing_query_is_400_naming_the_parameter(
    http: httpx.AsyncClient, params: dict[str, str], says: str
) -> None:
    """Every wrong query parameter gets one message naming it."""
    response = await http.get("/jobs", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(says)


async def test_the_client_follows_pages_to_list_every_job(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MasterClient.list_jobs reads on until next_cursor is null (pages of 2 here, 1000 in use)."""
    submitted = [(await submit(http))["id"] for _ in range(5)]
    monkeypatch.setattr(agent.client, "LARGEST_PAGE", 2)
    async with MasterClient(str(http.base_url)) as client:
        assert [job.id for job in await client.list_jobs()] == submitted
        assert [job.id for job in await client.list_jobs("pending")] == submitted


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FFRTMP")}
    return await trio.run_process(
        [sys.executable, "-m", "agent", *args], capture_stdout=True, capture_stderr=True, check=False,
        cwd=REPO, env=environment,
    )


async def test_the_cli_lists_one_page_or_all_and_says_when_more_match(http: httpx.AsyncClient) -> None:
    """jobs list --limit 2: two rows and a note on stderr; --all: every row, no note."""
    for _ in range(3):
        await submit(http)
    url = str(http.base_url)
    some = await run_cli("jobs", "list", "--master", url, "--limit", "2")
    assert some.returncode == 0, some.stderr
    assert len(some.stdout.decode().splitlines()) == 1 + 2
    assert b"--all" in some.stderr
    every = await run_cli("jobs", "list", "--master", url, "--all", "--status", "pending")
    assert every.returncode == 0, every.stderr
    assert (len(every.stdout.decode().splitlines()), every.stderr) == (1 + 3, b"")


# --- caps ---------------------------------------------------------------------------


async def test_result_logs_keep_their_last_64_kib(http: httpx.AsyncClient) -> None:
    """A 200 KiB log is stored as its tail, which ends where the encoder's log ended."""
    job, node_id, as_node = await leased_job(http)
    logs = "".join(f"frame={n} é\n" for n in range(20_000)) + "the reason it failed\n"
    assert len(logs.encode()) > 3 * MAX_RESULT_LOG_BYTES
    result = {"job_id": job["id"], "node_id": node_id, "status": "failed", "error": "x", "logs": logs}
    assert (await http.post("/results", json=result, headers=as_node)).status_code == 200
    kept = (await http.get(f"/jobs/{job['id']}/logs")).json()["logs"]
    assert len(kept.encode()) <= MAX_RESULT_LOG_BYTES
    assert logs.endswith(kept) and kept.endswith("the reason it failed\n")


async def test_past_max_pending_jobs_a_submit_is_429_with_retry_after(nursery: trio.Nursery) -> None:
    """The third job of a two-job queue: 429, Retry-After, nothing stored; the CLI says so in one line."""
    url = await serve(nursery, max_pending_jobs=2)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        await submit(http)
        await submit(http)
        refused = await http.post("/jobs", json=JOB)
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) > 0
        assert "--max-pending-jobs 2" in refused.json()["error"]
        assert (await http.get("/jobs")).json()["count"] == 2
    cli = await run_cli("jobs", "submit", "--master", url, "--scenario", "240p15-h264")
    assert cli.returncode == 1
    [line] = cli.stderr.decode().splitlines()
    assert line.startswith("error: ") and "queue is full" in line


# --- slow clients -------------------------------------------------------------------


async def open_slow_body(url: str) -> trio.SocketStream:
    """A connection whose request headers are whole and whose body has only begun."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(
        b"POST /jobs HTTP/1.1\r\nHost: master\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    return stream


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    answer = b""
    while chunk := await stream.receive_some():
        answer += chunk
    return answer


async def test_health_answers_while_300_slow_clients_hang_on(nursery: trio.Nursery) -> None:
    """300 bodies crawling in: /health answers at once, and bodies past the limit are refused with 503."""
    url = await serve(nursery, body_timeout=30)
    streams = [await open_slow_body(url) for _ in range(300)]
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            with trio.fail_after(5):
                assert (await http.get("/health")).status_code == 200
        answers: list[bytes] = []

        async def first_answer(stream: trio.SocketStream) -> None:
            with trio.move_on_after(1):  # the refused ones are answered at once, the others never
                answers.append(await stream.receive_some())

        async with trio.open_nursery() as reading:
            for stream in streams:
                reading.start_soon(first_answer, stream)
        assert len(answers) == 300 - MAX_BODIES_IN_FLIGHT
        assert all(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    finally:
        for stream in streams:
            await stream.aclose()


async def test_a_body_trickled_byte_by_byte_is_cut_with_408(nursery: trio.Nursery) -> None:
    """One byte every half second does not keep the request alive past --body-timeout (2 s here)."""
    url = await serve(nursery, body_timeout=2)
    stream = await open_slow_body(url)
    answer = b""

    async def trickle() -> None:
        while True:
            await trio.sleep(0.5)
            await stream.send_all(b" ")

    with trio.fail_after(30):
        async with trio.open_nursery() as trickling:
            trickling.start_soon(trickle)
            answer = await read_until_closed(stream)
            trickling.cancel_scope.cancel()
    await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/jobs", json=JOB)).status_code == 201


async def test_request_headers_trickled_in_are_cut(nursery: trio.Nursery) -> None:
    """A request line sent a byte at a time is closed by the header timeout, well within 30 s."""
    url = await serve(nursery)
    host, port = httpx.URL(url).host, httpx.URL(url).port
    assert port is not None
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(b"GET /health HTTP/1.1\r\nHo")
    with trio.fail_after(30):
        async with trio.open_nursery() as trickling:

            async def trickle() -> None:
                with trio.move_on_after(25):  # the server closing first is the point
                    while True:
                        await trio.sleep(0.5)
                        await stream.send_all(b"s")

            trickling.start_soon(trickle)
            await read_until_closed(stream)
            trickling.cancel_scope.cancel()
    await stream.aclose()


# --- safe defaults ------------------------------------------------------------------


async def test_a_master_without_a_key_on_a_public_address_warns(procs: Processes, tmp_path: Path) -> None:
    """No API key on 0.0.0.0: one warning naming the risk; with a key, none."""
    for name in ("open", "keyed"):
        (tmp_path / name).mkdir()
    open_master, _ = await start_master(procs, tmp_path / "open", "--host", "0.0.0.0")
    await open_master.wait_for(r"No API key .* anyone who can reach")
    keyed, _ = await start_master(procs, tmp_path / "keyed", "--host", "0.0.0.0", "--api-key", "k3y")
    await keyed.stop()
    assert "No API key" not in keyed.log


def test_generate_cert_refuses_to_reuse_a_key_other_users_can_read(tmp_path: Path) -> None:
    """A generated key left readable by its group: start-up stops with the fix; a regenerated key is 0600."""
    tls = ServerTLS(cert=tmp_path / "master.crt", key=tmp_path / "master.key", generate=True,
                    hosts=("localhost",), ips=("127.0.0.1",))
    prepare_server(tls)
    tls.key.chmod(0o640)
    with pytest.raises(ConfigError, match=r"mode 0640.*chmod 600"):
        prepare_server(tls)
    tls.cert.unlink()  # asks for a new pair; the key file is overwritten in place
    prepare_server(tls)
    assert tls.key.stat().st_mode & 0o777 == 0o600
