"""Shared by the micro-batch and dbt tests: land known events, run the micro-batch and its
sensor, read back what it published."""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import orjson
import pytest
from sqlalchemy import text

from assets import MICROBATCH_ASSETS
from sensors.microbatch import new_events_sensor
from streamflow import contract
from streamflow.kafka_clients import consumer, producer
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.workers.runtime import StopFlag


def land(platform, topic: str, events: list[dict], database_url: str | None = None) -> None:
    """Send events through Kafka and the real sink (in-process) into raw.events (of the
    session's database, or of ``database_url``)."""
    prod = producer(platform.kafka)
    for event in events:
        prod.produce(topic, orjson.dumps(event), event.get("user_id", "k").encode(),
                     headers=contract.HEADERS)
    assert prod.flush(30) == 0
    run_sink(SinkConfig(platform.kafka, database_url or platform.database_url, topic=topic,
                        group_id=f"g-{topic}", batch_size=5000, stop_when_idle_s=2.0),
             StopFlag())


def read_all(platform, topic: str, match, *, want: int, timeout_s: float = 30) -> list[dict]:
    """The JSON objects on ``topic`` that ``match`` accepts, until ``want`` of them (or the
    timeout: fewer)."""
    cons = consumer(platform.kafka, f"reader-{uuid.uuid4()}")
    cons.subscribe([topic])
    found = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(found) < want:
            for msg in cons.consume(1000, 0.5):
                if msg.error() is None and (value := _json_object(msg.value())) is not None:
                    if _matches(match, value):
                        found.append(value)
    finally:
        cons.close()
    return found


def _matches(match, value: dict) -> bool:
    """Other tests' hostile messages share these topics (a field of any type, or missing):
    one that breaks the matcher is not a match."""
    try:
        return bool(match(value))
    except (KeyError, TypeError):
        return False


def _json_object(raw: bytes | None) -> dict | None:
    """Other tests' dead letters share these topics: tombstones, binary, broken JSON."""
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def evaluate_sensor(instance, resources):
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return new_events_sensor(context)


def materialize(resources, upto: int = 0) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        MICROBATCH_ASSETS, resources=resources,
        run_config={"ops": {"notifications": {"config": {"upto_seq": upto}},
                            "event_windows": {"config": {"upto_seq": upto}}}})
    assert result.success
    return result


def catch_up(resources, engine) -> None:
    """Materialise until both watermarks reach what is landed (other tests land rows too)."""
    with engine.connect() as conn:
        landed = conn.execute(text("SELECT coalesce(max(ingest_seq), 0) FROM raw.events")
                              ).scalar_one()
    for _ in range(20):
        materialize(resources, landed)
        with engine.connect() as conn:
            done = conn.execute(text("SELECT min(last_seq) FROM streamflow.watermarks WHERE "
                                     "name IN ('notifications', 'event_windows')")).scalar_one()
        if (done or 0) >= landed:
            return
    pytest.fail("micro-batch did not catch up")


class Scenario:
    """A known batch in its own past time slot, so its windows are this test's alone."""

    def __init__(self) -> None:
        slot = random.randrange(10_000, 80_000) * 10  # seconds back, aligned to 10 s
        now = datetime.now(UTC)
        self.w0 = datetime.fromtimestamp((now.timestamp() // 10) * 10 - slot, tz=UTC)
        self.w1 = self.w0 + timedelta(seconds=10)
        self.tag = uuid.uuid4().hex[:8]
        self.ids: list[str] = []

    def user(self, n: int) -> str:
        return f"user-{self.tag}-{n}"

    def event(self, event_type: str, user: int, at: datetime, **extra) -> dict:
        event_id = str(uuid.uuid4())
        self.ids.append(event_id)
        return {"event_id": event_id, "schema_version": 1, "event_type": event_type,
                "user_id": self.user(user), "email_hash": f"{user:064x}",
                "email_masked": "u***@example.com", "occurred_at": contract.format_time(at),
                "country": "DE", "device": "mobile", **extra}
