"""Command-line parsing for every role; the roles themselves live elsewhere.

``python -m agent [worker flags]`` runs the worker agent (console script
``ffrtmp-agent``); ``python -m agent master|local|jobs|nodes ...`` run the
other roles; ``ffrtmp jobs|nodes ...`` is the operator CLI alone.

Worker flags keep the original Go agent's names. Every flag also reads an
environment variable, ``FFRTMP_<FLAG>`` (``--poll-interval`` ->
``FFRTMP_POLL_INTERVAL``); the API key reads ``FFMPEG_RTMP_API_KEY`` as the
original did, or a file (``--api-key-file``), which keeps it out of ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import trio

from agent.config import (
    API_KEY_ENV,
    DEFAULT_MASTER_URL,
    AgentConfig,
    ClientTLS,
    ConfigError,
    MasterConfig,
    ServerTLS,
    default_work_dir,
    parse_days,
    parse_duration,
)
from agent.worker.netguard import AllowList


def _env(flag: str, default: str) -> str:
    return os.environ.get("FFRTMP_" + flag.upper().replace("-", "_"), default)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Make argparse print our message instead of 'invalid <function> value'."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{text!r} is not a boolean; write true or false")


def _parse_concurrency(text: str) -> int:
    """A positive number, or ``auto``: a quarter of the cores, as the seed recommends."""
    if text.strip().lower() == "auto":
        return max(1, (os.cpu_count() or 1) // 4)
    return _parse_positive(text)


def _parse_positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number such as 4") from None
    if value < 1:
        raise ConfigError(f"{value} must be at least 1")
    return value


def _parse_positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ConfigError(f"{text!r} must be a duration longer than 0, such as 20s")
    return seconds


def _parse_port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range 0-65535 (0 picks a free port)")
    return port


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{text!r} is not key=value; write for example --param preset=veryfast")
    return key, value


class _MergeAllowLists(argparse.Action):
    """A repeated ``--allow-private-*`` adds to the list; the first one replaces the environment's value."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        current = getattr(namespace, self.dest)
        setattr(namespace, self.dest, current.merged(values) if isinstance(current, AllowList) else values)


duration = _checked(parse_duration)
allow_list = _checked(lambda text: AllowList.parse([text]))
boolean = _checked(_parse_bool)
concurrency = _checked(_parse_concurrency)
port_number = _checked(_parse_port)
positive = _checked(_parse_positive)
positive_duration = _checked(_parse_positive_duration)
param = _checked(_parse_param)


def _add_logging_flags(parser: argparse.ArgumentParser, default: str = "info") -> None:
    parser.add_argument(
        "--log-level", default=_env("log-level", default),
        choices=["debug", "info", "warning", "error"], help=f"log verbosity (default {default})",
    )


def _add_api_key_flags(parser: argparse.ArgumentParser, described: str) -> None:
    parser.add_argument(
        "--api-key", default=os.environ.get(API_KEY_ENV, ""),
        help=f"{described} (env {API_KEY_ENV}; visible in ps: prefer --api-key-file)",
    )
    parser.add_argument(
        "--api-key-file", type=Path, default=_env("api-key-file", "") or None,
        help="read the API key from this file instead; it wins over --api-key",
    )


def _add_master_access_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master", default=_env("master", DEFAULT_MASTER_URL),
        help=f"master URL (default {DEFAULT_MASTER_URL}; env FFRTMP_MASTER)",
    )
    _add_api_key_flags(parser, "API key for the master")
    parser.add_argument("--ca", type=Path, default=_env("ca", "") or None,
                        help="CA certificate that signed an https master's certificate "
                        "(default: the system's trusted CAs)")
    parser.add_argument("--cert", type=Path, default=_env("cert", "") or None,
                        help="client certificate for a master with mutual TLS")
    parser.add_argument("--key", type=Path, default=_env("key", "") or None,
                        help="private key of --cert (may be the same PEM file)")
    parser.add_argument("--insecure-skip-verify", type=boolean, nargs="?", const=True,
                        default=_env("insecure-skip-verify", "false"),
                        help="do not verify the master's certificate: insecure, for tests only (default false)")


def worker_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="The ffrtmp worker agent: claims transcoding jobs from a master and runs "
        "up to --max-concurrent-jobs encoders at once. Other roles: python -m agent "
        "master|local|jobs|nodes --help.",
    )
    _add_master_access_flags(parser)
    parser.add_argument("--register", type=boolean, nargs="?", const=True, default=_env("register", "true"),
                        help="accepted for the original agent's scripts; the agent always registers, "
                        "as the master leases jobs only to registered nodes")
    parser.add_argument("--max-concurrent-jobs", type=concurrency, default=_env("max-concurrent-jobs", "1"),
                        help="jobs run at once: a number, or auto (cores/4) (default 1)")
    parser.add_argument("--adaptive", type=boolean, nargs="?", const=True, default=_env("adaptive", "false"),
                        help="tune the number of jobs run at once while running: up while throughput rises, "
                        "down when it falls or the CPU is saturated; starts at --max-concurrent-jobs "
                        "(default false)")
    parser.add_argument("--adaptive-min-jobs", type=positive, default=_env("adaptive-min-jobs", "1"),
                        help="lowest number of jobs --adaptive runs at once (default 1)")
    parser.add_argument("--adaptive-max-jobs", type=int, default=_env("adaptive-max-jobs", "0"),
                        help="highest number of jobs --adaptive runs at once (default 0: four per core)")
    parser.add_argument("--adaptive-interval", type=duration, default=_env("adaptive-interval", "10s"),
                        help="measuring window of --adaptive; it changes the limit at most once per window "
                        "(default 10s)")
    parser.add_argument("--poll-interval", type=duration, default=_env("poll-interval", "5s"),
                        help="wait between polls while the queue is empty (default 5s)")
    parser.add_argument("--heartbeat-interval", type=duration, default=_env("heartbeat-interval", "30s"),
                        help="heartbeat period (default 30s)")
    parser.add_argument("--metrics-port", type=port_number, default=_env("metrics-port", "9091"),
                        help="port of /metrics /health /ready (default 9091; 0 picks a free one)")
    parser.add_argument("--metrics-host", default=_env("metrics-host", "0.0.0.0"),
                        help="address the metrics server binds (default 0.0.0.0)")
    parser.add_argument("--node-name", default=_env("node-name", ""),
                        help="identity registered with the master (default <hostname>:<metrics port>)")
    parser.add_argument("--work-dir", type=Path, default=_env("work-dir", str(default_work_dir())),
                        help="where inputs are cached and outputs written")
    parser.add_argument("--ffmpeg", default=_env("ffmpeg", ""),
                        help="encoder binary (default: ffmpeg on PATH, else the imageio-ffmpeg wheel's)")
    parser.add_argument("--generate-input", type=boolean, nargs="?", const=True,
                        default=_env("generate-input", "true"),
                        help="generate a test input for jobs that name none (default true)")
    parser.add_argument("--shutdown-grace", type=duration, default=_env("shutdown-grace", "30s"),
                        help="time running jobs get to finish after SIGTERM (default 30s)")
    parser.add_argument("--kill-timeout", type=duration, default=_env("kill-timeout", "10s"),
                        help="time from asking an encoder to stop to SIGKILL (default 10s)")
    parser.add_argument("--job-timeout", type=duration, default=_env("job-timeout", "0"),
                        help="stop a job that runs longer, unless it sets its own timeout (default 0: none)")
    parser.add_argument("--stall-timeout", type=duration, default=_env("stall-timeout", "5m"),
                        help="stop an encoder whose output time and frame count stand still this long; "
                        "its job fails as stalled and is retried (default 5m, 0: never)")
    parser.add_argument("--breaker-threshold", type=positive, default=_env("breaker-threshold", "5"),
                        help="consecutive master errors or platform job failures that pause claiming (default 5)")
    parser.add_argument("--breaker-cooldown", type=duration, default=_env("breaker-cooldown", "10s"),
                        help="first pause of the circuit breaker; doubles on each re-open (default 10s)")
    parser.add_argument("--breaker-max-cooldown", type=duration, default=_env("breaker-max-cooldown", "5m"),
                        help="longest pause of the circuit breaker (default 5m)")
    parser.add_argument("--input-dir", type=Path, action="append",
                        default=[Path(p) for p in _env("input-dir", "").split(os.pathsep) if p],
                        help="directory jobs may read local input files from; repeatable "
                        "(env FFRTMP_INPUT_DIR, separated by ':'; default none: URLs and generated inputs only)")
    parser.add_argument("--output-dir", type=Path, default=_env("output-dir", "") or None,
                        help="directory jobs may write outputs into (default: outputs stay in --work-dir)")
    parser.add_argument("--gst-launch", default=_env("gst-launch", ""),
                        help="gst-launch-1.0 binary for GStreamer jobs (default: the one on PATH)")
    parser.add_argument("--min-free-mb", type=int, default=_env("min-free-mb", "100"),
                        help="MiB the work dir keeps free; jobs that would use it are refused (default 100)")
    parser.add_argument("--input-cache-mb", type=positive, default=_env("input-cache-mb", "2048"),
                        help="bound of the generated-input cache, least recently used first out (default 2048)")
    parser.add_argument("--persist-outputs", type=boolean, nargs="?", const=True,
                        default=os.environ.get("PERSIST_OUTPUTS", _env("persist-outputs", "true")),
                        help="keep output files after the job (env PERSIST_OUTPUTS; default true)")
    parser.add_argument("--persist-inputs", type=boolean, nargs="?", const=True,
                        default=os.environ.get("PERSIST_INPUTS", _env("persist-inputs", "true")),
                        help="keep generated inputs for later jobs (env PERSIST_INPUTS; default true)")
    parser.add_argument("--allow-master-as-worker", type=boolean, nargs="?", const=True,
                        default=_env("allow-master-as-worker", "false"),
                        help="run on the master's own host (development: the two compete for the CPU) "
                        "(default false)")
    parser.add_argument("--skip-confirmation", type=boolean, nargs="?", const=True,
                        default=_env("skip-confirmation", "false"),
                        help="with --allow-master-as-worker, do not ask on the terminal (default false)")
    parser.add_argument("--allow-private-inputs", type=allow_list, nargs="?", const=AllowList(everything=True),
                        action=_MergeAllowLists, default=_env("allow-private-inputs", "false"),
                        help="let job inputs (URLs, their redirects, HLS segments, rtmp/srt) reach loopback, "
                        "private or link-local addresses: alone or true for all of them, or HOST, HOST:PORT, "
                        "IP or IP:PORT entries, comma separated or repeated, for just those (default false)")
    parser.add_argument("--allow-private-outputs", type=allow_list, nargs="?", const=AllowList(everything=True),
                        action=_MergeAllowLists, default=_env("allow-private-outputs", "false"),
                        help="let a job's own rtmp_url reach such addresses, in the same forms; the default "
                        "URL on the --master host is always allowed (default false)")
    _add_logging_flags(parser)
    return parser


def master_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent master", description="The ffrtmp job master.")
    parser.add_argument("--host", default=_env("host", "0.0.0.0"), help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=port_number, default=_env("port", "8080"), help="port (default 8080)")
    parser.add_argument("--db", default=_env("db", "master.db"),
                        help="SQLite file (default master.db; '' keeps the queue in memory)")
    _add_api_key_flags(parser, "require this API key from every client")
    parser.add_argument("--tls", type=boolean, nargs="?", const=True, default=_env("tls", "false"),
                        help="serve HTTPS with --cert and --key (default false)")
    parser.add_argument("--cert", type=Path, default=_env("cert", "") or None,
                        help="the master's certificate (PEM; default master.crt with --generate-cert)")
    parser.add_argument("--key", type=Path, default=_env("key", "") or None,
                        help="its private key (PEM; default master.key with --generate-cert)")
    parser.add_argument("--generate-cert", type=boolean, nargs="?", const=True,
                        default=_env("generate-cert", "false"),
                        help="serve HTTPS with a self-signed certificate, written to --cert/--key unless "
                        "they exist; agents then trust it with --ca <cert> (default false)")
    parser.add_argument("--cert-hosts", default=_env("cert-hosts", ""),
                        help="comma-separated DNS names the generated certificate covers "
                        "(default localhost and this host's names)")
    parser.add_argument("--cert-ips", default=_env("cert-ips", ""),
                        help="comma-separated IP addresses it covers (default 127.0.0.1,::1)")
    parser.add_argument("--mtls", type=boolean, nargs="?", const=True, default=_env("mtls", "false"),
                        help="mutual TLS: require a client certificate signed by --ca from every client "
                        "(default false)")
    parser.add_argument("--ca", type=Path, default=_env("ca", "") or None,
                        help="CA certificate client certificates must chain to, with --mtls")
    parser.add_argument("--max-retries", type=int, default=int(_env("max-retries", "3")),
                        help="times a failed job is re-queued (default 3)")
    parser.add_argument("--heartbeat-interval", type=duration, default=_env("heartbeat-interval", "30s"),
                        help="expected agent heartbeat period; 3 missed = offline (default 30s)")
    parser.add_argument("--db-dsn", default=_env("db-dsn", ""),
                        help="PostgreSQL URL (postgresql://user:password@host/db) instead of --db; several "
                        "masters may share it (needs the [postgres] extra; env FFRTMP_DB_DSN)")
    parser.add_argument("--job-timeout", type=duration, default=_env("job-timeout", "0"),
                        help="fail a running job with no result after this long, unless it sets its own "
                        "resource_limits.timeout_sec (default 0: none)")
    parser.add_argument("--cleanup-retention", type=_checked(parse_days), default=_env("cleanup-retention", "7"),
                        help="days finished jobs are kept before they are deleted (default 7; 0 keeps them)")
    parser.add_argument("--node-retention", type=duration, default=_env("node-retention", "24h"),
                        help="how long an offline node stays listed before it is forgotten (default 24h; "
                        "0 keeps them)")
    parser.add_argument("--allow-legacy-agents", type=boolean, nargs="?", const=True,
                        default=_env("allow-legacy-agents", "false"),
                        help="accept the shared API key on node routes, as original Go agents send it; any key "
                        "holder can then speak for any node (default false: each node needs its own token)")
    parser.add_argument("--max-pending-jobs", type=positive, default=_env("max-pending-jobs", "100000"),
                        help="refuse new jobs (429, Retry-After) while this many are pending (default 100000)")
    parser.add_argument("--body-timeout", type=positive_duration, default=_env("body-timeout", "20s"),
                        help="time a request body may take to arrive whole; a slower one is cut with 408 "
                        "(default 20s; request headers get 5s)")
    _add_logging_flags(parser)
    return parser


def local_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent local",
        description="One machine, no set-up: an embedded master and one worker in one process. "
        "Submits --jobs jobs, shows progress, prints a result table; exits 1 if any job failed.",
    )
    parser.add_argument("--scenario", default="720p30-h264", help="scenario of every job (default 720p30-h264)")
    parser.add_argument("--jobs", type=positive, default=4, help="number of jobs (default 4)")
    parser.add_argument("--max-concurrent-jobs", type=concurrency, default="2",
                        help="jobs run at once (default 2; auto = cores/4)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of video per job (default 5)")
    parser.add_argument("--param", type=param, action="append", default=[],
                        help="job parameter key=value, repeatable (e.g. --param preset=veryfast)")
    parser.add_argument("--work-dir", type=Path, default=_env("work-dir", str(default_work_dir())),
                        help="where inputs are cached and outputs written")
    parser.add_argument("--ffmpeg", default=_env("ffmpeg", ""), help="encoder binary")
    # The progress line and the result table are the output; logs only for trouble.
    _add_logging_flags(parser, default="warning")
    return parser


def console_parser(prog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_master_access_flags(common)
    common.add_argument("--output", choices=["table", "json"], default="table",
                        help="tables for people, json for scripts (default table)")
    parser = argparse.ArgumentParser(prog=prog, description="Submit and watch ffrtmp jobs.")
    roles = parser.add_subparsers(dest="role", required=True)

    jobs = roles.add_parser("jobs", help="submit, list, watch and cancel jobs").add_subparsers(
        dest="command", required=True
    )
    submit = jobs.add_parser("submit", help="queue new jobs", parents=[common])
    submit.add_argument("--scenario", required=True, help="e.g. 720p30-h264, 1080p60-h265, 480p30-vp9")
    submit.add_argument("--duration", type=float, help="seconds of video")
    submit.add_argument("--bitrate", help="e.g. 2500k or 5M")
    submit.add_argument("--engine", default="auto", choices=["auto", "ffmpeg", "gstreamer"])
    submit.add_argument("--queue", default="default", choices=["live", "default", "batch"])
    submit.add_argument("--priority", default="medium", choices=["high", "medium", "low"])
    submit.add_argument("--param", type=param, action="append", default=[], help="key=value, repeatable")
    submit.add_argument("--count", type=positive, default=1, help="how many identical jobs (default 1)")
    status = jobs.add_parser("status", help="show one job, or all", parents=[common])
    status.add_argument("job_id", nargs="?", help="id or sequence number")
    status.add_argument("--follow", action="store_true", help="keep showing until the job ends")
    listing = jobs.add_parser("list", help="list jobs, oldest first, a page at a time", parents=[common])
    listing.add_argument("--status", default="", help="only jobs with this status (pending, processing, ...)")
    listing.add_argument("--node", default="", help="only jobs leased to this node (id or address)")
    listing.add_argument("--queue", default="", help="only jobs in this queue (live, default, batch)")
    how_many = listing.add_mutually_exclusive_group()
    how_many.add_argument("--limit", type=positive, help="show at most this many jobs, up to 1000 (default 100)")
    how_many.add_argument("--all", action="store_true", help="show every job, reading page after page")
    for action, described in (
        ("cancel", "cancel a job; it is never retried"),
        ("pause", "hold a job out of the queue; a running one is stopped and starts over on resume"),
        ("resume", "put a paused job back in the queue"),
        ("retry", "queue a failed or canceled job again, with a fresh retry budget"),
        ("logs", "print the encoder log a job's last result carried"),
    ):
        jobs.add_parser(action, help=described, parents=[common]).add_argument(
            "job_id", help="id or sequence number"
        )

    nodes = roles.add_parser("nodes", help="list, drain and delete worker nodes").add_subparsers(
        dest="command", required=True
    )
    nodes.add_parser("list", help="list nodes", parents=[common])
    for action, described in (
        ("show", "show one node"),
        ("drain", "let a node finish its jobs and give it no more until undrained; the agent stays "
         "connected, and the drain holds across its restarts"),
        ("undrain", "give a drained node jobs again"),
        ("delete", "forget a node; its jobs go back to the queue"),
    ):
        nodes.add_parser(action, help=described, parents=[common]).add_argument(
            "node_id", metavar="NODE", help="node id or name, as 'nodes list' shows them"
        )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Per-request lines from the HTTP stack drown the agent's own story.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def _api_key(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if args.api_key_file is None:
        return str(args.api_key)
    try:
        key: str = args.api_key_file.read_text().strip()
    except OSError as exc:
        parser.error(f"cannot read --api-key-file {args.api_key_file}: {exc.strerror}")
    if not key:
        parser.error(f"--api-key-file {args.api_key_file} is empty")
    return key


def _client_tls(args: argparse.Namespace) -> ClientTLS:
    return ClientTLS(ca=args.ca, cert=args.cert, key=args.key, insecure_skip_verify=args.insecure_skip_verify)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _server_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServerTLS | None:
    from agent.tls import default_cert_hosts, default_cert_ips

    if args.mtls and args.ca is None:
        parser.error("--mtls needs --ca: the CA that signs the agents' client certificates")
    if args.ca is not None and not args.mtls:
        parser.error("--ca on the master is the CA of client certificates; add --mtls to require them")
    if not (args.tls or args.generate_cert or args.mtls):
        return None
    if args.generate_cert:
        cert, key = args.cert or Path("master.crt"), args.key or Path("master.key")
    elif args.cert is None or args.key is None:
        parser.error("--tls needs --cert and --key, or --generate-cert for a self-signed certificate")
    else:
        cert, key = args.cert, args.key
    return ServerTLS(
        cert=cert, key=key, client_ca=args.ca if args.mtls else None, generate=args.generate_cert,
        hosts=_split(args.cert_hosts) or default_cert_hosts(), ips=_split(args.cert_ips) or default_cert_ips(),
    )


def _run_worker(argv: Sequence[str]) -> int:
    from agent.worker.agent import run_agent

    parser = worker_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    api_key = _api_key(parser, args)
    # Processes the agent starts (encoders, probes) must not inherit the key.
    os.environ.pop(API_KEY_ENV, None)
    config = AgentConfig(
        master_url=args.master,
        api_key=api_key,
        max_concurrent_jobs=args.max_concurrent_jobs,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        node_name=args.node_name,
        work_dir=args.work_dir,
        ffmpeg=args.ffmpeg,
        generate_input=args.generate_input,
        shutdown_grace=args.shutdown_grace,
        kill_timeout=args.kill_timeout,
        job_timeout=args.job_timeout or None,
        stall_timeout=args.stall_timeout,
        breaker_threshold=args.breaker_threshold,
        breaker_cooldown=args.breaker_cooldown,
        breaker_max_cooldown=args.breaker_max_cooldown,
        log_level=args.log_level,
        input_dirs=args.input_dir,
        output_dir=args.output_dir,
        gst_launch=args.gst_launch,
        min_free_mb=args.min_free_mb,
        input_cache_mb=args.input_cache_mb,
        persist_outputs=args.persist_outputs,
        persist_inputs=args.persist_inputs,
        adaptive=args.adaptive,
        adaptive_min_jobs=args.adaptive_min_jobs,
        adaptive_max_jobs=args.adaptive_max_jobs,
        adaptive_interval=args.adaptive_interval,
        tls=_client_tls(args),
        allow_master_as_worker=args.allow_master_as_worker,
        skip_confirmation=args.skip_confirmation,
        allow_private_inputs=args.allow_private_inputs,
        allow_private_outputs=args.allow_private_outputs,
    )
    return trio.run(run_agent, config)


def _run_master(argv: Sequence[str]) -> int:
    from agent.master.server import run_master

    parser = master_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    return run_master(
        MasterConfig(
            host=args.host,
            port=args.port,
            db=args.db,
            api_key=_api_key(parser, args),
            tls=_server_tls(parser, args),
            max_retries=args.max_retries,
            heartbeat_interval=args.heartbeat_interval,
            db_dsn=args.db_dsn,
            job_timeout=args.job_timeout or None,
            cleanup_retention=args.cleanup_retention,
            node_retention=args.node_retention,
            max_pending_jobs=args.max_pending_jobs,
            body_timeout=args.body_timeout,
            log_level=args.log_level,
            allow_legacy_agents=args.allow_legacy_agents,
        )
    )


def _run_local(argv: Sequence[str]) -> int:
    from agent.local import LocalRun, run_local

    args = local_parser().parse_args(argv)
    _setup_logging(args.log_level)
    run = LocalRun(
        scenario=args.scenario,
        jobs=args.jobs,
        max_concurrent_jobs=args.max_concurrent_jobs,
        duration=args.duration,
        parameters=dict(args.param),
        work_dir=args.work_dir,
        ffmpeg=args.ffmpeg,
    )
    return trio.run(run_local, run)


def _run_console(argv: Sequence[str], prog: str) -> int:
    from agent.console import run_console
    from agent.tls import client_context

    parser = console_parser(prog)
    args = parser.parse_args(argv)
    args.api_key = _api_key(parser, args)
    try:
        verify = client_context(_client_tls(args))
    except ConfigError as exc:
        parser.error(str(exc))
    return trio.run(run_console, args, verify)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m agent``: the worker, or the role named first."""
    argv = list(sys.argv[1:] if argv is None else argv)
    role = argv[0] if argv else ""
    try:
        if role == "master":
            code = _run_master(argv[1:])
        elif role == "local":
            code = _run_local(argv[1:])
        elif role in ("jobs", "nodes"):
            code = _run_console(argv, "python -m agent")
        else:
            code = _run_worker(argv)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def ffrtmp_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``ffrtmp``: the operator CLI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.exit(_run_console(argv, "ffrtmp"))
