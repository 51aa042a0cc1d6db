"""Settings as a user meets them: ``python -m agent`` processes reading --help, variables and --config files.

Real processes on 127.0.0.1; the agent of the last test registers with a real
master, so the file and the variable are seen to reach the running agent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from agent.client import MasterClient
from agent.settings import GROUPS
from tests.support import REPO, Processes, start_agent, start_master

AGENT_GROUPS = ("connection and auth", "TLS", "concurrency and scheduling", "jobs and media",
                "engines and hardware", "shutdown", "observability")


def run_agent(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m agent ARGS`` with only ``env`` of our variables set; its exit code and output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FFRTMP_", "FFMPEG_RTMP_", "PERSIST_"))}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**clean, **env}, check=False)


def test_agent_help_shows_the_groups_every_default_and_switch_pairs() -> None:
    """Seven groups in order, booleans as --x / --no-x, a default on every flag."""
    done = run_agent("--help", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    positions = [out.index(f"\n{title}:\n") for title in AGENT_GROUPS]
    assert positions == sorted(positions) and set(AGENT_GROUPS) <= set(GROUPS)
    assert "--adaptive / --no-adaptive" in out and "[ADAPTIVE]" not in out
    assert "--allow-private-inputs [HOSTS]" in out
    # Each flag's entry runs from its "  --" line to the next one; long ones have the help on the next line.
    flags = [" ".join(entry.split()) for entry in re.split(r"\n(?=  --)|\n\n", out)
             if entry.startswith("  --") and not entry.startswith("  --version")]
    assert len(flags) >= 40
    assert all("(default: " in entry for entry in flags), [entry for entry in flags if "(default: " not in entry]
    assert "--work-dir DIR" in out and "ffrtmp-agent)" in out


def test_master_help_groups_its_flags_and_shows_their_defaults() -> None:
    done = run_agent("master", "--help", COLUMNS="200")
    assert done.returncode == 0, done.stderr
    for title in ("listening and storage", "connection and auth", "TLS", "observability"):
        assert f"\n{title}:\n" in done.stdout
    assert "--mtls / --no-mtls" in done.stdout and "(default: 24h)" in done.stdout


def test_a_bad_environment_variable_is_one_line_naming_it() -> None:
    """Exit 2, the variable and its value, what is wrong; no traceback, no usage, no mention of a flag."""
    done = run_agent(FFRTMP_MAX_CONCURRENT_JOBS="0")
    assert done.returncode == 2
    assert done.stderr == "python -m agent: error: FFRTMP_MAX_CONCURRENT_JOBS=0: must be at least 1\n"


def test_a_bad_master_variable_is_one_line_naming_it() -> None:
    done = run_agent("master", FFRTMP_PORT="70000")
    assert done.returncode == 2
    assert done.stderr == "python -m agent master: error: FFRTMP_PORT=70000: is out of range 0-65535 (0 picks a free port)\n"


def test_a_bad_config_file_value_is_one_line_naming_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('poll-interval = "soon"\n')
    done = run_agent("--config", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f'python -m agent: error: {config}: poll-interval = "soon": is not a duration; '
        "write it as 30s, 1m30s, 250ms or a number of seconds"
    ]


async def test_a_config_file_and_a_variable_reach_the_running_agent(procs: Processes, tmp_path: Path) -> None:
    """The node registers under the file's node name, with the variable's concurrency as its slot count."""
    _, url = await start_master(procs, tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text('node-name = "from-file"\nmax-concurrent-jobs = 1\npoll-interval = "1s"\n')
    agent, _ = await start_agent(procs, "agent", url, tmp_path / "work", "--config", str(config),
                                 FFRTMP_MAX_CONCURRENT_JOBS="3")
    await agent.wait_for("Registered with")
    async with MasterClient(url) as client:
        [node] = await client.list_nodes()
    assert (node.address, node.labels["max_concurrent_jobs"]) == ("from-file", "3")
