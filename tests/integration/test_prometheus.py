"""Debian's Prometheus scrapes a real farm, and every query of the Grafana dashboard and the alert rules finds data.

The farm is a master (with an API key, as deploy/prometheus/prometheus.yml
expects) and two agents whose stub encoders report progress for a while, so
that jobs run while Prometheus scrapes every second. The configuration is
deploy/prometheus/prometheus.yml with its targets and key file pointed at the
test's processes; its job names and alerts.yml are used as they are.

What "finds data" means: a dashboard query returns at least one series, and
so does each metric selector inside it, so that ``a or b`` cannot hide a
metric nobody exports. An alert expression is a comparison that is normally
empty, so it must evaluate without error and each of its selectors return a
series. Grafana's variables are replaced as Grafana would: every node, a rate
window of several scrapes.

Network rules: everything binds 127.0.0.1; the farm uses port 0, Prometheus a
port found free just before; each process is stopped by what started it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import yaml

from agent.client import MasterClient
from agent.config import API_KEY_ENV
from agent.models import JobRequest
from tests.encoder_stubs import progressing
from tests.support import REPO, Processes, free_port, start_agent, start_master, stop_process

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ffrtmp-farm.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
MISSING = "run tests/setup.sh: Debian's prometheus package (tests/apt-packages.txt) installs {}"

# Grafana's variables as Prometheus must see them: all nodes, a window of many 1 s scrapes.
GRAFANA_VARIABLES = {"${node}": ".+", "$node": ".+", "$__rate_interval": "30s"}
# Long enough for Prometheus to start and scrape several times while the jobs run.
JOB_SECONDS = 20
API_KEY = "prometheus-test-key"
STEP_TIMEOUT_S = 40.0


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, MISSING.format(name)
    return found


# --- what the dashboard and the rules query ----------------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
      | (?P<matchers>\{[^}]*\})
      | (?P<range>\[[^\]]*\])
      | (?P<number>\d[\w.]*)
      | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<other>\S)""",
    re.VERBOSE,
)
# Words that are PromQL, not metrics: these are followed by a list of label names,
_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# and aggregations may be followed by one (``sum by (le) (...)``), not by their parenthesis.
_AGGREGATIONS = {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile",
                 "count_values"}
_KEYWORDS = _LABEL_LISTS | _AGGREGATIONS | {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def selectors(expr: str) -> list[str]:
    """The instant-vector selectors in a PromQL expression, ranges dropped: ``rate(x{a="b"}[5m])`` gives ``x{a="b"}``."""
    tokens = [(match.lastgroup, match.group()) for match in _TOKEN.finditer(expr)]
    found, skip_list = [], False
    for index, (kind, text) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if skip_list:
            skip_list = text != ")"
        elif kind == "name" and text.lower() in _LABEL_LISTS:
            skip_list = following[1] == "("
        elif kind == "name" and text.lower() not in _KEYWORDS and following[1] != "(":
            found.append(text + (following[1] if following[0] == "matchers" else ""))
        elif kind == "matchers" and (index == 0 or tokens[index - 1][0] != "name"):
            found.append(text)
    return found


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know in {expr!r}: add it to GRAFANA_VARIABLES"
    return expr


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """``(where, PromQL)`` for every panel target and every query variable of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        (f"panel {panel['title']!r}", grafana_to_promql(target["expr"]))
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            values = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            queries.append((f"variable ${variable['name']}", values.group(1) if values else query))
    return queries


def rule_queries() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [(f"rule {rule.get('alert') or rule['record']}", rule["expr"]) for group in rules["groups"]
            for rule in group["rules"]]


# --- Prometheus ----------------------------------------------------------------------------


def farm_config(master: str, agents: list[str], key_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml aimed at this farm, scraping every second."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"ffrtmp-master", "ffrtmp-agent"}, "the rules and the dashboard select on these job names"
    jobs["ffrtmp-master"]["static_configs"] = [{"targets": [master]}]
    jobs["ffrtmp-master"]["authorization"]["credentials_file"] = str(key_file)
    jobs["ffrtmp-agent"]["static_configs"] = [{"targets": agents}]
    return config


@attrs.frozen
class Prometheus:
    http: httpx.AsyncClient

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """The series an instant query returns; fails with Prometheus's error for a bad expression."""
        body = (await self.http.get("/api/v1/query", params={"query": promql})).json()
        assert body["status"] == "success", f"{promql!r}: {body.get('error')}"
        series: list[dict[str, Any]] = body["data"]["result"]
        return series

    async def wait_for_targets(self, count: int) -> None:
        with trio.fail_after(STEP_TIMEOUT_S):
            while True:
                targets = (await self.http.get("/api/v1/targets")).json()["data"]["activeTargets"]
                if len(targets) == count and all(target["health"] == "up" for target in targets):
                    return
                await trio.sleep(0.5)


@pytest.fixture
async def prometheus_for(tmp_path: Path) -> AsyncIterator[Any]:
    """Starts Prometheus on a configuration; stops it (and checks it stopped) when the test ends."""
    started: list[trio.Process] = []

    async def start(config: dict[str, Any]) -> Prometheus:
        config_file = tmp_path / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        check = subprocess.run([tool("promtool"), "check", "config", str(config_file)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        process = await trio.lowlevel.open_process(
            [tool("prometheus"), f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        started.append(process)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
        with trio.fail_after(STEP_TIMEOUT_S):
            while True:
                assert process.returncode is None, (tmp_path / "prometheus.log").read_text()
                try:
                    if (await http.get("/-/ready")).status_code == 200:
                        return Prometheus(http)
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)

    yield start
    with trio.CancelScope(shield=True):
        for process in started:
            await stop_process(process)
            assert process.returncode is not None


# --- tests ---------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules_and_the_configuration() -> None:
    """``promtool check rules`` on alerts.yml; ``check config`` on prometheus.yml (its key file exists only in a deployment)."""
    for argv in (["check", "rules", str(ALERTS)], ["check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)]):
        done = subprocess.run([tool("promtool"), *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_selectors_are_found_inside_functions_aggregations_and_comparisons() -> None:
    """Label lists, function names, ranges, numbers and keywords are not taken for metrics."""
    expr = (
        'sum by (le) (rate(a_bucket{x=~".+"}[5m])) / on() sum without (i) (b) > 0.5 '
        'and on() histogram_quantile(0.9, c[1m:10s]) or vector(1) unless d{y="z"} offset 5m'
    )
    assert selectors(expr) == ['a_bucket{x=~".+"}', "b", "c", 'd{y="z"}']
    assert selectors('up{job="ffrtmp-agent"} == 0') == ['up{job="ffrtmp-agent"}']


def test_the_dashboard_and_the_rules_use_grafana_variables_this_test_replaces() -> None:
    """Every query of the dashboard is plain PromQL once $node and $__rate_interval are replaced; each names a metric."""
    for where, promql in dashboard_queries() + rule_queries():
        assert selectors(promql), f"{where}: no metric in {promql!r}"


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_every_dashboard_and_alert_query_finds_data_from_a_real_farm(
    procs: Processes, prometheus_for: Any, tmp_path: Path
) -> None:
    """A master and two agents running jobs, scraped every second: no panel or rule queries a metric nobody exports."""
    key = {API_KEY_ENV: API_KEY}
    _, master_url = await start_master(procs, tmp_path, **key)
    stub = progressing(tmp_path / "stub", seconds=JOB_SECONDS)
    agents = [
        (await start_agent(procs, name, master_url, tmp_path / name, "--ffmpeg", str(stub.path),
                           "--max-concurrent-jobs", "2", "--shutdown-grace", "0", **key))[1]
        for name in ("agent1", "agent2")
    ]
    async with MasterClient(master_url, API_KEY) as client:
        request = JobRequest.from_json({"scenario": "144p30-h264", "parameters": {"duration": 1}})
        for _ in range(4):
            await client.submit_job(request)
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY)
    prometheus = await prometheus_for(farm_config(
        master_url.removeprefix("http://"), [url.removeprefix("http://").rstrip("/") for url in agents], key_file
    ))
    await prometheus.wait_for_targets(3)

    # Rates need two scrapes in their window and the stubs' first progress a moment: ask until all answer.
    dashboard, rules = dashboard_queries(), rule_queries()
    wanted = [(where, promql) for where, promql in dashboard] + [
        (f"{where}, selector {selector}", selector)
        for where, promql in dashboard + rules for selector in selectors(promql)
    ]
    running_seen = 0.0
    with trio.move_on_after(STEP_TIMEOUT_S):
        while wanted:
            wanted = [(where, promql) for where, promql in wanted if not await prometheus.query(promql)]
            [running] = await prometheus.query("sum(ffrtmp_active_jobs)")
            running_seen = max(running_seen, float(running["value"][1]))
            await trio.sleep(1)
    assert not wanted, "queries without data:\n" + "\n".join(f"{where}: {promql}" for where, promql in wanted)
    assert running_seen > 0, "no job was running while Prometheus scraped"
    for _, promql in rules:
        await prometheus.query(promql)  # evaluates without error, firing or not

    # Prometheus evaluates the rules itself too: none may report an error.
    groups = (await prometheus.http.get("/api/v1/rules")).json()["data"]["groups"]
    evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert {where.removeprefix("rule ") for where, _ in rules} == set(evaluated)
    assert all(rule["health"] != "err" for rule in evaluated.values()), evaluated
