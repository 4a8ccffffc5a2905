"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole test run.

Tests isolate from each other with UUID-named topics and consumer groups, and from a
developer's own `make up` stack with a temporary STREAMFLOW_HOME and free ports.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamflow import endpoints, stack, topics
from streamflow.db.engine import server_version
from streamflow.infra import kafka_server
from streamflow.infra.processes import free_port
from streamflow.kafka_clients import admin_client
from streamflow.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """A test run started from a shell's background job inherits SIGINT ignored, and so would
    every worker a test starts (a Ctrl-C test of `tail` then waits forever): default it."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


def isolated_settings(home: Path, **overrides) -> Settings:
    """Settings for an embedded stack in ``home`` on free ports, ignoring any external URLs."""
    return load_settings(
        STREAMFLOW_HOME=str(home),
        STREAMFLOW_KAFKA_PORT=free_port(),
        STREAMFLOW_KAFKA_CONTROLLER_PORT=free_port(),
        KAFKA_BOOTSTRAP_SERVERS=None,
        DATABASE_URL=None,
        **overrides,
    )


def _uncaptured_echo(config):
    """Print past pytest's capture: service start-up and versions belong in every test log."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def echo(line: str) -> None:
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return echo


@dataclass(frozen=True)
class Platform(stack.Services):
    kafka_version: str
    postgres_version: str


@pytest.fixture(scope="session")
def platform(tmp_path_factory, request) -> Iterator[Platform]:
    settings = isolated_settings(tmp_path_factory.mktemp("streamflow-home"))
    echo = _uncaptured_echo(request.config)
    stack.up(settings, echo=echo, workers=False)
    url = endpoints.database_url(settings)
    running = Platform(settings, url,
                       kafka_server.version_from_log(settings) or "?", server_version(url))
    echo(f"integration services: Apache Kafka {running.kafka_version} at {running.bootstrap}, "
         f"PostgreSQL {running.postgres_version}")
    try:
        yield running
    finally:
        # Kafka clients still referenced by finished tests go now, while the broker is up:
        # otherwise they print connection errors after pytest's summary at interpreter exit.
        import gc

        gc.collect()
        stack.down(settings, echo=echo)


class Cluster(stack.Services):
    """A three-node KRaft cluster from the embedded Kafka's jars, beside the session's single
    broker; the session's PostgreSQL serves it."""


CLUSTER_BROKERS = 3


@pytest.fixture(scope="session")
def cluster(platform, tmp_path_factory, request) -> Iterator[Cluster]:
    """Started once, by the first test that asks for it (~10 s); its tests share it and must
    leave every node running (`kafka_server.start` brings back one they stopped)."""
    from streamflow.infra.processes import free_port_run

    first = free_port_run(2 * CLUSTER_BROKERS)
    settings = load_settings(
        STREAMFLOW_HOME=str(tmp_path_factory.mktemp("streamflow-cluster")),
        STREAMFLOW_KAFKA_BROKERS=CLUSTER_BROKERS, STREAMFLOW_KAFKA_PORT=first,
        STREAMFLOW_KAFKA_CONTROLLER_PORT=first + 1, KAFKA_BOOTSTRAP_SERVERS=None,
        DATABASE_URL=platform.database_url)
    kafka_server.share_jars(settings, kafka_server.libs_dir(platform.settings))
    echo = _uncaptured_echo(request.config)
    kafka_server.start(settings, echo=echo)
    topics.ensure_topics(admin_client(settings.kafka), topics.topic_specs(settings))
    echo(f"integration cluster: {CLUSTER_BROKERS} Kafka nodes at {settings.bootstrap_servers}")
    try:
        yield Cluster(settings, platform.database_url)
    finally:
        echo(f"cluster: {kafka_server.stop(settings)}")


def back_in_sync(cluster: Cluster) -> None:
    """Every node of ``cluster`` running and every partition's copies in sync: a test that
    stopped or killed a node leaves the shared cluster healthy for the next."""
    kafka_server.start(cluster.settings, echo=lambda _m: None)
    wait_for(lambda: stack.kafka_cluster(cluster.settings).under_replicated == 0,
             timeout_s=120, message="every partition in sync again")


@pytest.fixture
def fresh_database(platform):
    """An empty database in the session's PostgreSQL, dropped afterwards: its URL."""
    import psycopg

    from streamflow.db.engine import libpq_url

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(platform.database_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # a generated identifier, not data
    yield platform.database_url.replace("/streamflow?", f"/{name}?", 1)
    with psycopg.connect(libpq_url(platform.database_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# -- helpers for tests that run workers against the session's services --------------------

def create_topic(platform: Platform, name: str, partitions: int = 3,
                 config: dict[str, str] | None = None) -> str:
    """A scratch topic on the session's broker (``topics.create_topic``): its name."""
    return topics.create_topic(platform.kafka, name, partitions, config=config)


def worker_env(platform: Platform, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess pointed at the session's Kafka and PostgreSQL
    (``stack.child_env``), with the tests' PII key."""
    return stack.child_env(platform.settings, platform.database_url,
                           STREAMFLOW_PII_KEY=TEST_PII_KEY.decode(), **extra)


TEST_PII_KEY = b"test-pii-key-0123456789abcdef"


def run_cli(platform: Platform, *args: str, ok: bool = True,
            **env: str) -> subprocess.CompletedProcess:
    """``streamflow <args>`` in a subprocess with ``worker_env``; asserts exit 0 when ``ok``."""
    result = subprocess.run([sys.executable, "-m", "streamflow.cli", *args],
                            env={**worker_env(platform, **env), "COLUMNS": "250"},
                            capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def scalar(database_url: str, query: str, **params):
    """One value of a query on a database of the session's PostgreSQL (``fresh_database``)."""
    from sqlalchemy import text

    from streamflow.db.engine import make_engine

    db = make_engine(database_url)
    try:
        with db.connect() as conn:
            return conn.execute(text(query), params).scalar()
    finally:
        db.dispose()


def wait_for(predicate, *, timeout_s: float = 120.0, interval_s: float = 0.25,
             message: str = "condition", detail=None):
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout, with
    what ``detail()`` says about the state then (when given)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {message}"
                        + (f"\n{detail()}" if detail else ""))
        time.sleep(interval_s)
