"""Configuration of every role, as attrs classes whose fields declare their own flags.

Each field made with :func:`~agent.settings.setting` is a setting: its flag,
``FFRTMP_<FLAG>`` variable, ``--config`` key, ``--help`` text, group and default
are all in that one declaration, and the CLI builds these classes from it
(``agent/settings.py``). Nothing below the CLI reads ``os.environ`` or
``sys.argv``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import attrs

from agent.ladder import LADDER_MODES
from agent.scenarios import S3_BUCKET
from agent.settings import (
    ALLOW_LIST,
    CONCURRENCY,
    CONNECTION,
    COUNT,
    DAYS,
    DIR,
    DIRS,
    DURATION,
    ENGINES,
    FILE,
    GIGABYTES,
    HOST,
    JOBS,
    LISTENING,
    NUMBER,
    OBSERVABILITY,
    PORT,
    POSITIVE_DURATION,
    PROGRAM,
    SCHEDULING,
    SHUTDOWN,
    SWITCH,
    TEXT,
    TIMEOUT,
    TLS,
    URL,
    ConfigError,
    Kind,
    choice,
    nested,
    parse_days,
    parse_duration,
    setting,
)
from agent.worker.netguard import AllowList, as_allow_list


def _parse_s3_location(text: str) -> str:
    """``s3://bucket/prefix``, the bucket named as S3 allows; "" for none."""
    bucket = text.removeprefix("s3://").partition("/")[0]
    if text and (not text.startswith("s3://") or not S3_BUCKET.fullmatch(bucket)):
        reason = "is not an S3 location; write s3://bucket/prefix (a bucket of 3-63 lower-case letters, digits, - .)"
        raise ConfigError(f"{text!r} {reason}", reason)
    return text


S3_LOCATION = Kind(_parse_s3_location, "URL")


def s3_endpoint_setting(group: str, used_for: str) -> Any:
    """``--s3-endpoint``, declared once for the agent and the master.

    The endpoint is the operator's choice, trusted like the master's host: it
    is not checked against the private-address allow-lists.
    """
    return setting(
        "", TEXT, group, f"endpoint URL of the S3-compatible store for {used_for} (MinIO, Ceph, ...); "
        "credentials come from the standard AWS chain", shown="AWS",
    )

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


def default_work_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ffrtmp-agent"


@attrs.frozen
class ClientTLS:
    """How the agent and the CLI trust an ``https`` master, and prove who they are to it.

    ``ca`` None trusts the system store. ``cert``/``key`` are the client
    certificate a master with mutual TLS asks for. ``insecure_skip_verify``
    trusts any certificate; it is the only way to skip verification.
    """

    ca: Path | None = setting(None, FILE, TLS, "CA certificate that signed an https master's certificate",
                              shown="the system's trusted CAs")
    cert: Path | None = setting(None, FILE, TLS, "client certificate for a master with mutual TLS")
    key: Path | None = setting(None, FILE, TLS, "private key of --cert (may be the same PEM file)")
    insecure_skip_verify: bool = setting(
        False, SWITCH, TLS, "do not verify the master's certificate: insecure, for tests only"
    )


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


LOG_LEVEL = choice("debug", "info", "warning", "error")
LADDER_MODE = choice(*LADDER_MODES)


@attrs.define
class AgentConfig:
    """How a worker agent runs. Defaults are the original Go agent's; each field is its flag (see module doc)."""

    master_url: str = setting(DEFAULT_MASTER_URL, URL, CONNECTION, "master URL", flag="--master")
    api_key: str = setting(
        "", TEXT, CONNECTION, "API key for the master (visible in ps: prefer --api-key-file)",
        env=(API_KEY_ENV,), repr=False,
    )
    node_name: str = setting(
        "", TEXT, CONNECTION, "identity registered with the master", shown="<hostname>:<metrics port>"
    )
    heartbeat_interval: float = setting(30.0, DURATION, CONNECTION, "heartbeat period")
    # A master on this very host is refused unless allowed: the two compete for the CPU.
    allow_master_as_worker: bool = setting(
        False, SWITCH, CONNECTION, "run on the master's own host (development: the two compete for the CPU)"
    )
    # Allowed master-as-worker runs ask on a terminal first, unless this is set.
    skip_confirmation: bool = setting(
        False, SWITCH, CONNECTION, "with --allow-master-as-worker, do not ask on the terminal"
    )
    tls: ClientTLS = nested(ClientTLS)

    max_concurrent_jobs: int = setting(
        1, CONCURRENCY, SCHEDULING, "jobs run at once: a number, or auto (a quarter of the cores)"
    )
    # --adaptive: tune max_concurrent_jobs to the measured throughput, within these bounds
    # (adaptive_max_jobs 0: four per core), one step per window of adaptive_interval seconds.
    adaptive: bool = setting(
        False, SWITCH, SCHEDULING, "tune the number of jobs run at once while running: up while throughput "
        "rises, down when it falls or the CPU is saturated; starts at --max-concurrent-jobs",
    )
    adaptive_min_jobs: int = setting(1, COUNT, SCHEDULING, "lowest number of jobs --adaptive runs at once")
    adaptive_max_jobs: int = setting(
        0, NUMBER, SCHEDULING, "highest number of jobs --adaptive runs at once; 0 is four per core"
    )
    adaptive_interval: float = setting(
        10.0, DURATION, SCHEDULING, "measuring window of --adaptive; it changes the limit at most once per window"
    )
    poll_interval: float = setting(5.0, DURATION, SCHEDULING, "wait between polls while the queue is empty")
    # Celery keeps one task prefetched; ours is claimed only for an encode about to end (agent.worker.poller).
    prefetch: int = setting(
        1, NUMBER, SCHEDULING, "jobs claimed ahead while every slot is busy, each for an encode about to end, "
        "so the next one starts without a claim's round trip; 0 claims only for a free slot",
    )
    # Consecutive master errors, or jobs failing for platform reasons, that pause claiming.
    breaker_threshold: int = setting(
        5, COUNT, SCHEDULING, "consecutive master errors or platform job failures that pause claiming"
    )
    breaker_cooldown: float = setting(
        10.0, DURATION, SCHEDULING, "first pause of the circuit breaker; doubles on each re-open"
    )
    breaker_max_cooldown: float = setting(300.0, DURATION, SCHEDULING, "longest pause of the circuit breaker")

    work_dir: Path = setting(
        attrs.Factory(default_work_dir), DIR, JOBS, "where inputs are cached and outputs written", converter=Path
    )
    generate_input: bool = setting(True, SWITCH, JOBS, "generate a test input for jobs that name none")
    # Directories local job inputs may come from; none allows only URLs and generated inputs.
    input_dirs: list[Path] = setting(
        attrs.Factory(list), DIRS, JOBS, "directory jobs may read local input files from; repeatable "
        "(FFRTMP_INPUT_DIR separates several with ':')", flag="--input-dir",
        shown="none, so URLs and generated inputs only",
    )
    # A directory jobs may write outputs into; None keeps every output in work_dir.
    output_dir: Path | None = setting(
        None, DIR, JOBS, "directory jobs may write outputs into", shown="none, so outputs stay in --work-dir"
    )
    # Space the work dir keeps free: a job whose files would cut into it is refused.
    min_free_mb: int = setting(100, NUMBER, JOBS, "MiB the work dir keeps free; jobs that would use it are refused")
    # Bound of the generated-input cache; least recently used clips go first.
    input_cache_mb: int = setting(
        2048, COUNT, JOBS, "bound of the generated-input cache in MiB, least recently used first out"
    )
    # The original agent's PERSIST_OUTPUTS / PERSIST_INPUTS: keep files after the job.
    persist_outputs: bool = setting(
        True, SWITCH, JOBS, "keep output files after the job", env=("PERSIST_OUTPUTS", "FFRTMP_PERSIST_OUTPUTS")
    )
    persist_inputs: bool = setting(
        True, SWITCH, JOBS, "keep generated inputs for later jobs", env=("PERSIST_INPUTS", "FFRTMP_PERSIST_INPUTS")
    )
    # Seconds a job may run when it sets no resource_limits.timeout_sec; None = no limit.
    job_timeout: float | None = setting(
        None, TIMEOUT, JOBS, "stop a job that runs longer, unless it sets its own timeout; 0 is no limit"
    )
    # Seconds an encoder's output may stand still before the job fails as stalled; 0 = never.
    stall_timeout: float = setting(
        300.0, DURATION, JOBS, "stop an encoder whose output time and frame count stand still this long; "
        "its job fails as stalled and is retried; 0 is never",
    )
    # The loopback, private and link-local addresses a job's input URLs (their
    # redirects and playlist entries too) and its own rtmp_url may reach, checked
    # after name resolution (agent/worker/netguard.py). True allows them all;
    # none by default, so a job cannot probe the worker's network.
    allow_private_inputs: AllowList = setting(
        attrs.Factory(AllowList), ALLOW_LIST, JOBS, "let job inputs (URLs, their redirects, HLS segments, "
        "rtmp/srt) reach loopback, private or link-local addresses: alone or true for all of them, or HOST, "
        "HOST:PORT, IP or IP:PORT entries, comma separated or repeated, for just those", converter=as_allow_list,
    )
    allow_private_outputs: AllowList = setting(
        attrs.Factory(AllowList), ALLOW_LIST, JOBS, "let a job's own rtmp_url and deliver=http(s) URL reach such "
        "addresses, in the same forms; the default URL on the --master host is always allowed",
        converter=as_allow_list,
    )
    s3_endpoint: str = s3_endpoint_setting(JOBS, "s3:// inputs and deliver=s3://")

    ffmpeg: str = setting(
        "", PROGRAM, ENGINES, "encoder binary", shown="ffmpeg on PATH, else the imageio-ffmpeg wheel's"
    )
    # gst-launch-1.0 to run GStreamer jobs with; "" looks it up on PATH.
    gst_launch: str = setting("", PROGRAM, ENGINES, "gst-launch-1.0 binary for GStreamer jobs", shown="the one on PATH")
    # How a ladder job's rungs run (agent/ladder.py choose_mode): one FFmpeg process that decodes once, or one
    # process per rung; auto picks single, which was faster where we measured.
    ladder_mode: str = setting(
        "auto", LADDER_MODE, ENGINES, "how a ladder job runs its rungs: single (one FFmpeg process, one decode, "
        "split to N encoders), split (one process per rung, at once, in the job's slot) or auto"
    )

    shutdown_grace: float = setting(30.0, DURATION, SHUTDOWN, "time running jobs get to finish after SIGTERM")
    # Extra seconds the encoder gets after the graceful stop, before SIGKILL.
    kill_timeout: float = setting(10.0, DURATION, SHUTDOWN, "time from asking an encoder to stop to SIGKILL")

    metrics_host: str = setting("0.0.0.0", HOST, OBSERVABILITY, "address the metrics server binds")
    # 0 asks the OS for a free port (tests, the one-process mode).
    metrics_port: int = setting(
        9091, PORT, OBSERVABILITY, "port of /metrics /health /ready; 0 picks a free one"
    )
    log_level: str = setting("info", LOG_LEVEL, OBSERVABILITY, "log verbosity")
    # Unattended runs (systemd, containers) pause for long on 401 instead of exiting.
    exit_on_auth_error: bool = True

    def node_address(self, bound_port: int) -> str:
        """The identity we register under: one node per agent, even several on one host."""
        return self.node_name or f"{socket.gethostname()}:{bound_port}"


@attrs.define
class MasterConfig:
    """How the master runs; each field with a flag declares it (see module doc)."""

    host: str = setting("0.0.0.0", HOST, LISTENING, "address to bind")
    port: int = setting(8080, PORT, LISTENING, "port to listen on")
    # SQLite file; "" keeps the store in memory (tests, the one-process mode).
    db: str = setting("master.db", TEXT, LISTENING, "SQLite file; '' keeps the queue in memory")
    # PostgreSQL URL; when set it replaces ``db``, and several masters may share it.
    db_dsn: str = setting(
        "", TEXT, LISTENING, "PostgreSQL URL (postgresql://user:password@host/db) instead of --db; several "
        "masters may share it (needs the [postgres] extra)", repr=False,
    )
    # Uploaded inputs and delivered outputs ("" beside --db; a temporary directory for --db '').
    artifacts_dir: str = setting(
        "", TEXT, LISTENING, "directory of uploaded inputs and delivered outputs",
        shown="<db>.artifacts beside --db; ./ffrtmp-artifacts with --db-dsn; a temporary one with --db ''",
    )
    artifacts: str = setting(
        "", S3_LOCATION, LISTENING, "s3://bucket/prefix: keep artifacts in an S3 bucket instead, so that "
        "several masters on one PostgreSQL serve the same files (needs the [s3] extra); uploads in progress "
        "are staged in --artifacts-dir", shown="none: the directory",
    )
    s3_endpoint: str = s3_endpoint_setting(LISTENING, "--artifacts s3://")
    # Bound of that directory: an upload past it is answered 507.
    artifacts_max_gb: float = setting(
        0.0, GIGABYTES, LISTENING, "most the artifact store may hold, in GiB; an upload past it is refused "
        "with 507; 0 is no quota (the disk's free space still bounds it)",
    )
    api_key: str = setting(
        "", TEXT, CONNECTION, "require this API key from every client (visible in ps: prefer --api-key-file)",
        env=(API_KEY_ENV,), repr=False,
    )
    # Accept the shared API key on node routes, as the original Go agent sends it
    # (such agents get no node token); any key holder can then speak for any node.
    allow_legacy_agents: bool = setting(
        False, SWITCH, CONNECTION, "accept the shared API key on node routes, as original Go agents send it; "
        "any key holder can then speak for any node (off: each node needs its own token)",
    )
    # None serves plain HTTP; the CLI builds it from the TLS flags.
    tls: ServerTLS | None = None
    heartbeat_interval: float = setting(
        30.0, DURATION, SCHEDULING, "expected agent heartbeat period; 3 missed = offline"
    )
    # POST /jobs answers 429 while this many jobs are pending: a runaway script cannot
    # fill the database, and a full queue says so instead of growing for ever.
    max_pending_jobs: int = setting(
        100_000, COUNT, SCHEDULING, "refuse new jobs (429, Retry-After) while this many are pending"
    )
    # Seconds a request body may take to arrive whole; a body trickled slower is cut (408).
    body_timeout: float = setting(
        20.0, POSITIVE_DURATION, SCHEDULING, "time a request body may take to arrive whole; a slower one is cut "
        "with 408 (request headers get 5s)",
    )
    max_retries: int = setting(3, NUMBER, JOBS, "times a failed job is re-queued")
    # Seconds a job may run when it sets no resource_limits.timeout_sec; None = no limit.
    job_timeout: float | None = setting(
        None, TIMEOUT, JOBS, "fail a running job with no result after this long, unless it sets its own "
        "resource_limits.timeout_sec; 0 is no limit",
    )
    # Days finished jobs are kept; 0 keeps them for ever.
    cleanup_retention: float = setting(
        7.0, DAYS, JOBS, "days finished jobs are kept before they are deleted; 0 keeps them"
    )
    # Seconds an offline node stays listed before it is forgotten; 0 keeps it for ever.
    # Every agent run on a fresh --metrics-port 0 is a new node, so rows would pile up.
    node_retention: float = setting(
        24 * 3600.0, DURATION, JOBS, "how long an offline node stays listed before it is forgotten; 0 keeps them"
    )
    log_level: str = setting("info", LOG_LEVEL, OBSERVABILITY, "log verbosity")
