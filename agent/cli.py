"""Command-line parsing for every role; the roles themselves live elsewhere.

``python -m agent [worker flags]`` runs the worker agent (console script
``ffrtmp-agent``); ``python -m agent master|local|jobs|nodes ...`` run the
other roles; ``ffrtmp jobs|nodes ...`` is the operator CLI alone.

Worker flags keep the original Go agent's names. The worker's and the
master's flags are declared once, on the fields of ``AgentConfig`` and
``MasterConfig``; ``agent/settings.py`` makes the flags, the ``FFRTMP_<FLAG>``
environment variables (``--poll-interval`` -> ``FFRTMP_POLL_INTERVAL``) and the
``--config`` file keys from them, and builds the config. The API key reads
``FFMPEG_RTMP_API_KEY`` as the original did, or a file (``--api-key-file``),
which keeps it out of ``ps``.
"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence, TypeVar

import attrs
import trio

from agent import __version__
from agent.config import API_KEY_ENV, AgentConfig, ClientTLS, ConfigError, MasterConfig, ServerTLS
from agent.local_plan import DEFAULT_OUTPUT_DIR, GENERATED_DURATION_S, GENERATED_JOBS, MEDIA_EXTENSIONS
from agent.settings import (
    CONFIG_FILE,
    CONNECTION,
    COUNT,
    DIR,
    DIRS,
    FILE,
    SECONDS,
    SWITCH,
    TEXT,
    TLS,
    Kind,
    Setting,
    SettingsParser,
    add_settings,
    build,
    parse_positive,
    settings_of,
)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Make argparse print our message instead of 'invalid <function> value'."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{text!r} is not key=value; write for example --param preset=veryfast")
    return key, value


positive = _checked(parse_positive)
param = _checked(_parse_param)
# --param key=value, repeated: the pairs in order.
PARAMETERS = Kind(lambda text: [_parse_param(text)], "KEY=VALUE", combine=operator.add,
                  show=lambda pairs: " ".join(f"{key}={value}" for key, value in pairs) or "none")

_AGENT_SETTINGS = settings_of(AgentConfig)
_AGENT = {each.name: each for each in _AGENT_SETTINGS}

API_KEY_FILE = Setting(FILE, CONNECTION, "read the API key from this file instead; it wins over --api-key",
                       name="api_key_file")
# How the agent and the operator CLI reach the master.
MASTER_ACCESS = (_AGENT["master_url"], _AGENT["api_key"], API_KEY_FILE, *settings_of(ClientTLS))

_REGISTER = Setting(SWITCH, CONNECTION, "accepted for the original agent's scripts; the agent always registers, "
                    "as the master leases jobs only to registered nodes", name="register", default=True)

# The master's TLS flags: _server_tls makes MasterConfig.tls from them.
_MASTER_TLS = (
    Setting(SWITCH, TLS, "serve HTTPS with --cert and --key", name="tls", default=False),
    Setting(FILE, TLS, "the master's certificate (PEM)", name="cert", shown="master.crt with --generate-cert"),
    Setting(FILE, TLS, "its private key (PEM)", name="key", shown="master.key with --generate-cert"),
    Setting(SWITCH, TLS, "serve HTTPS with a self-signed certificate, written to --cert/--key unless they "
            "exist; agents then trust it with --ca <cert>", name="generate_cert", default=False),
    Setting(TEXT, TLS, "comma-separated DNS names the generated certificate covers", name="cert_hosts",
            default="", shown="localhost and this host's names"),
    Setting(TEXT, TLS, "comma-separated IP addresses it covers", name="cert_ips", default="",
            shown="127.0.0.1,::1"),
    Setting(SWITCH, TLS, "mutual TLS: require a client certificate signed by --ca from every client",
            name="mtls", default=False),
    Setting(FILE, TLS, "CA certificate client certificates must chain to, with --mtls", name="ca"),
)

# local's settings: its own, then the agent's it shares. LocalRun is built from them by hand, as the jobs
# it submits are not configuration.
_LOCAL = (
    Setting(TEXT, "", "scenario of every job", name="scenario", default="720p30-h264"),
    Setting(attrs.evolve(DIRS, metavar="PATH"), "", "a media file, or a directory: each of its files ending in "
            f"{' '.join(MEDIA_EXTENSIONS)} (directly in it); one job per file, read in place; repeatable",
            name="input", default=attrs.Factory(list), shown="none: --jobs jobs on a generated clip"),
    Setting(DIR, "", "where outputs go, created if needed; an input's output is named "
            "<input stem>.<scenario>.<ext>", name="output_dir", default=None,
            shown=f"./{DEFAULT_OUTPUT_DIR} with --input, else <work dir>/outputs/<job id>/"),
    Setting(COUNT, "", "number of jobs on a generated test clip; not with --input", name="jobs", default=None,
            shown=str(GENERATED_JOBS)),
    attrs.evolve(_AGENT["max_concurrent_jobs"], group="", default=2),
    Setting(SECONDS, "", "seconds of video per job", name="duration", default=None,
            shown=f"{GENERATED_DURATION_S:g} on a generated clip, the whole input with --input"),
    Setting(PARAMETERS, "", "job parameter key=value, repeatable (--param preset=veryfast)", name="param",
            default=attrs.Factory(list)),
    _AGENT["work_dir"],
    _AGENT["ffmpeg"],
    _AGENT["ladder_mode"],
    # The progress line and the result table are the output; logs only for trouble.
    attrs.evolve(_AGENT["log_level"], default="warning"),
)

_SETTINGS_HELP = (
    "Every flag also reads the environment variable FFRTMP_<FLAG> (--poll-interval: FFRTMP_POLL_INTERVAL) "
    "and the key <flag> of a --config TOML file (poll-interval = \"5s\"); a flag wins over the variable, the "
    "variable over the file. Switches also take a value, as the original agent's scripts write them "
    "(--adaptive=false). Durations are Go durations (30s, 1m30s, 250ms) or seconds."
)


_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def _add_version(parser: _Parser) -> _Parser:
    """``--version`` on every entry point, as each may be run alone."""
    parser.add_argument("--version", action="version", version=f"ffrtmp-agent {__version__}",
                        help="print the version and exit")
    return parser


def _add_master_access_flags(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, MASTER_ACCESS)


def worker_parser() -> SettingsParser:
    return _add_version(SettingsParser(
        prog="python -m agent",
        usage="%(prog)s [options]",
        description="The ffrtmp worker agent: claims transcoding jobs from a master and runs "
        "up to --max-concurrent-jobs encoders at once. Other roles: python -m agent "
        "master|local|jobs|nodes --help.",
        epilog=_SETTINGS_HELP,
        settings=(CONFIG_FILE, *MASTER_ACCESS, _REGISTER,
                  *(each for each in _AGENT_SETTINGS if each not in MASTER_ACCESS)),
    ))


def master_parser() -> SettingsParser:
    master = settings_of(MasterConfig)
    after_key = next(i for i, each in enumerate(master) if each.name == "api_key") + 1
    return _add_version(SettingsParser(
        prog="python -m agent master",
        usage="%(prog)s [options]",
        description="The ffrtmp job master.",
        epilog=_SETTINGS_HELP,
        settings=(CONFIG_FILE, *master[:after_key], API_KEY_FILE, *master[after_key:], *_MASTER_TLS),
    ))


def local_parser() -> argparse.ArgumentParser:
    parser = SettingsParser(
        prog="python -m agent local",
        description="One machine, no set-up: an embedded master and one worker in one process. "
        "Transcodes each --input file into --output-dir, or runs --jobs jobs on a generated test clip; "
        "shows progress, prints a result table; exits 1 if any job failed.",
    )
    add_settings(parser, _LOCAL)
    return _add_version(parser)


def console_parser(prog: str) -> argparse.ArgumentParser:
    common = SettingsParser(add_help=False)
    _add_master_access_flags(common)
    common.add_argument("--output", choices=["table", "json"], default="table",
                        help="tables for people, json for scripts (default table)")
    # The connection flags work before the subcommand too (ffrtmp --master URL jobs list), as kubectl's do.
    parser = SettingsParser(prog=prog, description="Submit and watch ffrtmp jobs.", settings=MASTER_ACCESS)
    _add_version(parser)
    roles = parser.add_subparsers(dest="role", required=True)

    jobs = _add_version(roles.add_parser("jobs", help="submit, list, watch and cancel jobs")).add_subparsers(
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
    submit.add_argument("--input", type=Path, metavar="FILE", help="a media file of yours: uploaded to the master "
                        "(only what it lacks), encoded by any agent, its output delivered back for 'jobs download'")
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
        ("attempts", "list a job's attempts: node, start, end, outcome and error of each run"),
        ("delete", "forget a job that is not running, and the uploaded files no other job uses"),
    ):
        jobs.add_parser(action, help=described, parents=[common]).add_argument(
            "job_id", help="id or sequence number"
        )

    download = jobs.add_parser("download", help="write a job's delivered outputs to a directory, verified",
                               parents=[common])
    download.add_argument("job_id", help="id or sequence number")
    download.add_argument("-o", "--output-dir", type=Path, default=Path("."), metavar="DIR",
                          help="where to write them, created if needed (default: the current directory)")

    nodes = _add_version(roles.add_parser("nodes", help="list, drain and delete worker nodes")).add_subparsers(
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
    config = build(AgentConfig, args, api_key=api_key)
    return trio.run(run_agent, config)


def _run_master(argv: Sequence[str]) -> int:
    from agent.master.server import run_master

    parser = master_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    return run_master(build(MasterConfig, args, api_key=_api_key(parser, args), tls=_server_tls(parser, args)))


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
        inputs=args.input,
        output_dir=args.output_dir,
        ladder_mode=args.ladder_mode,
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


def _console_role(argv: Sequence[str]) -> str:
    """``jobs`` or ``nodes`` when the line names one after nothing but connection flags, as ``ffrtmp`` takes them."""
    valued = {each.option for each in MASTER_ACCESS if each.kind.bare is None}
    switches = {option for each in MASTER_ACCESS if each.kind.bare is not None
                for option in (each.option, f"--no-{each.key}")}
    at = 0
    while at < len(argv) and argv[at].split("=", 1)[0] in valued | switches:
        flag, _, value = argv[at].partition("=")
        at += 2 if flag in valued and not value else 1
    return argv[at] if at < len(argv) and argv[at] in ("jobs", "nodes") else ""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m agent``: the worker, or the role named first (connection flags may come before jobs|nodes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    role = argv[0] if argv else ""
    try:
        if role == "master":
            code = _run_master(argv[1:])
        elif role == "local":
            code = _run_local(argv[1:])
        elif _console_role(argv):
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
