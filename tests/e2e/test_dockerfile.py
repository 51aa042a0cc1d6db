"""The Dockerfile's promises, checked without Docker: the work dir is a volume, the health check follows the
configured port, and the stop timeout it documents covers the agent's worst-case stop.

The HEALTHCHECK command runs as written (the image's ``python`` replaced by this
interpreter) against a real agent process on 127.0.0.1, port 0.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import trio

from tests.support import REPO, Processes, start_agent, start_master

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instruction(name: str) -> str:
    """The argument of a Dockerfile instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    match = re.search(rf"^{name} (.+)$", joined, re.MULTILINE)
    assert match, f"no {name} in the Dockerfile"
    return match.group(1).strip()


def image_env() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", instruction("ENV")))


def test_the_work_dir_with_the_node_token_is_a_volume() -> None:
    """VOLUME is the FFRTMP_WORK_DIR the agent uses, so node-tokens/ and outputs survive a new container."""
    assert json.loads(instruction("VOLUME")) == [image_env()["FFRTMP_WORK_DIR"]]
    assert instruction("STOPSIGNAL") == "SIGTERM"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def health_check(port: int) -> int:
    argv = json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1])
    assert argv[0] == "python"
    env = {**os.environ, "FFRTMP_METRICS_PORT": str(port)}
    done = await trio.run_process([sys.executable, *argv[1:]], env=env, check=False, capture_stderr=True)
    return done.returncode


@pytest.mark.slow
async def test_the_health_check_follows_the_port_and_the_stop_timeout_covers_the_worst_case(
    procs: Processes, tmp_path: Path
) -> None:
    """Healthy on the agent's FFRTMP_METRICS_PORT, unhealthy on a port where nothing listens; the documented
    --stop-timeout covers the worst-case stop the agent logs with the image's defaults."""
    _, url = await start_master(procs, tmp_path)
    agent, status_url = await start_agent(procs, "docker", url, tmp_path / "work")
    port = int(status_url.rsplit(":", 1)[1].split("/")[0])
    assert await health_check(port) == 0
    assert await health_check(free_port()) != 0
    worst = await agent.wait_for(r"Worst-case stop time (\d+)s")
    documented = re.search(r"--stop-timeout (\d+)", DOCKERFILE)
    assert documented and int(documented.group(1)) >= int(worst.group(1))
