"""Configuration of every role, as attrs classes, plus the value parsers flags share.

The CLI turns flags and environment variables into these classes; nothing
below the CLI reads ``os.environ`` or ``sys.argv``.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import attrs

from agent.worker.netguard import AllowList, as_allow_list

__all__ = [
    "AgentConfig",
    "ClientTLS",
    "ConfigError",
    "MasterConfig",
    "ServerTLS",
    "parse_days",
    "parse_duration",
]

DEFAULT_MASTER_URL = "http://localhost:8080"
API_KEY_ENV = "FFMPEG_RTMP_API_KEY"


class ConfigError(ValueError):
    """A flag or environment variable has a value we cannot use; the message says which."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``5s``, ``1m30s``, ``250ms``) or a bare number of seconds.

    Go syntax keeps the original agent's scripts working; a bare number is what
    people type.

    Raises:
        ConfigError: the text is neither.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ConfigError(
                f"{text!r} is not a duration; write it as 30s, 1m30s, 250ms or a number of seconds"
            ) from None
    if seconds < 0:
        raise ConfigError(f"{text!r} is negative; a duration must be zero or more")
    return seconds


def parse_days(text: str) -> float:
    """A number of days, fractions allowed (``0.5`` is twelve hours); zero or more.

    Raises:
        ConfigError: the text is not a number, or is negative.
    """
    try:
        days = float(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number of days; write for example 7 or 0.5") from None
    if not days >= 0:
        raise ConfigError(f"{text!r} must be zero or more days")
    return days


def default_work_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ffrtmp-agent"


@attrs.frozen
class ClientTLS:
    """How the agent and the CLI trust an ``https`` master, and prove who they are to it.

    ``ca`` None trusts the system store. ``cert``/``key`` are the client
    certificate a master with mutual TLS asks for. ``insecure_skip_verify``
    trusts any certificate; it is the only way to skip verification.
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    insecure_skip_verify: bool = False


@attrs.frozen
class ServerTLS:
    """The master's certificate, and the CA its clients' certificates must chain to (mutual TLS).

    With ``generate``, a self-signed certificate for ``hosts`` and ``ips`` is
    written to ``cert``/``key`` when they do not exist yet, and reused after,
    so agents that trust it keep trusting it across restarts.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    generate: bool = False
    hosts: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


@attrs.define
class AgentConfig:
    """How a worker agent runs. Defaults are the original Go agent's."""

    master_url: str = DEFAULT_MASTER_URL
    api_key: str = attrs.field(default="", repr=False)
    max_concurrent_jobs: int = 1
    poll_interval: float = 5.0
    heartbeat_interval: float = 30.0
    metrics_host: str = "0.0.0.0"
    # 0 asks the OS for a free port (tests, the one-process mode).
    metrics_port: int = 9091
    node_name: str = ""
    work_dir: Path = attrs.field(factory=default_work_dir, converter=Path)
    ffmpeg: str = ""
    generate_input: bool = True
    shutdown_grace: float = 30.0
    # Extra seconds the encoder gets after the graceful stop, before SIGKILL.
    kill_timeout: float = 10.0
    # Consecutive master errors, or jobs failing for platform reasons, that pause claiming.
    breaker_threshold: int = 5
    breaker_cooldown: float = 10.0
    breaker_max_cooldown: float = 300.0
    # Seconds a job may run when it sets no resource_limits.timeout_sec; None = no limit.
    job_timeout: float | None = None
    # Seconds an encoder's output may stand still before the job fails as stalled; 0 = never.
    stall_timeout: float = 300.0
    log_level: str = "info"
    # Unattended runs (systemd, containers) pause for long on 401 instead of exiting.
    exit_on_auth_error: bool = True
    # Directories local job inputs may come from; none allows only URLs and generated inputs.
    input_dirs: list[Path] = attrs.field(factory=list)
    # A directory jobs may write outputs into; None keeps every output in work_dir.
    output_dir: Path | None = None
    # gst-launch-1.0 to run GStreamer jobs with; "" looks it up on PATH.
    gst_launch: str = ""
    # Space the work dir keeps free: a job whose files would cut into it is refused.
    min_free_mb: int = 100
    # Bound of the generated-input cache; least recently used clips go first.
    input_cache_mb: int = 2048
    # The original agent's PERSIST_OUTPUTS / PERSIST_INPUTS: keep files after the job.
    persist_outputs: bool = True
    persist_inputs: bool = True
    # --adaptive: tune max_concurrent_jobs to the measured throughput, within these bounds
    # (adaptive_max_jobs 0: four per core), one step per window of adaptive_interval seconds.
    adaptive: bool = False
    adaptive_min_jobs: int = 1
    adaptive_max_jobs: int = 0
    adaptive_interval: float = 10.0
    tls: ClientTLS = attrs.field(factory=ClientTLS)
    # A master on this very host is refused unless allowed: the two compete for the CPU.
    allow_master_as_worker: bool = False
    # Allowed master-as-worker runs ask on a terminal first, unless this is set.
    skip_confirmation: bool = False
    # The loopback, private and link-local addresses a job's input URLs (their
    # redirects and playlist entries too) and its own rtmp_url may reach, checked
    # after name resolution (agent/worker/netguard.py). True allows them all;
    # none by default, so a job cannot probe the worker's network.
    allow_private_inputs: AllowList = attrs.field(factory=AllowList, converter=as_allow_list)
    allow_private_outputs: AllowList = attrs.field(factory=AllowList, converter=as_allow_list)

    def node_address(self, bound_port: int) -> str:
        """The identity we register under: one node per agent, even several on one host."""
        return self.node_name or f"{socket.gethostname()}:{bound_port}"


@attrs.define
class MasterConfig:
    """How the master runs."""

    host: str = "0.0.0.0"
    port: int = 8080
    # SQLite file; "" keeps the store in memory (tests, the one-process mode).
    db: str = "master.db"
    # PostgreSQL URL; when set it replaces ``db``, and several masters may share it.
    db_dsn: str = attrs.field(default="", repr=False)
    api_key: str = attrs.field(default="", repr=False)
    max_retries: int = 3
    heartbeat_interval: float = 30.0
    # Seconds a job may run when it sets no resource_limits.timeout_sec; None = no limit.
    job_timeout: float | None = None
    # Days finished jobs are kept; 0 keeps them for ever.
    cleanup_retention: float = 7.0
    # Seconds an offline node stays listed before it is forgotten; 0 keeps it for ever.
    # Every agent run on a fresh --metrics-port 0 is a new node, so rows would pile up.
    node_retention: float = 24 * 3600.0
    # POST /jobs answers 429 while this many jobs are pending: a runaway script cannot
    # fill the database, and a full queue says so instead of growing for ever.
    max_pending_jobs: int = 100_000
    # Seconds a request body may take to arrive whole; a body trickled slower is cut (408).
    body_timeout: float = 20.0
    log_level: str = "info"
    # None serves plain HTTP.
    tls: ServerTLS | None = None
    # Accept the shared API key on node routes, as the original Go agent sends it
    # (such agents get no node token); any key holder can then speak for any node.
    allow_legacy_agents: bool = False
