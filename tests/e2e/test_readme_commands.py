"""The README's commands run as written, against real processes.

What runs: every ``python -m agent ...`` and ``ffrtmp ...`` line of the
README's literal blocks (the farm in "A farm on several machines", the submit
with parameters in "Jobs and scenarios", the node commands in "Nodes and
drains"), the generated-clip ladder of "Ladders", ``python -m agent --help`` and ``--version`` on every entry point,
and the error line the README quotes for a bad variable. The farm runs in a
temporary directory, so ``--db master.db`` lands there, with these changes
only:

* ``8080`` is a free port, and the host ``master`` is 127.0.0.1;
* the agent gets the flags every test agent gets (metrics on 127.0.0.1, any
  free port, its own work dir, allowed beside the master without a question);
* ``ffrtmp`` finds the master through ``FFRTMP_MASTER``, as on the master's
  own machine it would through the default ``http://localhost:8080``;
* ``--duration 120 --count 8`` becomes ``--duration 1 --count 2``, so the test
  takes seconds, not minutes on two cores;
* ``cancel|pause|resume|retry|logs ID`` and ``show|drain|undrain|delete NODE``
  run each command, in an order each is allowed in (pause, resume, cancel,
  retry, then cancel again, on the 1080p job; logs on the first one), with
  the real job number and node name in place of ``ID``, ``NODE`` and
  ``vm:9091``.

What does not run, and why (:data:`NOT_RUN`): the quickstart's ``$`` lines
make a virtual environment and install Debian packages (CI's ``.ci/run`` runs
them as written); the benchmarks take minutes (``tests/e2e/test_bench.py``
runs them small); the Docker lines need a Docker engine
(``tests/e2e/test_dockerfile.py`` checks what it can without one); the
``local --input`` lines and the farm's ``jobs submit --input``,
``download`` and ``delete`` lines of "Your own files" name the reader's own
files (``tests/e2e/test_local_files.py`` and ``tests/e2e/test_master_files.py``
run the same commands on clips they make); the ``s3://`` example needs a
bucket (``tests/integration/test_s3_jobs.py`` runs such jobs against moto's
S3 server).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from agent import __version__
from agent.config import API_KEY_ENV
from tests.support import REPO, START_TIMEOUT_S

pytestmark = pytest.mark.timeout(300)

README = REPO / "README.rst"
FFRTMP = Path(sys.executable).parent / "ffrtmp"
RUN_TIMEOUT_S = 120.0
# Lines of the README's literal blocks this test does not run; see the module docstring.
NOT_RUN = re.compile(
    r"^(\$ |python -m bench\.|python bench/|python -m agent local --input |ffrtmp jobs submit .*--input "
    r"|ffrtmp jobs (download|delete) |ffrtmp jobs submit .*s3://)"
)


def readme_commands() -> list[str]:
    """Every command line of the README's literal blocks, comments dropped, in order."""
    commands = []
    for line in README.read_text().splitlines():
        text = re.sub(r"\s+#.*$", "", line.strip())
        if line.startswith("   ") and re.match(r"(\$ |python |ffrtmp )", text):
            commands.append(text)
    return commands


def _environment(**extra: str) -> dict[str, str]:
    # ffrtmp's console script would import the installed copy of the package; the checkout comes first.
    env = {key: value for key, value in os.environ.items() if key != API_KEY_ENV and not key.startswith("FFRTMP_")}
    return env | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)} | extra


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@attrs.define
class Farm:
    """The README's farm: where it runs and the values its placeholders stand for."""

    cwd: Path
    port: int
    node: str = ""
    processes: list[subprocess.Popen[bytes]] = attrs.field(factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, command: str) -> list[str]:
        """The command as a process runs it: the program, and the README's words with the changes above."""
        words = shlex.split(command.replace("http://master:8080", self.url).replace("--port 8080", f"--port {self.port}")
                            .replace("--duration 120 --count 8", "--duration 1 --count 2"))
        words = [self.node if word in ("NODE", "vm:9091") else word for word in words]
        if words[0] == "ffrtmp":
            return [str(FFRTMP), *words[1:]]
        assert words[:3] == ["python", "-m", "agent"], command
        return [sys.executable, "-m", "agent", *words[3:]]

    def start(self, command: str, ready: str, *extra: str) -> None:
        log = self.cwd / f"{len(self.processes)}.log"
        with log.open("w") as err:
            process = subprocess.Popen([*self.argv(command), *extra], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err, cwd=self.cwd, env=_environment())
        self.processes.append(process)
        deadline = time.monotonic() + START_TIMEOUT_S
        while ready not in log.read_text():
            assert time.monotonic() < deadline and process.poll() is None, f"{command}:\n{log.read_text()}"
            time.sleep(0.1)

    def run(self, command: str) -> str:
        """Run a command to its end; it must exit 0. Its output."""
        done = subprocess.run(self.argv(command), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              cwd=self.cwd, env=_environment(FFRTMP_MASTER=self.url), timeout=RUN_TIMEOUT_S)
        assert done.returncode == 0 and "Traceback" not in done.stderr, f"{command}: {done.returncode}\n{done.stderr}"
        return done.stdout


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    if not FFRTMP.exists():
        pytest.skip(f"the ffrtmp console script is not installed next to {sys.executable}")
    farm = Farm(tmp_path, _free_port())
    try:
        yield farm
    finally:
        for process in reversed(farm.processes):
            process.terminate()
            process.wait(60)


def _expanded(command: str, order: tuple[str, ...]) -> list[str]:
    """``ffrtmp jobs cancel|pause ID`` as one command per verb of ``order``, each one the README names."""
    program, role, verbs, *rest = command.split(" ")
    assert set(order) <= set(verbs.split("|")), command
    return [" ".join([program, role, verb, *rest]) for verb in order]


@pytest.mark.slow
def test_the_farm_commands_run_as_written(farm: Farm) -> None:
    """Master, agent, submit, follow, list, the job and node verbs, as the README writes them, each exit 0."""
    commands = readme_commands()
    ran: set[str] = set()

    def run(command: str) -> str:
        ran.add(command)
        return farm.run(command)

    at = next(i for i, command in enumerate(commands) if command.startswith("python -m agent master"))
    master, agent, submit, follow, listing, job_verbs, nodes_list, node_verbs = commands[at:at + 8]
    ran |= {master, agent}
    farm.start(master, "listening on")
    farm.start(agent, "Metrics and health on", "--metrics-host", "127.0.0.1", "--metrics-port", "0",
               "--work-dir", str(farm.cwd / "work"), "--allow-master-as-worker", "--skip-confirmation")
    run(submit)
    run(follow)
    assert json.loads(run(listing))["count"] == 2
    [with_params] = [c for c in commands if c.startswith("ffrtmp jobs submit") and "--param preset=fast" in c]
    run(with_params)
    for command in _expanded(job_verbs, ("pause", "resume", "cancel", "retry", "cancel")):
        run(command.replace(" ID", " 3"))
    run(_expanded(job_verbs, ("logs",))[0].replace(" ID", " 1"))
    assert job_verbs.split()[2] == "cancel|pause|resume|retry|logs", "a job verb the test does not run"
    ran.add(job_verbs)
    header, row = run(nodes_list).splitlines()
    assert header.split()[1] == "ADDRESS", header
    farm.node = row.split()[1]
    named = [c for c in commands if "vm:9091" in c]
    assert [c.split()[2] for c in named] == ["show", "drain", "undrain", "delete"]
    for command in named:
        run(command)
    assert _expanded(node_verbs, ("show", "drain", "undrain", "delete")) == [c.replace("vm:9091", "NODE")
                                                                              for c in named]
    ran.add(node_verbs)
    ran |= {c for c in commands if c.startswith("python -m agent local ") and "ladder=" in c and not NOT_RUN.match(c)}
    assert set(commands) - ran == {c for c in commands if NOT_RUN.match(c)}, "a README command is neither run nor excused"


@pytest.mark.slow
def test_the_ladder_line_of_local_mode_writes_a_package(tmp_path: Path) -> None:
    """The generated-clip ladder of "Ladders" exits 0, which local mode gives only after the player checks pass."""
    [ladder] = [c for c in readme_commands() if c.startswith("python -m agent local ") and "ladder=" in c
                and not NOT_RUN.match(c)]
    done = subprocess.run([sys.executable, *shlex.split(ladder)[1:]], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, cwd=tmp_path, env=_environment(XDG_CACHE_HOME=str(tmp_path)),
                          timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert list((tmp_path / "ffrtmp-agent" / "outputs").glob("*/*.hls/master.m3u8")), done.stdout


def test_help_and_version_run_on_every_entry_point() -> None:
    """``python -m agent --help`` (the README's), and --help and --version on each role and console script."""
    for role in ([], ["master"], ["local"], ["jobs"], ["nodes"]):
        for flag, says in (("--help", "usage:"), ("--version", f"ffrtmp-agent {__version__}")):
            done = subprocess.run([sys.executable, "-m", "agent", *role, flag], capture_output=True, text=True,
                                  cwd=REPO, env=_environment(), timeout=RUN_TIMEOUT_S)
            assert done.returncode == 0 and says in done.stdout, (role, flag, done.stderr)
    for script in ("ffrtmp", "ffrtmp-agent"):
        path = Path(sys.executable).parent / script
        if path.exists():
            done = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=_environment(),
                                  timeout=RUN_TIMEOUT_S)
            assert (done.returncode, done.stdout) == (0, f"ffrtmp-agent {__version__}\n"), done.stderr


def test_the_quoted_error_for_a_bad_variable_is_what_the_agent_prints() -> None:
    """The README quotes ``python -m agent: error: FFRTMP_MAX_CONCURRENT_JOBS=0: must be at least 1``, exit 2."""
    quoted = re.search(r"``(python -m agent: error: FFRTMP_MAX_CONCURRENT_JOBS=0:\s+must be at\s+least 1)``",
                       README.read_text())
    assert quoted, "the README no longer quotes the error"
    done = subprocess.run([sys.executable, "-m", "agent"], capture_output=True, text=True, cwd=REPO,
                          env=_environment(FFRTMP_MAX_CONCURRENT_JOBS="0"), timeout=RUN_TIMEOUT_S)
    assert (done.returncode, done.stderr.strip()) == (2, " ".join(quoted.group(1).split()))
