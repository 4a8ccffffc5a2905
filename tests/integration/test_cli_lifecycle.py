"""`streamflow up` -> `status` -> `down` as a user runs them, in subprocesses, plus error paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streamflow.infra import kafka_server
from streamflow.infra.processes import free_port
from streamflow.settings import env_var_names, load_settings
from tests.conftest import wait_for

STREAMFLOW = [sys.executable, "-m", "streamflow.cli"]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in env_var_names()}
    env.update({"STREAMFLOW_HOME": str(home), "STREAMFLOW_KAFKA_PORT": str(free_port()),
                "STREAMFLOW_KAFKA_CONTROLLER_PORT": str(free_port()),
                "STREAMFLOW_DAGSTER_PORT": str(free_port()),
                "STREAMFLOW_DAGSTER_CODE_PORT": str(free_port()),
                "STREAMFLOW_LIVE_PORT": str(free_port()),
                "STREAMFLOW_METRICS_PORT": str(free_port()), **extra})
    return env


def _run(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMFLOW, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _status(env) -> tuple[int, dict]:
    result = _run("status", "--json", env=env)
    return result.returncode, json.loads(result.stdout)


def test_up_status_down_cycle_reuses_data(tmp_path):
    env = _env(tmp_path / "home")
    try:
        first = _run("up", env=env)
        assert first.returncode == 0, first.stderr + first.stdout
        assert "user-events (created)" in first.stdout
        code, doc = _status(env)
        assert code == 0 and doc["healthy"], doc
        assert {c["component"] for c in doc["components"]} == {
            "kafka", "postgres", "supervisor", "producer", "sink", "dagster-code-server",
            "dagster-webserver", "dagster-daemon", "live"}
        assert "Dagster UI: http://127.0.0.1:" in first.stdout
        assert all(c["healthy"] and c["pid"] for c in doc["components"])
        assert doc["kafka_bootstrap_servers"].endswith(env["STREAMFLOW_KAFKA_PORT"])
        assert doc["database_url"].startswith("postgresql://")
        pids = {c["component"]: c["pid"] for c in doc["components"]}

        # The demo stream flows: the supervised producer and sink land events ...
        wait_for(lambda: _landed(doc["database_url"]) > 0, timeout_s=60,
                 message="demo events in raw.events")
        wait_for(lambda: "events/s" in _component(env, "sink")["detail"], timeout_s=30,
                 message="the sink's live rate in status")
        # ... and a worker that dies is restarted by the supervisor.
        os.kill(pids["sink"], signal.SIGKILL)
        wait_for(lambda: _component(env, "sink")["pid"] not in (None, pids["sink"]),
                 timeout_s=30, message="the sink restarted")
        assert "restart #1" in (tmp_path / "home" / "logs" / "supervisor.log").read_text()
        pids = {c["component"]: c["pid"] for c in _status(env)[1]["components"]}
        assert not (tmp_path / "home" / "secrets" / "pii.key").stat().st_mode & 0o077

        again = _run("up", env=env)  # second `up`: nothing new is started
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert {c["component"]: c["pid"] for c in _status(env)[1]["components"]} == pids

        cluster_id = (tmp_path / "home" / "kafka" / "cluster.id").read_text()
        down = _run("down", env=env)
        assert down.returncode == 0, down.stderr
        for component in ("supervisor", "kafka", "postgres"):
            assert f"{component}: stopped" in down.stdout, down.stdout
        code, doc = _status(env)
        assert code == 1 and not doc["healthy"]

        restart = _run("up", env=env)  # data and cluster id survive a restart
        assert restart.returncode == 0, restart.stderr + restart.stdout
        assert "user-events (exists)" in restart.stdout
        assert (tmp_path / "home" / "kafka" / "cluster.id").read_text() == cluster_id
        assert (tmp_path / "home" / "logs" / "kafka.log").stat().st_size > 0
    finally:
        _run("down", env=env)


def _component(env, name: str) -> dict:
    return next(c for c in _status(env)[1]["components"] if c["component"] == name)


def _landed(url: str) -> int:
    from streamflow.db.engine import connect_admin

    with connect_admin(url) as conn:
        return conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]


def test_missing_java_says_what_to_do(tmp_path):
    env = _env(tmp_path / "home", STREAMFLOW_JAVA=str(tmp_path / "no-such-java"))
    result = _run("up", env=env)
    assert result.returncode == 1
    assert "Java 17+ not found" in result.stderr
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr and "docker compose" in result.stderr


def test_missing_maven_says_what_to_do(tmp_path):
    env = _env(tmp_path / "home", STREAMFLOW_MVN=str(tmp_path / "no-such-mvn"))
    result = _run("kafka", "fetch", env=env)
    assert result.returncode == 1
    assert "Maven" in result.stderr and "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def _home_with_jars(tmp_path: Path, platform) -> Path:
    """A fresh home sharing the session stack's fetched jars (skips a Maven run)."""
    home = tmp_path / "home"
    kafka_server.share_jars(load_settings(STREAMFLOW_HOME=str(home)),
                            kafka_server.libs_dir(platform.settings))
    return home


def test_port_in_use_says_what_to_do(tmp_path, platform):
    home = _home_with_jars(tmp_path, platform)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env = _env(home, STREAMFLOW_KAFKA_PORT=str(squatter.getsockname()[1]))
        result = _run("up", env=env)
    assert result.returncode == 1
    assert "is in use" in result.stderr and "STREAMFLOW_KAFKA_PORT" in result.stderr


def test_broker_that_dies_is_reported_with_its_log(tmp_path, platform):
    home = _home_with_jars(tmp_path, platform)
    fake_java = tmp_path / "java"
    # Claims Java 17, then dies at start like a JVM that cannot allocate its heap.
    fake_java.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-version" ]; then echo \'openjdk version "17.0.9"\' >&2; exit 0; fi\n'
        'case "$*" in *StorageTool*) exit 0;; esac\n'
        "echo 'Error occurred during initialization of VM: simulated' >&2; exit 1\n"
    )
    fake_java.chmod(0o755)
    result = _run("up", env=_env(home, STREAMFLOW_JAVA=str(fake_java)), timeout=120)
    assert result.returncode == 1
    assert "exited during start-up" in result.stderr
    assert "simulated" in result.stderr


def test_bad_setting_is_one_line(tmp_path):
    result = _run("status", env=_env(tmp_path, STREAMFLOW_KAFKA_PORT="ninety"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: STREAMFLOW_KAFKA_PORT='ninety': Input should be a valid integer, unable to "
        "parse string as an integer"
    ]


@pytest.mark.parametrize("command", [["topics", "list"], ["db", "url"]])
def test_commands_without_services_fail_clearly(tmp_path, command):
    env = _env(tmp_path / "home")
    result = _run(*command, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
