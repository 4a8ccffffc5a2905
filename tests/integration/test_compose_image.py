"""The compose stack as the Dockerfile and docker-compose.yml define it, without a Docker engine.

The image's file set is built from the Dockerfile and .dockerignore (tests/helpers/image.py);
then each compose service's own command and environment, from docker-compose.yml, runs in it
against the session's Kafka and a fresh database: topic-init, migrate (twice: every later
`docker compose up` runs it again), the producer and the sink land events, the code server
loads the definitions, the webserver shows them, and the daemon's micro-batch sensor asks for
a run that the code server executes. Compose's network is this machine's loopback: a service
name our services reach is 127.0.0.1, and every port one of our services listens on a free
port of this machine."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from assets import microbatch_job
from sensors.microbatch import new_events_sensor
from streamflow.db import migrate
from streamflow.infra.processes import free_port
from tests.conftest import TEST_PII_KEY, scalar, wait_for
from tests.helpers import compose, image
from tests.integration.test_dagster_webserver import graphql

LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - a container's; here it becomes loopback
STOP_TIMEOUT_S = 30
ASSETS = "{ assetNodes { assetKey { path } } }"


@dataclass(frozen=True)
class Network:
    """Compose's network on loopback: host names and ports rewritten in commands and values."""

    hosts: dict[str, str]  # a service name our services connect to -> its address here
    ports: dict[str, str]  # a port one of our services listens on -> a free one here

    @classmethod
    def of(cls, services: dict[str, dict]) -> Network:
        ours = {name for name, svc in services.items() if "build" in svc}
        # Our services reached by others wait for them to be healthy: the code server.
        reached = {dep for svc in services.values()
                   for dep, spec in (svc.get("depends_on") or {}).items()
                   if dep in ours and spec["condition"] == "service_healthy"}
        listening = {cmd[cmd.index(flag) + 1] for name in ours
                     if (cmd := compose.command(services[name]))
                     for flag in ("-p", "--port") if flag in cmd}
        return cls(hosts={**dict.fromkeys(reached, LOOPBACK), EVERY_INTERFACE: LOOPBACK},
                   ports={port: str(free_port()) for port in listening})

    def rewrite(self, value: str) -> str:
        for old, new in {**self.hosts, **self.ports}.items():
            value = re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, value)
        return value


class Stack:
    """Our compose services, each run from the image with its own command and environment."""

    def __init__(self, built: image.Image, network: Network, overrides: dict[str, str],
                 logs: Path) -> None:
        self.image, self.network, self.overrides, self.logs = built, network, overrides, logs
        self.services = compose.services()
        self.started: dict[str, subprocess.Popen] = {}

    def environment(self, name: str) -> dict[str, str]:
        env = {k: self.network.rewrite(v)
               for k, v in compose.environment(self.services[name]).items()}
        return self.image.environ(env, HOME=str(self.image.path("/home")), **self.overrides)

    def _argv(self, args: list[str]) -> list[str]:
        return [self.network.rewrite(self.image.localise(arg)) for arg in args]

    def _spawn(self, name: str, args: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as out:
            return subprocess.Popen(self._argv(args), cwd=self.image.path(self.image.workdir),
                                    env=self.environment(name), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, *, timeout_s: float = 300) -> str:
        """A one-shot service (``restart: "no"``): its output; it must exit 0."""
        log = self.logs / f"{name}.log"
        proc = self._spawn(name, compose.command(self.services[name]), log)
        try:
            code = proc.wait(timeout_s)
        finally:
            self._stop(proc)
        assert code == 0, f"{name} exited {code}:\n{log.read_text()[-3000:]}"
        return log.read_text()

    def start(self, name: str) -> subprocess.Popen:
        proc = self._spawn(name, compose.command(self.services[name]),
                           self.logs / f"{name}.log")
        self.started[name] = proc
        return proc

    def alive(self, name: str) -> bool:
        code = self.started[name].poll()
        assert code is None, f"{name} exited {code}:\n{self.log(name)[-3000:]}"
        return True

    def healthy(self, name: str) -> bool:
        """The service's own healthcheck passes (and the service still runs)."""
        self.alive(name)
        check = self._spawn(name, compose.healthcheck(self.services[name]),
                            self.logs / f"{name}-healthcheck.log")
        try:
            return check.wait(60) == 0
        finally:
            self._stop(check)

    def stop(self, name: str) -> int:
        """SIGTERM, as `docker compose stop` sends: the exit code."""
        return self._stop(self.started.pop(name))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for name in reversed(list(self.started)):  # the daemon before its code server
            self.stop(name)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> int:
        """Its process group (run workers, forkservers): SIGTERM, SIGKILL after the timeout."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # as `docker compose stop` does after its grace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what the group leader left behind
        return code


@pytest.fixture(scope="module")
def built_image(tmp_path_factory) -> image.Image:
    return image.build(tmp_path_factory.mktemp("image") / "root")


def _regclass(url: str, *names: str) -> list[str | None]:
    return [scalar(url, "SELECT to_regclass(:n)::text", n=name) for name in names]


def test_the_compose_services_run_from_the_image(built_image, platform, fresh_database,
                                                 tmp_path, monkeypatch):
    services = compose.services()
    network = Network.of(services)
    code_port = network.ports[_option(compose.command(services["dagster-code-server"]), "-p")]
    stack = Stack(built_image, network, {
        # What .env and compose's network give the containers: the session's services.
        "DATABASE_URL": fresh_database, "KAFKA_BOOTSTRAP_SERVERS": platform.bootstrap,
        "STREAMFLOW_PII_KEY": TEST_PII_KEY.decode(),
        # workspace.yaml (written by migrate) takes the code server's port from the settings,
        # whose default is the port compose's code server listens on: moved with it.
        "STREAMFLOW_DAGSTER_CODE_PORT": code_port}, tmp_path)
    try:
        assert "user-events" in stack.run("topic-init")
        dagster_home = Path(stack.environment("migrate")["DAGSTER_HOME"])
        _check_migrate(stack, fresh_database, dagster_home, monkeypatch)

        stack.start("dagster-code-server")
        wait_for(lambda: stack.healthy("dagster-code-server"), timeout_s=240, interval_s=2,
                 message="the code server's healthcheck")

        stack.start("dagster-webserver")
        stack.start("producer")
        stack.start("sink")
        wait_for(lambda: stack.alive("sink") and scalar(
            fresh_database, "SELECT count(*) FROM raw.events"), timeout_s=120,
            message="events produced and landed by the producer and sink services")
        assert stack.stop("producer") == 0, stack.log("producer")[-2000:]
        assert stack.stop("sink") == 0, stack.log("sink")[-2000:]

        # The webserver shows what the code server loaded: the dbt models among the assets.
        wait_for(lambda: stack.healthy("dagster-webserver"), timeout_s=240, interval_s=2,
                 message="the webserver's healthcheck")
        web_port = network.ports[_option(compose.command(services["dagster-webserver"]), "-p")]
        nodes = graphql(f"http://{LOOPBACK}:{web_port}", ASSETS)["assetNodes"]
        assert "dbt/fct_events" in {"/".join(n["assetKey"]["path"]) for n in nodes}
        stack.stop("dagster-webserver")

        stack.start("dagster-daemon")
        # Notifications with the run: a run that found its range claimed by another (still
        # committing) succeeds with nothing of its own.
        run = wait_for(lambda: stack.alive("dagster-daemon") and stack.alive(
            "dagster-code-server") and scalar(
            fresh_database, "SELECT count(*) FROM streamflow.notifications") and scalar(
            fresh_database, "SELECT run_id FROM public.runs WHERE pipeline_name = :job AND "
            "status = 'SUCCESS' LIMIT 1", job=microbatch_job.name), timeout_s=300,
            interval_s=1, message="a micro-batch run launched by the daemon's sensor, and "
            "notifications", detail=lambda: _microbatch_state(stack, fresh_database))
        assert scalar(fresh_database, "SELECT value FROM public.run_tags WHERE run_id = :id "
                       "AND key = 'dagster/sensor_name'", id=run) == new_events_sensor.name

        # A later `docker compose up` runs migrate again with the stack running.
        _check_migrate(stack, fresh_database, dagster_home, monkeypatch)
        assert scalar(fresh_database, "SELECT status FROM public.runs WHERE run_id = :id",
                       id=run) == "SUCCESS"
        _check_the_image_imports_its_own_copy(stack)
    finally:
        stack.stop_all()


def _microbatch_state(stack: Stack, url: str) -> str:
    """What a failed wait for the first micro-batch run shows: the tables, the runs and the
    code server's and daemon's last words (run workers log into the code server's)."""
    counts = {name: scalar(url, f"SELECT count(*) FROM {name}") for name in (  # noqa: S608
        "raw.events", "streamflow.notifications", "raw.dead_letters", "raw.quarantine")}
    runs = scalar(url, "SELECT string_agg(run_id || ' ' || status, ', ') FROM public.runs "
                  "WHERE pipeline_name = :job", job=microbatch_job.name)
    return (f"rows: {counts}\nmicro-batch runs: {runs}\n"
            f"code server:\n{stack.log('dagster-code-server')[-4000:]}\n"
            f"daemon:\n{stack.log('dagster-daemon')[-2000:]}")


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _check_the_image_imports_its_own_copy(stack: Stack) -> None:
    """StreamFlow, its definitions and the dbt manifest come from the image, not the checkout."""
    probe = ("import streamflow, streamflow_defs; from streamflow import dbt_env; "
             "print(streamflow.__file__, streamflow_defs.__file__, dbt_env.manifest_path(), "
             "dbt_env.manifest_path().exists())")
    done = subprocess.run([str(stack.image.python), "-c", probe], capture_output=True,
                          text=True, timeout=120, cwd=stack.image.path("/"),
                          env=stack.environment("migrate"))
    assert done.returncode == 0, done.stderr
    *paths, manifest_exists = done.stdout.split()
    assert all(p.startswith(str(stack.image.root)) for p in paths), paths
    assert manifest_exists == "True", f"the image holds no dbt manifest at {paths[-1]}"


def _check_migrate(stack: Stack, url: str, dagster_home: Path, monkeypatch) -> None:
    """Compose's migrate: both migration histories at head in the data database, Dagster's
    storage there (no SQLite under DAGSTER_HOME), before any Dagster process opens it."""
    stack.run("migrate")
    assert migrate.current_revision(url) == migrate.head_revision()
    assert None not in _regclass(url, "raw.events", f"public.{migrate.VERSION_TABLE}",
                                 "public.alembic_version", "public.runs", "public.event_logs",
                                 "public.job_ticks")
    assert not list(dagster_home.rglob("*.db"))
    monkeypatch.setenv("DATABASE_URL", url)  # dagster.yaml reads it
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for storage in (instance.run_storage, instance.event_log_storage,
                        instance.schedule_storage):
            assert type(storage).__module__.startswith("dagster_postgres"), storage
            in_database, head = storage.alembic_version()
            assert in_database == head, (type(storage).__name__, in_database, head)
