"""A farm of real processes for the dashboard's tests, started without trio, and the browser that looks at it.

The browser tests are plain synchronous functions (Playwright's sync API), so
one farm can serve a whole module: trio fixtures live for one test only. Each
process logs to stderr; a thread keeps every line, so a test can wait for a
line and show the whole log when it fails. Everything binds 127.0.0.1, port 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from agent.config import API_KEY_ENV
from tests.support import REPO, START_TIMEOUT_S

# Debian's chromium (tests/apt-packages.txt); Playwright's own browser downloads are not used.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@attrs.define
class Child:
    """A child process whose stderr lines a thread collects."""

    name: str
    popen: subprocess.Popen[bytes]
    lines: list[str] = attrs.field(factory=list)
    _changed: threading.Condition = attrs.field(factory=threading.Condition)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def collect(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """The first log line matching ``pattern``; fails with the log if none comes in time."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if match := regex.search(line):
                        return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.popen.poll() is not None:
                    break
                self._changed.wait(min(left, 0.5))
        raise AssertionError(f"{self.name}: no line matching {pattern!r}; log:\n{self.log}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, args: Sequence[str]) -> Child:
    """Start ``python -m agent ARGS`` and collect its log."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop(API_KEY_ENV, None)  # a key from the developer's shell must not leak in
    popen = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO, env=environment,
    )
    child = Child(name, popen)
    threading.Thread(target=child.collect, daemon=True).start()
    return child


@contextmanager
def running(*children: Child) -> Iterator[None]:
    """Stop the children, newest first, when the block ends: agents before their master."""
    try:
        yield
    finally:
        for child in reversed(children):
            child.stop()


def start_master(tmp: Path, *extra: str) -> tuple[Child, str]:
    master = start("master", ["master", "--host", "127.0.0.1", "--port", "0", "--db", str(tmp / "master.db"), *extra])
    return master, master.wait_for(r"listening on (https?://\S+)").group(1)


def start_agent(name: str, master_url: str, work_dir: Path, *extra: str) -> Child:
    agent = start(name, [
        "--master", master_url, "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--work-dir", str(work_dir),
        "--heartbeat-interval", "1s", "--allow-master-as-worker", "--skip-confirmation", *extra,
    ])
    agent.wait_for(r"Metrics and health on (http://\S+)")
    return agent
