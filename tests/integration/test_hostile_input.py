"""Hostile requests against a running master and agent: each ends in its documented error, nothing crashes.

A job the master can judge is refused there with a 400 naming the field (413
for an oversize body); what only the worker can judge (local paths, private
addresses) reaches it and fails as ``user_error``; unknown fields are ignored,
as the wire protocol says, but unknown job parameters are refused (a typo must
not run with the default). After every case the same master and agent still
complete a normal job. Hypothesis then fuzzes every route of a second master.

Network rules: both masters and the agent are real processes on 127.0.0.1,
ports chosen by the OS; the module starts them once and stops them at its end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.master.app import MAX_BODY_BYTES
from tests.support import REPO, START_TIMEOUT_S

pytestmark = pytest.mark.slow

API_KEY = "hostile-test-key-6f1d"
NORMAL: dict[str, Any] = {"scenario": "144p30-h264", "parameters": {"duration": 0.3}}
# A tiny job takes well under a second; this only bounds a hang.
JOB_TIMEOUT_S = 30.0


@attrs.define
class Service:
    """One ``python -m agent`` process whose stderr goes to a file we can read at any time."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            if match := re.search(pattern, self.log):
                return match
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; log:\n{self.log}")

    def assert_healthy(self) -> None:
        assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.log}"
        assert "Traceback" not in self.log, self.log

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(directory: Path, name: str, *args: str) -> Service:
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{name}.log"
    environment = {key: value for key, value in os.environ.items() if key != "FFMPEG_RTMP_API_KEY"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log, cwd=REPO, env={**environment, "PYTHONUNBUFFERED": "1"},
        )
    return Service(process, log_path)


def start_master(directory: Path) -> tuple[Service, str]:
    key_file = directory / "api-key"
    directory.mkdir(parents=True, exist_ok=True)
    key_file.write_text(API_KEY + "\n")
    master = start(directory, "master", "master", "--host", "127.0.0.1", "--port", "0", "--db", "",
                   "--api-key-file", str(key_file))
    return master, master.wait_for(r"listening on (http://\S+)").group(1)


@attrs.define
class Farm:
    master: Service
    agent: Service
    http: httpx.Client

    def final_job(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "canceled"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not final after {JOB_TIMEOUT_S}s:\n{self.agent.log}")

    def assert_normal_job_completes(self) -> None:
        response = self.http.post("/jobs", json=NORMAL)
        assert response.status_code == 201, response.text
        job = self.final_job(response.json()["id"])
        assert job["status"] == "completed", job
        self.master.assert_healthy()
        self.agent.assert_healthy()


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    directory = tmp_path_factory.mktemp("hostile")
    master, url = start_master(directory)
    agent = start(directory, "agent", "--master", url, "--api-key-file", str(directory / "api-key"),
                  "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--work-dir", str(directory / "work"),
                  "--poll-interval", "0.2s", "--allow-master-as-worker", "--skip-confirmation")
    try:
        agent.wait_for(r"Starting job polling loop")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as http:
            yield Farm(master, agent, http)
    finally:
        agent.stop()
        master.stop()


@attrs.frozen
class Case:
    """A request to ``POST /jobs`` and the answer it must get."""

    name: str
    body: bytes
    # 400/413: the master refuses; 201: the worker judges, ending in ``outcome``.
    status: int
    says: str
    outcome: str = "user_error"


def job(**parameters: Any) -> bytes:
    return json.dumps({**NORMAL, "parameters": {**NORMAL["parameters"], **parameters}}).encode()


def refused(field: str, value: Any, says: str = "") -> Case:
    return Case(f"{field}={value!r}", job(**{field: value}), 400, says or field)


UNICODE = [
    Case("scenario with unicode", json.dumps({"scenario": "144p30-h264\u202e"}).encode(), 400, "scenario"),
    refused("preset", "v\u00e9ryfast"),
    refused("codec", "h264\u200b"),
    refused("bitrate", "5\uff2d"),
    refused("resolution", "1280\u00d7720"),
    refused("output", "\u00fcn\u00efcode.mp4"),
    refused("output_mode", "f\u00efle"),
    refused("hardware", "nv\u00e9nc"),
    refused("stream_key", "k\u00e9y"),
    refused("rtmp_url", "rtmp://\u00ebxample.com/live"),
    refused("input", "http://ex\u00e4mple.com/a.mp4"),
]
INJECTION = [
    refused("input", "-f"),
    refused("input", "-filter_complex"),
    refused("output", "-i"),
    refused("preset", "-y"),
    refused("codec", "-c:v"),
    refused("bitrate", "-1M"),
    refused("resolution", "-s"),
    refused("output_mode", "-f"),
    refused("stream_key", "-x"),
    refused("rtmp_url", "-f lavfi"),
    refused("hardware", "-hwaccel"),
    refused("bitrate", "1M; rm -rf /"),
    refused("output", "a.mp4;reboot"),
    refused("input", "http://example.com/a;b"),
    refused("preset", "veryfast\n-i /etc/passwd"),
    refused("output", "a.mp4\n-y"),
    refused("rtmp_url", "rtmp://example.com/live\r\n-f"),
    refused("output", "../../etc/passwd"),
    refused("stream_key", "../../x"),
]
SHAPES = [
    Case("malformed JSON", b'{"scenario": "144p30-h264",', 400, "not valid JSON"),
    Case("invalid UTF-8", b'{"scenario": "\xff\xfe"}', 400, "not valid JSON"),
    Case("integer of 5000 digits", b'{"scenario": "144p30-h264", "priority": ' + b"9" * 5000 + b"}", 400, "JSON"),
    Case("body is a list", b"[]", 400, ""),
    Case("body is a string", b'"144p30-h264"', 400, ""),
    Case("scenario is a number", b'{"scenario": 720}', 400, "scenario"),
    Case("parameters is a string", b'{"scenario": "144p30-h264", "parameters": "duration=1"}', 400, "parameters"),
    Case("queue is an object", b'{"scenario": "144p30-h264", "queue": {}}', 400, "queue"),
    refused("duration", [1]),
    refused("fps", True),
    refused("duration", 1e308),
    Case("duration Infinity", b'{"scenario": "144p30-h264", "parameters": {"duration": 1e999}}', 400, "duration"),
    Case("duration NaN", b'{"scenario": "144p30-h264", "parameters": {"duration": NaN}}', 400, "duration"),
    Case("a free-form parameter NaN", b'{"scenario": "144p30-h264", "parameters": {"note": NaN}}', 400,
         "parameters.note"),
    Case("a free-form parameter -Infinity", b'{"scenario": "144p30-h264", "parameters": {"note": [-Infinity]}}',
         400, "parameters.note[0]"),
    Case("a free-form parameter past 64 bits", job(note=2**64), 400, "parameters.note"),
    Case("a NUL in a string", job(note="a\x00b"), 400, "parameters.note"),
    Case("a lone surrogate", b'{"scenario": "144p30-h264", "parameters": {"note": "\\udc00"}}', 400,
         "parameters.note"),
    Case("nested 100000 deep", b'{"scenario": "144p30-h264", "parameters": {"note": ' + b"[" * 100_000
         + b"]" * 100_000 + b"}}", 400, "nested deeper"),
    refused("fps", 10**30),
    refused("bitrate", 10**30),
    refused("resolution", "99999x99999"),
    refused("resource_limits", {"timeout_sec": 1e300}, "timeout_sec"),
]
AT_THE_WORKER = [
    Case("input: a local file", job(input="/etc/passwd"), 201, "local files are not allowed"),
    Case("input: traversal", job(input="../../../../etc/shadow"), 201, "local files are not allowed"),
    Case("output: an absolute path", job(output="/etc/cron.d/x.mp4"), 201, "output"),
    *(
        Case(f"input: private {url}", job(input=url), 201, "--allow-private-inputs")
        for url in (
            "http://127.0.0.1:8080/jobs", "http://localhost/a.mp4", "http://169.254.169.254/latest/meta-data",
            "http://[::1]/a.mp4", "rtmp://10.0.0.1/live/cam", "http://2130706433/a.mp4",
        )
    ),
    Case(
        "unknown fields are ignored",
        json.dumps({**NORMAL, "command": "rm -rf /", "parameters": {"duration": 0.3}}).encode(),
        201, "", outcome="completed",
    ),
    Case(
        "an unknown parameter is refused",
        json.dumps({**NORMAL, "parameters": {"duration": 0.3, "ffmpeg_args": "-i /etc/passwd"}}).encode(),
        400, "unknown key ffmpeg_args",
    ),
]
CASES = [*SHAPES, *UNICODE, *INJECTION, *AT_THE_WORKER]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_job_ends_in_its_documented_error_and_a_normal_job_runs_after(farm: Farm, case: Case) -> None:
    """400/413 naming the field at the master, or user_error at the worker; then a normal job completes."""
    response = farm.http.post("/jobs", content=case.body, headers={"Content-Type": "application/json"})
    assert response.status_code == case.status, response.text
    if case.status == 201:
        finished = farm.final_job(response.json()["id"])
        assert finished["status"] == ("completed" if case.outcome == "completed" else "failed"), finished
        assert case.outcome == "completed" or finished["failure_reason"] == case.outcome, finished
        assert case.says in finished["error"], finished
        assert "command" not in finished
    else:
        assert case.says in response.json()["error"], response.text
    farm.assert_normal_job_completes()


def test_an_oversize_body_is_refused_from_its_declared_length_before_it_is_sent(farm: Farm) -> None:
    """413 on the headers alone: the master reads none of the megabytes it would refuse."""
    address = urllib.parse.urlsplit(str(farm.http.base_url))
    with socket.create_connection((address.hostname, address.port), timeout=10) as raw:
        raw.sendall(
            f"POST /jobs HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
        )
        # Read until the master closes: hanging up mid-answer races hypercorn's own close of the socket.
        answer = raw.makefile("rb").read()
    assert answer.split()[1] == b"413", answer
    farm.assert_normal_job_completes()


def test_an_oversize_body_without_a_length_is_cut_off_at_the_limit(farm: Farm) -> None:
    """A chunked upload is counted as it streams, not trusted for its size."""

    def chunks() -> Iterator[bytes]:
        yield b'{"scenario": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536

    response = farm.http.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    farm.assert_normal_job_completes()


# --- fuzzing every route -------------------------------------------------------------

ROUTES = [
    ("GET", "/health"), ("GET", "/metrics"), ("GET", "/nodes"), ("POST", "/nodes/register"),
    ("DELETE", "/nodes/{}"), ("POST", "/nodes/{}/heartbeat"), ("POST", "/nodes/{}/drain"),
    ("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/jobs/next"), ("GET", "/jobs/{}"), ("GET", "/jobs/{}/logs"),
    ("GET", "/jobs/{}/attempts"),
    ("POST", "/jobs/{}/progress"), ("POST", "/jobs/{}/cancel"), ("POST", "/jobs/{}/pause"),
    ("POST", "/jobs/{}/resume"), ("POST", "/jobs/{}/retry"), ("POST", "/results"),
]
# Field names of every request body, so fuzzed objects reach the type checks and not only the parser.
FIELDS = [
    "scenario", "confidence", "engine", "parameters", "queue", "priority", "address", "type", "cpu_threads",
    "cpu_model", "has_gpu", "gpu_type", "gpu_capabilities", "ram_total_bytes", "labels", "active_job_ids",
    "max_concurrent_jobs", "cpu_load_percent", "job_id", "node_id", "status", "progress", "metrics", "error",
    "logs", "completed_at", "failure_reason", "fps", "speed", "bitrate_kbps", "out_time_s", "duration", "input",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["144p30-h264", "completed", "failed", "2026-01-01T00:00:00Z", "-i", "../x", "\n"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
# JSON text Python reads but no client can serve back: json.dumps writes NaN and Infinity for st.floats(),
# and these reach the other corners.
unservable = st.one_of(
    st.sampled_from([b"NaN", b"-Infinity", b"1e999", b"-1e999", b'"\\u0000"', b'"\\ud800"', b'{"\\u0000": 1}']),
    st.integers(min_value=2**63).map(lambda n: str(n).encode()),
    st.integers(min_value=1, max_value=100_000).map(lambda n: b"[" * n + b"]" * n),
)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.tuples(st.sampled_from(FIELDS), unservable).map(
        lambda pair: b'{"scenario": "144p30-h264", "parameters": {"duration": 0.3}, "%s": %s}' % (pair[0].encode(), pair[1])
    ),
    unservable.map(lambda value: b'{"scenario": "144p30-h264", "parameters": {"duration": 0.3, "x": %s}}' % value),
)
segments = st.one_of(
    st.text(max_size=12).map(lambda s: urllib.parse.quote(s, safe="")),
    st.integers(min_value=0, max_value=5000).map(lambda n: "9" * n),
)
queries = st.dictionaries(
    st.sampled_from(["node_id", "wait", "status", "limit", "cursor", "node", "queue"]), st.text(max_size=12), max_size=3
)


@pytest.fixture(scope="module")
def bare_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, httpx.Client]]:
    """A master without agents: fuzzed valid jobs just wait in its queue."""
    master, url = start_master(tmp_path_factory.mktemp("fuzz"))
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as http:
            yield master, http
    finally:
        master.stop()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), segment=segments, query=queries, body=bodies)
def test_fuzzed_requests_to_every_route_never_break_the_master(
    bare_master: tuple[Service, httpx.Client], route: tuple[str, str], segment: str, query: dict[str, str],
    body: bytes,
) -> None:
    """No 5xx and no traceback; every refusal is JSON with an ``error`` message."""
    master, http = bare_master
    method, template = route
    if template == "/jobs/next":
        query = {**query, "wait": "0"}  # a long-poll would only slow the fuzzing down
    response = http.request(method, template.format(segment), params=query, content=body)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text
    assert_every_job_is_served(http)
    master.assert_healthy()


def assert_every_job_is_served(http: httpx.Client) -> None:
    """Whatever was stored can be listed (one page holds them all here) and the newest read back alone."""
    listing = http.get("/jobs", params={"limit": 1000})
    assert listing.status_code == 200, listing.text
    assert listing.json()["next_cursor"] is None
    for job in listing.json()["jobs"][-1:]:
        assert http.get(f"/jobs/{job['id']}").status_code == 200


@pytest.fixture(scope="module")
def fuzz_node(bare_master: tuple[Service, httpx.Client]) -> tuple[str, dict[str, str]]:
    """One node registered on the fuzzed master: its id, and the headers that speak for it."""
    _, http = bare_master
    answer = http.post("/nodes/register", json={"address": "fuzz-node:9091"}).json()
    return answer["id"], as_node(answer)


def as_node(answer: dict[str, Any]) -> dict[str, str]:
    """Headers that speak for a registered node: its own token when the master hands one out."""
    token = answer.get("node_token")
    return {"Authorization": f"Bearer {token}"} if token else {}


NODE_FIELDS = st.sampled_from(["status", "progress", "metrics", "error", "logs", "completed_at", "failure_reason",
                               "fps", "speed", "bitrate_kbps", "out_time_s", "not_started"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(["/results", "/jobs/{}/progress"]),
    fields=st.dictionaries(NODE_FIELDS, json_values | unservable.map(lambda raw: RawJSON(raw)), max_size=4),
)
def test_fuzzed_results_and_progress_from_the_node_holding_the_job_never_break_the_master(
    bare_master: tuple[Service, httpx.Client], fuzz_node: tuple[str, dict[str, str]], route: str,
    fields: dict[str, Any],
) -> None:
    """The node's own token, a job it holds, and fuzzed fields (NaN, huge numbers ...): no 5xx, jobs still served."""
    master, http = bare_master
    node_id, headers = fuzz_node
    job_id = http.post("/jobs", json=NORMAL).json()["id"]
    # Claims take the oldest pending job, which earlier fuzzed submissions may have left: drain to ours.
    while claimed := http.get("/jobs/next", params={"node_id": node_id}, headers=headers).json()["job"]:
        if claimed["id"] == job_id:
            break
    body = {"job_id": job_id, "node_id": node_id, "status": "completed", "progress": 50.0, **fields}
    response = http.post(route.format(job_id), content=RawJSON.dumps(body), headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text
    assert_every_job_is_served(http)
    assert http.get(f"/jobs/{job_id}").status_code == 200
    master.assert_healthy()


@attrs.frozen
class RawJSON:
    """JSON text spliced into a body as is, for tokens json.dumps will not write (1e999, deep nesting)."""

    raw: bytes

    @staticmethod
    def dumps(value: dict[str, Any]) -> bytes:
        fields = [b"%s: %s" % (json.dumps(key).encode(), item.raw if isinstance(item, RawJSON) else
                               json.dumps(item).encode()) for key, item in value.items()]
        return b"{" + b", ".join(fields) + b"}"


def test_the_fuzzed_master_still_takes_a_normal_job(bare_master: tuple[Service, httpx.Client]) -> None:
    master, http = bare_master
    response = http.post("/jobs", json=NORMAL)
    assert response.status_code == 201, response.text
    assert http.get(f"/jobs/{response.json()['id']}").json()["status"] == "pending"
    master.assert_healthy()
