"""Flag values: Go durations, booleans, concurrency."""

from __future__ import annotations

import pytest

from agent.cli import worker_parser
from agent.config import AgentConfig, ConfigError, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("1m30s", 90.0), ("250ms", 0.25), ("1h", 3600.0), ("1.5s", 1.5), ("30", 30.0), ("0", 0.0)],
)
def test_durations_read_go_syntax_and_bare_seconds(text: str, seconds: float) -> None:
    """What Go's time.ParseDuration accepts for our flags, plus plain numbers."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5 s", "s", "5x", "1m30", "-5s", "5s5"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    """A bad duration names the value and shows the syntax."""
    with pytest.raises(ConfigError, match="duration|negative"):
        parse_duration(text)


def test_worker_flags_keep_the_go_agent_names_and_defaults() -> None:
    """The original's flags parse, with its defaults."""
    args = worker_parser().parse_args(["--master", "http://m:8080", "--max-concurrent-jobs", "4"])
    assert args.master == "http://m:8080"
    assert args.max_concurrent_jobs == 4
    assert args.poll_interval == 5.0
    assert args.heartbeat_interval == 30.0
    assert args.metrics_port == 9091
    assert args.generate_input is True


def test_every_worker_flag_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """FFRTMP_<FLAG> sets the default; the API key reads the original's variable."""
    monkeypatch.setenv("FFRTMP_POLL_INTERVAL", "1m")
    monkeypatch.setenv("FFRTMP_MAX_CONCURRENT_JOBS", "3")
    monkeypatch.setenv("FFMPEG_RTMP_API_KEY", "k")
    args = worker_parser().parse_args([])
    assert (args.poll_interval, args.max_concurrent_jobs, args.api_key) == (60.0, 3, "k")


def test_the_stall_timeout_is_five_minutes_unless_set_and_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """--stall-timeout takes a Go duration, FFRTMP_STALL_TIMEOUT sets its default."""
    assert worker_parser().parse_args([]).stall_timeout == 300.0
    assert worker_parser().parse_args(["--stall-timeout", "0"]).stall_timeout == 0.0
    monkeypatch.setenv("FFRTMP_STALL_TIMEOUT", "1m30s")
    assert worker_parser().parse_args([]).stall_timeout == 90.0


def test_bad_flag_values_exit_with_a_message_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse shows our explanation, not 'invalid value'."""
    with pytest.raises(SystemExit):
        worker_parser().parse_args(["--max-concurrent-jobs", "0"])
    err = capsys.readouterr().err
    assert "--max-concurrent-jobs" in err and "at least 1" in err


def test_auto_concurrency_is_a_quarter_of_the_cores_and_at_least_one() -> None:
    args = worker_parser().parse_args(["--max-concurrent-jobs", "auto"])
    assert args.max_concurrent_jobs >= 1


def test_each_agent_registers_as_its_own_node() -> None:
    """Two agents on one host differ by metrics port unless named."""
    config = AgentConfig()
    assert config.node_address(9091) != config.node_address(9092)
    assert AgentConfig(node_name="edge-1").node_address(9091) == "edge-1"
