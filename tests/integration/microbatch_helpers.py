"""Shared by the micro-batch and dbt tests: land known events, run the micro-batch."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import orjson
import pytest
from sqlalchemy import text

from assets import MICROBATCH_ASSETS
from streamflow import contract
from streamflow.kafka_clients import producer
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
