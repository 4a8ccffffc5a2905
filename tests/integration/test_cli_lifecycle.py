"""`streamflow up` -> `status` -> `down` as a user runs them, in subprocesses, plus error paths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from streamflow.db.engine import connect_admin, libpq_url
from streamflow.infra import kafka_server
from streamflow.infra.processes import free_port
from streamflow.settings import env_var_names, load_settings
from tests.conftest import create_topic, wait_for

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
    """One stack through its life: `up` on a fresh home, a worker and then the supervisor
    killed, `up` again, `down`, `up` on the same data, `down` with the supervisor killed
    (one stack for all of it: a cold `up` costs ~30 s of the suite)."""
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

        # A supervisor SIGKILLed leaves its workers running: the next `up` finds the orphans
        # and stops them first, so one generation of workers runs, all the new supervisor's.
        home = tmp_path / "home"
        _wait_for_workers(home, WORKERS)
        os.kill(_component(env, "supervisor")["pid"], signal.SIGKILL)
        orphans = {f"{k} (orphan)": n for k, n in WORKERS.items() if k != "supervise"}
        _wait_for_workers(home, orphans, timeout_s=10)
        adopted = _run("up", env=env)
        assert adopted.returncode == 0, adopted.stderr + adopted.stdout
        _wait_for_workers(home, WORKERS)
        assert "sink: stopped (left running by a supervisor that was killed)" in adopted.stdout
        code, doc = _status(env)
        assert code == 0 and doc["healthy"], doc

        cluster_id = (tmp_path / "home" / "kafka" / "cluster.id").read_text()
        kept = _landed_rows(doc["database_url"])  # to be found again after the restart
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
        # PostgreSQL's data too: every row landed before `down` is there after `up`, as it
        # was landed (its sequence and landing time): not landed again from Kafka into an
        # empty database, which the sink would do as well.
        assert kept and _landed_rows(_status(env)[1]["database_url"], kept) == kept

        # `down` after another SIGKILL of the supervisor: its orphans are stopped too, and
        # nothing of this STREAMFLOW_HOME is left.
        _wait_for_workers(home, WORKERS)
        os.kill(_component(env, "supervisor")["pid"], signal.SIGKILL)
        down = _run("down", env=env)
        assert down.returncode == 0, down.stderr
        assert "sink: stopped" in down.stdout and "kafka: stopped" in down.stdout
        wait_for(lambda: not _processes_of(home), timeout_s=15,
                 message="no process of this STREAMFLOW_HOME left")
    finally:
        _run("down", env=env)


def test_up_without_workers_then_produce(tmp_path, platform):
    """`up --no-workers` still makes the local PII key: `produce` works right after it (the
    session's Kafka and PostgreSQL stand in for the embedded ones: nothing is started)."""
    home = tmp_path / "home"
    env = _env(home, KAFKA_BOOTSTRAP_SERVERS=platform.bootstrap,
               DATABASE_URL=platform.database_url)
    up = _run("up", "--no-workers", env=env)
    assert up.returncode == 0, up.stderr + up.stdout
    assert "workers:" not in up.stdout and not _workers_of(home)
    assert not (home / "secrets" / "pii.key").stat().st_mode & 0o077
    topic = create_topic(platform, f"t-{uuid.uuid4().hex[:12]}", partitions=1)
    produced = _run("produce", "--count", "5", "--topic", topic, "--metrics-port", "0",
                    env=env, timeout=90)
    assert produced.returncode == 0, produced.stderr
    assert "producer: done, 5 events" in produced.stderr


def _component(env, name: str) -> dict:
    return next(c for c in _status(env)[1]["components"] if c["component"] == name)


def _landed(url: str) -> int:
    with connect_admin(url) as conn:
        return conn.execute("SELECT count(*) FROM raw.events").fetchone()[0]


def _landed_rows(url: str, like: set[tuple] | None = None) -> set[tuple[str, int, str]]:
    """(event id, ingest sequence, landing time) of the rows in raw.events (of those with
    the event ids in ``like``, when given)."""
    with connect_admin(url) as conn:
        return set(conn.execute(
            "SELECT event_id::text, ingest_seq, ingested_at::text FROM raw.events "
            "WHERE %s::uuid[] IS NULL OR event_id = ANY(%s::uuid[])",
            [None if like is None else [row[0] for row in like]] * 2).fetchall())


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


# -- one generation of workers ---------------------------------------------------------------

WORKERS = {"supervise": 1, "produce": 1, "sink": 1, "live": 1, "dagster-code-server": 1,
           "dagster-webserver": 1, "dagster-daemon": 1}


def _kind(cmdline: list[str]) -> str:
    """A worker's kind from its command line (the CLI subcommand or the Dagster program)."""
    if "streamflow.cli" in cmdline[:-1]:
        return cmdline[cmdline.index("streamflow.cli") + 1]
    if "streamflow_defs.code_server" in cmdline:
        return "dagster-code-server"
    programs = [Path(arg).name for arg in cmdline[:2]]
    for program in ("dagster-webserver", "dagster-daemon"):
        if program in programs:
            return program
    return Path(cmdline[0]).name if cmdline else "?"


def _processes_of(home: Path) -> list[tuple[str, int, int]]:
    """(kind, pid, parent pid) of every live process started for this STREAMFLOW_HOME."""
    homes = {str(home), str(home.resolve())}
    found = []
    for proc in psutil.process_iter():
        try:
            if (proc.status() != psutil.STATUS_ZOMBIE
                    and proc.environ().get("STREAMFLOW_HOME") in homes):
                found.append((_kind(proc.cmdline()), proc.pid, proc.ppid()))
        except psutil.Error:  # exited meanwhile, or a kernel thread
            continue
    return found


def _workers_of(home: Path) -> Counter:
    """Workers by kind; one that the running supervisor did not start counts as an orphan."""
    found = _processes_of(home)
    supervisors = {pid for kind, pid, _ in found if kind == "supervise"}
    return Counter(kind if kind == "supervise" or parent in supervisors else f"{kind} (orphan)"
                   for kind, _, parent in found if kind in WORKERS)


def _wait_for_workers(home: Path, expected: dict[str, int], timeout_s: float = 30) -> None:
    """A worker the supervisor is restarting is briefly absent; a duplicate or an orphan
    stays."""
    deadline = time.monotonic() + timeout_s
    while (seen := _workers_of(home)) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen == expected


# -- a refusing or unreachable service: one line, nothing half-started ----------------------

WRONG_PASSWORD = "wr0ng-s3cret-pw"


def _refused(url: str) -> bool:
    try:
        psycopg.connect(libpq_url(url), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "password authentication failed" in str(exc)
    return False


@pytest.fixture
def refusing_database_url(platform):
    """The session's PostgreSQL with a role that must give its password, and a URL with the
    wrong one. (The embedded server trusts local connections: one pg_hba.conf line, removed
    afterwards, makes it check this role's password.)"""
    role = f"pw_{uuid.uuid4().hex[:8]}"
    hba = platform.settings.postgres_dir / "data" / "pg_hba.conf"
    original = hba.read_text()
    with connect_admin(platform.database_url) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(f"right-{uuid.uuid4().hex}")))
        hba.write_text(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n"
                       + original)
        conn.execute("SELECT pg_reload_conf()")
    url = make_url(platform.database_url).set(username=role, password=WRONG_PASSWORD)
    url = url.render_as_string(hide_password=False)
    try:
        wait_for(lambda: _refused(url), timeout_s=15, message="pg_hba.conf reloaded")
        yield url
    finally:
        hba.write_text(original)
        with connect_admin(platform.database_url) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _one_line_error(result: subprocess.CompletedProcess, starts: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and WRONG_PASSWORD not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["db", "migrate"], ["dlq", "list"], ["dlq", "stats"],
                                     ["dlq", "replay", "--dry-run"],
                                     ["sink", "--metrics-port", "0"]])
def test_a_refused_database_is_one_line_without_the_password(tmp_path, refusing_database_url,
                                                             platform, command):
    env = _env(tmp_path / "home", DATABASE_URL=refusing_database_url,
               KAFKA_BOOTSTRAP_SERVERS=platform.bootstrap)
    line = _one_line_error(_run(*command, env=env, timeout=60),
                           f"error: PostgreSQL at {make_url(refusing_database_url)} refused")
    assert "password authentication failed" in line


def test_status_reports_a_refused_database_without_the_password(tmp_path, refusing_database_url,
                                                                platform):
    env = _env(tmp_path / "home", DATABASE_URL=refusing_database_url,
               KAFKA_BOOTSTRAP_SERVERS=platform.bootstrap)
    result = _run("status", "--json", env=env, timeout=60)
    assert result.returncode == 1 and WRONG_PASSWORD not in result.stdout + result.stderr
    postgres = next(c for c in json.loads(result.stdout)["components"]
                    if c["component"] == "postgres")
    assert not postgres["healthy"] and "refused the connection" in postgres["detail"]


def test_up_with_a_refused_database_stops_the_broker_it_started(tmp_path, platform,
                                                                 refusing_database_url):
    home = _home_with_jars(tmp_path, platform)
    env = _env(home, DATABASE_URL=refusing_database_url)
    try:
        result = _run("up", env=env)
        _one_line_error(result, "error: PostgreSQL at ")
        assert "starting Kafka" in result.stdout  # it got that far, and then ...
        assert "kafka: stopped (`up` did not finish)" in result.stdout
        assert not _processes_of(home), _processes_of(home)
        assert kafka_server.running(load_settings(STREAMFLOW_HOME=str(home))) is None
    finally:
        _run("down", env=env)


def test_produce_without_a_broker_is_one_line(tmp_path, platform):
    nothing = f"127.0.0.1:{free_port()}"
    env = _env(tmp_path / "home", KAFKA_BOOTSTRAP_SERVERS=nothing,
               DATABASE_URL=platform.database_url, STREAMFLOW_PII_KEY="k" * 32)
    line = _one_line_error(_run("produce", "--count", "1", "--metrics-port", "0", env=env,
                                timeout=90), "error: no Kafka broker answered at ")
    assert nothing in line
