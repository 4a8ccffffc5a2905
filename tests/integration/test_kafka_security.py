"""Every Kafka client through a SASL_SSL listener (SCRAM, a CA made here), as a managed
cluster would demand: topics, producer, sink, live view and the Dagster micro-batch. A wrong
password or an untrusted CA ends a command at once, in one line, without the secret."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import orjson
import pytest
import websockets
from sqlalchemy import create_engine, text

from resources import KafkaResource, PostgresResource
from streamflow import kafka_clients, replicas, topics
from streamflow.db import migrate
from streamflow.errors import KafkaUnavailable
from streamflow.infra import kafka_server
from streamflow.kafka_clients import broker_problem
from tests.conftest import isolated_settings, worker_env
from tests.helpers.live import start_live
from tests.integration.microbatch_helpers import materialize
from tests.integration.secure_kafka import make_ca, start_secure_broker

EVENTS = 400


@pytest.fixture(scope="module")
def secure(platform, tmp_path_factory):
    home = tmp_path_factory.mktemp("secure-kafka")
    settings = isolated_settings(home / "home", STREAMFLOW_KAFKA_HEAP_MB=256)
    kafka_server.share_jars(settings, kafka_server.libs_dir(platform.settings))
    broker = start_secure_broker(settings, home, echo=lambda _line: None)
    try:
        yield broker
    finally:
        kafka_server.stop(settings)


def _cli(platform, secure_env: dict[str, str], *args: str, database_url: str | None = None,
         timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = worker_env(platform, **secure_env)
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "streamflow.cli", *args], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=timeout_s)


def test_the_pipeline_runs_through_a_sasl_ssl_listener(platform, secure, fresh_database):
    migrate.upgrade(fresh_database)
    env = secure.env()
    created = _cli(platform, env, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert f"{topics.USER_EVENTS}: created" in created.stdout

    produced = _cli(platform, env, "produce", "--max-rate", "--count", str(EVENTS),
                    "--invalid-rate", "0.05", "--seed", "11")
    assert produced.returncode == 0, produced.stderr
    landed = _cli(platform, env, "sink", "--stop-when-idle", "3", database_url=fresh_database)
    assert landed.returncode == 0, landed.stderr

    engine = create_engine(fresh_database.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM raw.events")).scalar_one()
        rejected = conn.execute(text("SELECT count(*) FROM raw.dead_letters")).scalar_one()
    assert rows + rejected == EVENTS and rows > 0

    # The Dagster side: the micro-batch publishes notifications and contract dead letters.
    kafka = KafkaResource(bootstrap_servers=secure.bootstrap, security_protocol="SASL_SSL",
                          sasl_mechanism=secure.mechanism, sasl_username=secure.user,
                          sasl_password=secure.password, ssl_ca_location=str(secure.ca))
    resources = {"postgres": PostgresResource(database_url=fresh_database), "kafka": kafka}
    materialize(resources, rows)
    with engine.connect() as conn:
        notified = conn.execute(text("SELECT count(*) FROM streamflow.notifications")
                                ).scalar_one()
        dead = conn.execute(text("SELECT count(*) FROM raw.dead_letters")).scalar_one()
    engine.dispose()
    assert notified > 0
    connection = secure.connection()
    assert topics.message_count(connection, topics.NOTIFICATIONS) == notified
    assert topics.message_count(connection, topics.DEAD_LETTER) == dead > 0

    # Nothing printed the secret.
    for result in (created, produced, landed):
        assert secure.password not in result.stdout + result.stderr


def test_the_live_view_reads_through_a_sasl_ssl_listener(platform, secure, tmp_path):
    """A page gets frames showing what was produced through the secured listener, and the
    health probe reaches the broker through it too (assigned partitions alone would not say
    that a single message was read)."""
    created = _cli(platform, secure.env(), "topics", "create")
    assert created.returncode == 0, created.stderr
    proc, port = start_live(platform, tmp_path, **secure.env())
    try:
        marker = f"sasl-{uuid.uuid4().hex}"
        prod = kafka_clients.producer(secure.connection())
        prod.produce(topics.USER_EVENTS, orjson.dumps({"marker": marker}), b"k")
        assert prod.flush(30) == 0

        def shows_marker(frame: dict) -> bool:
            return any(marker in e["payload"] for e in frame["events"])

        async def frames_until_marker_and_probe() -> dict:
            """The first frame showing the marker with the broker reachable, else the last."""
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=2**24) as ws:
                for _ in range(240):  # a minute of frames
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if shows_marker(frame) and frame["kafka"]["reachable"] is True:
                        break
            return frame

        frame = asyncio.run(frames_until_marker_and_probe())
        assert shows_marker(frame), "no frame showed the event produced through SASL_SSL"
        assert frame["kafka"]["reachable"] is True, frame["kafka"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("command", [("topics", "list"), ("produce", "--count", "1"),
                                     ("sink", "--stop-when-idle", "1")])
def test_a_wrong_password_ends_the_command_in_one_line(platform, secure, command):
    result = _cli(platform, secure.env(KAFKA_SASL_PASSWORD="not-the-password"), *command,
                  timeout_s=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Kafka at"), result.stderr
    assert "SASL authentication failed" in lines[0]
    assert "not-the-password" not in result.stdout + result.stderr
    # Refused, not timed out: the probe's own limit (5 s) was not what ended it.
    assert "no Kafka broker answered" not in lines[0]


def test_an_untrusted_ca_ends_the_command_in_one_line(platform, secure, tmp_path):
    stranger, _ = make_ca(tmp_path, "some-other-ca")
    result = _cli(platform, secure.env(KAFKA_SSL_CA_LOCATION=str(stranger)), "topics", "list",
                  timeout_s=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS handshake failed" in lines[0], result.stderr
    assert "certificate verify failed" in lines[0]


def test_plaintext_against_the_secured_listener_is_not_taken_for_a_broker(secure):
    """A client left on PLAINTEXT gets no metadata from a SASL_SSL listener."""
    from streamflow.kafka_connection import KafkaConnection

    assert broker_problem(KafkaConnection(secure.bootstrap), timeout_s=2) is not None


def test_the_dagster_resource_reports_a_refused_login_at_once(secure):
    kafka = KafkaResource(bootstrap_servers=secure.bootstrap, security_protocol="SASL_SSL",
                          sasl_mechanism=secure.mechanism, sasl_username=secure.user,
                          sasl_password="wrong", ssl_ca_location=str(secure.ca))
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="SASL authentication failed"):
        kafka.publish(topics.NOTIFICATIONS, [(b"k", b"v")], timeout_s=60)
    # Not a speed target: the flush stopped at the refusal instead of waiting out its 60 s.
    assert time.monotonic() - started < 30


def test_the_reassignment_client_connects_through_a_sasl_ssl_listener(secure):
    """`topics create --fix-replication` moves copies with kafka-python's admin client
    (replicas.Mover): it logs in with the same settings (SCRAM over TLS, the CA made here)."""
    mover = replicas.Mover(secure.connection())
    try:
        assert mover.moving([topics.USER_EVENTS], timeout_s=30) == set()
    finally:
        mover.close()
