"""Settings declared once: flags, variables, the --config file and the config objects all come from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import console_parser, local_parser, master_parser, worker_parser
from agent.config import AgentConfig, ClientTLS, MasterConfig
from agent.settings import GROUPS, SettingsParser, build, format_duration, settings_of
from agent.worker.netguard import AllowList


def test_with_no_flags_the_built_configs_are_the_classes_defaults() -> None:
    """Defaults live on the config fields only: parsing nothing builds AgentConfig() and MasterConfig()."""
    assert build(AgentConfig, worker_parser().parse_args([])) == AgentConfig()
    assert build(MasterConfig, master_parser().parse_args([])) == MasterConfig()


def test_every_flag_fills_its_config_field() -> None:
    """A value for each kind reaches the attribute of the same name, nested TLS included."""
    args = worker_parser().parse_args([
        "--master", "https://m:8443", "--ca", "/ca.pem", "--insecure-skip-verify", "--max-concurrent-jobs", "3",
        "--poll-interval", "1m30s", "--job-timeout", "2m", "--input-dir", "/a", "--input-dir", "/b",
        "--allow-private-inputs", "127.0.0.1:8000", "--no-generate-input", "--metrics-port", "0",
    ])
    config = build(AgentConfig, args, api_key="k")
    assert (config.master_url, config.api_key, config.max_concurrent_jobs) == ("https://m:8443", "k", 3)
    assert config.tls == ClientTLS(ca=Path("/ca.pem"), insecure_skip_verify=True)
    assert (config.poll_interval, config.job_timeout, config.metrics_port) == (90.0, 120.0, 0)
    assert config.input_dirs == [Path("/a"), Path("/b")]
    assert config.allow_private_inputs and not config.allow_private_inputs.everything
    assert config.generate_input is False


def test_a_flag_wins_over_its_variable_and_the_variable_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Command line, then FFRTMP_<FLAG>, then the --config file, then the default."""
    config = tmp_path / "agent.toml"
    config.write_text('poll-interval = "1s"\nheartbeat-interval = "2s"\nkill-timeout = "3s"\n')
    monkeypatch.setenv("FFRTMP_POLL_INTERVAL", "4s")
    monkeypatch.setenv("FFRTMP_HEARTBEAT_INTERVAL", "5s")
    args = worker_parser().parse_args(["--config", str(config), "--poll-interval", "6s"])
    assert (args.poll_interval, args.heartbeat_interval, args.kill_timeout, args.shutdown_grace) == (6, 5, 3, 30)


def test_the_config_file_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FFRTMP_CONFIG names the file as --config does."""
    (tmp_path / "agent.toml").write_text('node-name = "edge-1"\n')
    monkeypatch.setenv("FFRTMP_CONFIG", str(tmp_path / "agent.toml"))
    assert worker_parser().parse_args([]).node_name == "edge-1"


def test_config_files_take_toml_types_and_lists(tmp_path: Path) -> None:
    """Booleans, numbers and strings as TOML writes them; repeatable flags take lists."""
    config = tmp_path / "agent.toml"
    config.write_text(
        'adaptive = true\nmax-concurrent-jobs = 3\npersist-outputs = false\ninput-dir = ["/a", "/b"]\n'
        'allow-private-inputs = ["127.0.0.1:8000", "media.lan"]\nstall-timeout = 0\n'
    )
    args = worker_parser().parse_args(["--config", str(config)])
    assert (args.adaptive, args.max_concurrent_jobs, args.persist_outputs) == (True, 3, False)
    assert args.input_dir == [Path("/a"), Path("/b")] and args.stall_timeout == 0
    assert len(args.allow_private_inputs.entries) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('pol = "5s"', "'pol' is not a setting; the keys are the flag names without --"),
        ('poll-interval = ["1s", "2s"]', 'poll-interval = ["1s", "2s"]: takes one value, not a list'),
        ("max-concurrent-jobs = 0", "max-concurrent-jobs = 0: must be at least 1"),
        ("poll-interval = {a = 1}", "must be a string, number, boolean or list"),
        ("poll-interval = ", "is not TOML"),
    ],
)
def test_a_bad_config_file_exits_with_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file, the key and what is wrong; no usage, which would not help."""
    config = tmp_path / "agent.toml"
    config.write_text(text + "\n")
    with pytest.raises(SystemExit) as exit_:
        worker_parser().parse_args(["--config", str(config)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and str(config) in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "adaptive"),
    [([], False), (["--adaptive"], True), (["--adaptive", "--no-adaptive"], False), (["--adaptive=false"], False),
     (["--adaptive", "true"], True), (["--adaptive=0"], False), (["--adaptive", "yes"], True)],
)
def test_switches_take_a_no_form_and_the_original_agents_values(flags: list[str], adaptive: bool) -> None:
    """--adaptive / --no-adaptive, and --adaptive=false or --adaptive true as the Go agent's scripts wrote them."""
    assert worker_parser().parse_args(flags).adaptive is adaptive


def test_a_no_switch_takes_no_value(capsys: pytest.CaptureFixture[str]) -> None:
    """--no-adaptive=true would be a contradiction; it is refused."""
    with pytest.raises(SystemExit):
        worker_parser().parse_args(["--no-adaptive=true"])
    assert "--no-adaptive takes no value" in capsys.readouterr().err


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose and unit files often leave FFRTMP_X= empty; that is the default, not an error."""
    monkeypatch.setenv("FFRTMP_POLL_INTERVAL", "")
    monkeypatch.setenv("FFRTMP_OUTPUT_DIR", "")
    args = worker_parser().parse_args([])
    assert (args.poll_interval, args.output_dir) == (5.0, None)


def test_input_dirs_add_up_when_repeated_and_split_on_colons_in_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """FFRTMP_INPUT_DIR=/a:/b is two directories; flags replace the variable."""
    monkeypatch.setenv("FFRTMP_INPUT_DIR", "/a:/b")
    assert worker_parser().parse_args([]).input_dir == [Path("/a"), Path("/b")]
    assert worker_parser().parse_args(["--input-dir", "/c", "--input-dir", "/d"]).input_dir == [Path("/c"), Path("/d")]


def test_allow_lists_merge_when_repeated_and_alone_allow_everything() -> None:
    """--allow-private-inputs alone is all; entries add up; true anywhere is all."""
    parse = worker_parser().parse_args
    assert parse(["--allow-private-inputs"]).allow_private_inputs == AllowList(everything=True)
    merged = parse(["--allow-private-inputs", "10.0.0.1", "--allow-private-inputs", "media.lan:80"])
    assert len(merged.allow_private_inputs.entries) == 2 and not merged.allow_private_inputs.everything
    assert parse(["--allow-private-outputs=false"]).allow_private_outputs == AllowList()


def test_the_original_agents_persist_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """PERSIST_OUTPUTS / PERSIST_INPUTS, as the Go agent named them, before FFRTMP_PERSIST_*."""
    monkeypatch.setenv("PERSIST_OUTPUTS", "false")
    monkeypatch.setenv("FFRTMP_PERSIST_OUTPUTS", "true")
    monkeypatch.setenv("FFRTMP_PERSIST_INPUTS", "0")
    args = worker_parser().parse_args([])
    assert (args.persist_outputs, args.persist_inputs) == (False, False)


def test_a_job_timeout_of_zero_is_no_limit() -> None:
    """0 on the command line is None in the config, on the worker and the master."""
    assert build(AgentConfig, worker_parser().parse_args(["--job-timeout", "0"])).job_timeout is None
    assert build(MasterConfig, master_parser().parse_args(["--job-timeout", "1h"])).job_timeout == 3600.0


@pytest.mark.parametrize("parser", [worker_parser, master_parser, local_parser])
def test_help_shows_a_default_for_every_flag_in_the_known_groups(parser: type[SettingsParser]) -> None:
    """Each flag's help ends with its default (local's own flags too); only the known groups are used."""
    built = parser()
    for action in built._actions:
        if action.dest not in ("help", "version"):
            assert "(default: " in (action.help or ""), action.option_strings
    titles = [group.title for group in built._action_groups]
    assert set(titles) - {"positional arguments", "options"} <= set(GROUPS)


def test_local_mode_shares_the_agents_declarations_with_its_own_defaults() -> None:
    """--work-dir, --ffmpeg and --log-level are the agent's settings; local logs only warnings by default."""
    args = local_parser().parse_args([])
    assert (args.work_dir, args.ffmpeg, args.log_level) == (AgentConfig().work_dir, "", "warning")


def test_every_agent_field_with_a_flag_is_a_setting_and_has_a_variable() -> None:
    """The fields settings_of finds are the flags' fields, with FFRTMP_<FLAG> unless named otherwise."""
    settings = {s.name: s for s in settings_of(AgentConfig)}
    assert settings["poll_interval"].variables == ("FFRTMP_POLL_INTERVAL",)
    assert settings["api_key"].variables == ("FFMPEG_RTMP_API_KEY",)
    assert settings["master_url"].option == "--master" and settings["input_dirs"].option == "--input-dir"
    assert "exit_on_auth_error" not in settings  # set by the agent's own code, not a flag


@pytest.mark.parametrize(("seconds", "text"), [(300.0, "5m"), (30.0, "30s"), (0.25, "250ms"), (7200.0, "2h"),
                                               (90.0, "90s"), (0.0, "0")])
def test_defaults_are_shown_as_go_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_defaults_are_made_afresh_for_each_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Factory defaults are called at parse time: no shared list, and the cache dir read from XDG_CACHE_HOME then."""
    worker_parser().parse_args([]).input_dir.append(Path("/x"))
    assert worker_parser().parse_args([]).input_dir == []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert worker_parser().parse_args([]).work_dir == tmp_path / "ffrtmp-agent"


@pytest.mark.parametrize(
    ("text", "says"),
    [("localhost:8080", "write for example http://localhost:8080"), ("ftp://master", "http:// or https://"),
     ("http://", "names no host"), ("https://master:99999", "port")],
)
def test_a_master_url_needs_http_or_https_and_a_host(text: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--master localhost:8080 is a usage error naming the flag and the value, not an endless retry."""
    with pytest.raises(SystemExit) as exit:
        worker_parser().parse_args(["--master", text])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and "--master" in err and repr(text) in err and says in err, err


def test_connection_flags_work_before_and_after_the_subcommand() -> None:
    """ffrtmp --master URL jobs list, and after it; the later one wins, and a switch leaves the subcommand alone."""
    parser = console_parser("ffrtmp")
    assert parser.parse_args(["--master", "http://a:1", "jobs", "list"]).master == "http://a:1"
    assert parser.parse_args(["jobs", "list", "--master", "http://b:1"]).master == "http://b:1"
    assert parser.parse_args(["--master", "http://a:1", "nodes", "list", "--master", "http://b:1"]).master == "http://b:1"
    skipping = parser.parse_args(["--insecure-skip-verify", "jobs", "status", "--insecure-skip-verify", "12"])
    assert (skipping.insecure_skip_verify, skipping.role, skipping.job_id) == (True, "jobs", "12")
    assert parser.parse_args(["jobs", "list"]).master == "http://localhost:8080"


def test_local_reads_its_own_flags_and_adds_up_params() -> None:
    """local's --jobs, --duration, repeated --param and --input; --jobs and --duration are None when not given."""
    args = local_parser().parse_args(["--jobs", "2", "--duration", "1.5", "--param", "a=1", "--param", "b=2",
                                      "--input", "a.mp4", "--input", "clips", "--output-dir", "out"])
    assert (args.jobs, args.duration, args.param) == (2, 1.5, [("a", "1"), ("b", "2")])
    assert (args.input, args.output_dir) == ([Path("a.mp4"), Path("clips")], Path("out"))
    defaults = local_parser().parse_args([])
    assert (defaults.scenario, defaults.jobs, defaults.max_concurrent_jobs, defaults.param) == ("720p30-h264", None, 2, [])
    assert (defaults.duration, defaults.input, defaults.output_dir) == (None, [], None)
