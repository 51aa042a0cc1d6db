"""No expected failure shows a user a traceback: one error line, the documented exit code.

Each row of :data:`MISTAKES` is a mistake a user makes with ``python -m
agent`` (the worker), ``master``, ``local`` or ``ffrtmp``: a bad flag or
variable, a port already taken, a master that is unreachable, misaddressed
(no scheme, ``http://`` to an HTTPS master), refusing the API key or serving a
certificate for another host name, a job or node that does not exist. Each is
run as a real process with a timeout, against real masters on 127.0.0.1, and
must end with the exit code README.rst documents (``1`` the master refused a
request, ``2`` a usage or configuration error, ``130`` interrupted), exactly
one error line naming what to change, and no ``Traceback``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import attrs
import pytest

from agent.config import API_KEY_ENV
from tests.support import REPO, START_TIMEOUT_S

pytestmark = pytest.mark.timeout(300)

# A mistake ends in seconds; a process still running after this is the failure we look for (retrying for ever).
RUN_TIMEOUT_S = 60.0
API_KEY = "right-key"
# The name on the HTTPS master's certificate: not the name the clients use.
CERT_HOST = "other.example"
# "python -m agent: error: ...", "error: ...", or the agent's log line at level ERROR.
ERROR_LINE = re.compile(r"(^|: )error: |\bERROR\b")
FFRTMP = Path(sys.executable).parent / "ffrtmp"


@attrs.frozen
class Farm:
    """Masters and ports the mistakes are made against; ``{name}`` in a row's arguments is one of these."""

    http: str  # a plain master requiring API_KEY
    https: str  # an HTTPS master, https://127.0.0.1:port, whose certificate names only CERT_HOST
    https_localhost: str  # the same master as https://localhost:port
    https_as_http: str  # the same master as http://127.0.0.1:port
    cert: Path  # its certificate, the --ca that trusts it
    taken: int  # a port something listens on
    closed: int  # a port nothing listens on
    work: Path

    def fill(self, args: tuple[str, ...]) -> list[str]:
        values = {field.name: str(getattr(self, field.name)) for field in attrs.fields(Farm)}
        return [arg.format(**values) for arg in args]


def _environment(**extra: str) -> dict[str, str]:
    # ffrtmp's console script would import the installed copy of the package; the checkout comes first.
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV and not key.startswith("FFRTMP_")}
    return env | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)} | extra


def _start_master(log: IO[str], tmp: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    master = subprocess.Popen(
        [sys.executable, "-m", "agent", "master", "--host", "127.0.0.1", "--port", "0", "--db", "", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp, env=_environment(),
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and master.poll() is None:
        if match := re.search(r"listening on (https?://\S+)", Path(log.name).read_text()):
            return master, match.group(1)
        time.sleep(0.1)
    master.kill()
    raise AssertionError(f"master did not start:\n{Path(log.name).read_text()}")


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    tmp = tmp_path_factory.mktemp("farm")
    with socket.socket() as taken, socket.socket() as probe, \
            (tmp / "http.log").open("w") as http_log, (tmp / "https.log").open("w") as https_log:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
        probe.close()
        plain, http = _start_master(http_log, tmp, "--api-key", API_KEY)
        secure, https = _start_master(https_log, tmp, "--generate-cert", "--cert-hosts", CERT_HOST,
                                      "--cert-ips", "10.9.9.9")
        try:
            yield Farm(http=http, https=https, https_localhost=https.replace("127.0.0.1", "localhost"),
                       https_as_http=https.replace("https://", "http://"),
                       cert=tmp / "master.crt", taken=taken.getsockname()[1], closed=closed, work=tmp / "work")
        finally:
            for master in (plain, secure):
                master.terminate()
                master.wait(15)


# The worker's flags that let it start beside a master on this host with nothing else in the way.
AGENT = ("--metrics-host", "127.0.0.1", "--metrics-port", "0", "--work-dir", "{work}",
         "--allow-master-as-worker", "--skip-confirmation")


@attrs.frozen
class Mistake:
    """A command (after ``python -m agent``, or ``ffrtmp`` when ``program`` says so) and what it must end with."""

    args: tuple[str, ...]
    code: int
    # Each must be on the error line.
    says: tuple[str, ...]
    env: dict[str, str] = attrs.field(factory=dict)
    program: str = "agent"


def row(name: str, mistake: Mistake, xfail: str = "") -> object:
    marks = [pytest.mark.xfail(reason=xfail, strict=False)] if xfail else []
    return pytest.param(mistake, id=name, marks=marks)


MISTAKES = [
    # --- the worker agent
    row("agent-bad-flag-value", Mistake(("--max-concurrent-jobs", "0", *AGENT), 2, ("--max-concurrent-jobs", "'0'"))),
    row("agent-unknown-flag", Mistake(("--max-jobs", "4"), 2, ("unrecognized arguments: --max-jobs",))),
    row("agent-bad-variable", Mistake(AGENT, 2, ("FFRTMP_POLL_INTERVAL=5x",), env={"FFRTMP_POLL_INTERVAL": "5x"})),
    row("agent-master-without-scheme", Mistake(("--master", "localhost:8080", *AGENT), 2,
                                               ("--master", "'localhost:8080'", "http://localhost:8080"))),
    row("agent-master-variable-without-scheme", Mistake(AGENT, 2, ("FFRTMP_MASTER=localhost:8080",),
                                                        env={"FFRTMP_MASTER": "localhost:8080"})),
    row("agent-metrics-port-taken", Mistake(("--master", "{http}", "--api-key", API_KEY, *AGENT, "--metrics-port",
                                             "{taken}"), 2, ("{taken}", "--metrics-port"))),
    row("agent-wrong-api-key", Mistake(("--master", "{http}", "--api-key", "wrong", *AGENT), 2, ("--api-key",))),
    row("agent-https-master-untrusted", Mistake(("--master", "{https}", *AGENT), 2, ("--ca",))),
    row("agent-certificate-for-another-host", Mistake(("--master", "{https_localhost}", "--ca", "{cert}", *AGENT), 2,
                                                      ("does not name localhost", CERT_HOST, "--cert-hosts localhost"))),
    # --- the master
    row("master-bad-flag-value", Mistake(("master", "--port", "99999"), 2, ("--port", "'99999'"))),
    row("master-bad-variable", Mistake(("master", "--port", "0", "--db", ""), 2, ("FFRTMP_HEARTBEAT_INTERVAL=often",),
                                       env={"FFRTMP_HEARTBEAT_INTERVAL": "often"})),
    row("master-tls-without-cert", Mistake(("master", "--port", "0", "--db", "", "--tls"), 2, ("--cert", "--key"))),
    row("master-port-taken", Mistake(("master", "--host", "127.0.0.1", "--port", "{taken}", "--db", ""), 2,
                                     ("{taken}", "--port"))),
    # --- local
    row("local-unknown-scenario", Mistake(("local", "--scenario", "720p30-h246", "--work-dir", "{work}"), 2,
                                          ("--scenario 720p30-h246", "h246"))),
    row("local-bad-param", Mistake(("local", "--param", "codec=av1", "--work-dir", "{work}"), 2,
                                   ("--param codec=av1",))),
    row("local-jobs-below-one", Mistake(("local", "--jobs", "-3", "--work-dir", "{work}"), 2, ("--jobs", "'-3'"))),
    row("local-bad-duration", Mistake(("local", "--duration", "soon"), 2, ("--duration", "'soon'"))),
    # --- ffrtmp
    row("cli-master-without-scheme", Mistake(("--master", "localhost:8080", "jobs", "list"), 2,
                                             ("--master", "'localhost:8080'"), program="ffrtmp")),
    row("cli-unreachable-master", Mistake(("--master", "http://127.0.0.1:{closed}", "jobs", "list"), 1,
                                          ("cannot reach the master", "127.0.0.1:{closed}"), program="ffrtmp")),
    row("cli-http-to-an-https-master", Mistake(("--master", "{https_as_http}", "nodes", "list"), 1,
                                               ("try --master https://",), program="ffrtmp")),
    row("cli-wrong-api-key", Mistake(("--master", "{http}", "--api-key", "wrong", "jobs", "list"), 2,
                                     ("--api-key", API_KEY_ENV), program="ffrtmp")),
    row("cli-certificate-for-another-host", Mistake(("jobs", "list", "--master", "{https_localhost}", "--ca", "{cert}"),
                                                    2, ("does not name localhost", CERT_HOST), program="ffrtmp")),
    row("cli-unknown-job", Mistake(("--master", "{http}", "--api-key", API_KEY, "jobs", "status", "999999"), 1,
                                   ("999999",), program="ffrtmp")),
    row("cli-logs-of-unknown-job", Mistake(("--master", "{http}", "--api-key", API_KEY, "jobs", "logs", "nosuch"), 1,
                                           ("nosuch",), program="ffrtmp")),
    row("cli-unknown-node", Mistake(("--master", "{http}", "--api-key", API_KEY, "nodes", "drain", "nosuch:9091"), 1,
                                    ("nosuch:9091",), program="ffrtmp")),
    row("cli-unknown-scenario", Mistake(("--master", "{http}", "--api-key", API_KEY, "jobs", "submit", "--scenario",
                                         "720p30-h246"), 1, ("h246",), program="ffrtmp")),
    row("cli-count-below-one", Mistake(("jobs", "submit", "--scenario", "720p30-h264", "--count", "0"), 2,
                                       ("--count", "'0'"), program="ffrtmp")),
    row("cli-unknown-subcommand", Mistake(("jobs", "frobnicate"), 2, ("invalid choice: 'frobnicate'",),
                                          program="ffrtmp")),
]


def _command(mistake: Mistake, farm: Farm) -> list[str]:
    if mistake.program == "ffrtmp":
        if not FFRTMP.exists():
            pytest.skip(f"the ffrtmp console script is not installed next to {sys.executable}")
        return [str(FFRTMP), *farm.fill(mistake.args)]
    return [sys.executable, "-m", "agent", *farm.fill(mistake.args)]


@pytest.mark.parametrize("mistake", MISTAKES)
def test_an_expected_failure_is_one_error_line_and_its_exit_code_never_a_traceback(
    mistake: Mistake, farm: Farm
) -> None:
    """The command ends in time with its exit code, one error line naming what to change, and no traceback."""
    done = subprocess.run(
        _command(mistake, farm), stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=REPO,
        env=_environment(**mistake.env), timeout=RUN_TIMEOUT_S,
    )
    said = done.stdout + done.stderr
    assert "Traceback" not in said, said
    errors = [line for line in said.splitlines() if ERROR_LINE.search(line)]
    assert len(errors) == 1, said
    for text in farm.fill(mistake.says):
        assert text in errors[0], errors[0]
    assert done.returncode == mistake.code, said


def test_ctrl_c_in_local_before_any_job_ran_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT while local is starting or making its input: exit 130, a line saying so, no traceback."""
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        local = subprocess.Popen(
            [sys.executable, "-m", "agent", "local", "--scenario", "144p30-h264", "--jobs", "1", "--duration", "30",
             "--work-dir", str(tmp_path / "work")],
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_environment(),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Running" not in out.read_text() and time.monotonic() < deadline and local.poll() is None:
            time.sleep(0.05)
        local.send_signal(signal.SIGINT)
        _, err = local.communicate(timeout=RUN_TIMEOUT_S)
    assert "Traceback" not in err + out.read_text(), err
    assert "interrupted by SIGINT" in err, err
    assert local.returncode == 130, err
