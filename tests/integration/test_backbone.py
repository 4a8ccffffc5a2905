"""The ingestion path against the real broker and database: exactly once, crashes included."""

from __future__ import annotations

import json
import re
import time
import uuid

import orjson
from sqlalchemy import text

from streamflow.infra import postgres_server
from streamflow.kafka_clients import producer
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.workers.runtime import StopFlag
from tests.conftest import TEST_PII_KEY, wait_for
from tests.integration.lanes import dead_letters, read_topic, rows
from tests.integration.lanes import offsets_stored as _offsets_stored


def produce(platform, topic: str, count: int, **kw):
    # No seed: seeded streams repeat their event_ids, which would land once across tests.
    return run_producer(ProducerConfig(platform.kafka, topic=topic, count=count, **kw),
                        TEST_PII_KEY, StopFlag())


def test_n_events_give_exactly_n_rows(platform, lane, engine):
    stats = produce(platform, lane.topic, 20_000)
    assert stats.delivered == 20_000
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] >= 20_000, message="20,000 rows")
    time.sleep(1.0)  # nothing more may arrive
    assert rows(engine, lane.topic) == (20_000, 20_000, 20_000)
    assert lane.stop() == 0  # SIGTERM: clean exit


def test_the_same_event_sent_twice_lands_once(platform, lane, engine):
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "event_type": "login", "user_id": "u1", "schema_version": 1}
    prod = producer(platform.kafka)
    prod.produce(lane.topic, orjson.dumps(body), b"u1")
    prod.produce(lane.topic, orjson.dumps(body), b"u1")
    prod.produce(lane.topic, orjson.dumps({**body, "event_type": "logout"}), b"u1")  # same id
    assert prod.flush(30) == 0
    lane.start()
    wait_for(lambda: _offsets_stored(engine, lane.group, lane.topic) >= 3,
             message="three offsets consumed")
    assert rows(engine, lane.topic)[:2] == (1, 1)
    with engine.connect() as conn:
        kept = conn.execute(text("SELECT event_type FROM raw.events WHERE event_id = :e"),
                            {"e": event_id}).scalar_one()
    assert kept == "login"  # the first one wins; later copies change nothing


def test_sigkill_mid_run_loses_and_duplicates_nothing(platform, lane, engine):
    total = 60_000
    produce(platform, lane.topic, total)
    lane.start()
    kills = 0
    for _ in range(4):
        floor = kills * 10_000
        wait_for(lambda floor=floor: rows(engine, lane.topic)[0] > floor, timeout_s=60,
                 message="progress before a kill")
        if rows(engine, lane.topic)[0] >= total:
            break
        lane.kill()
        kills += 1
        lane.start()
    assert kills >= 2, "the sink finished before it could be killed twice"
    wait_for(lambda: rows(engine, lane.topic)[0] >= total, message=f"{total} rows")
    time.sleep(1.0)
    assert rows(engine, lane.topic) == (total, total, total)
    assert _offsets_stored(engine, lane.group, lane.topic) == total


def test_postgres_restart_mid_run_the_sink_recovers_alone(platform, lane, engine):
    total = 40_000
    produce(platform, lane.topic, total)
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] > 0, message="first rows")
    assert postgres_server.stop(platform.settings) == "stopped"
    time.sleep(3.0)  # the sink meets a dead database and backs off
    assert lane.alive()
    postgres_server.start(platform.settings)
    engine.dispose()
    try:
        wait_for(lambda: rows(engine, lane.topic)[0] >= total, timeout_s=180,
                 message=f"{total} rows after the restart")
    except BaseException:  # what the sink said is what tells a stall from a slow box
        print("sink output:", lane.output()[-6000:])
        raise
    time.sleep(1.0)
    assert rows(engine, lane.topic) == (total, total, total)
    assert lane.alive()
    assert "PostgreSQL unavailable" in lane.output()


# Kinds of input that cannot land, with the reason code each must get.
BAD_INPUTS: list[tuple[bytes | None, str]] = [
    (None, "empty"),
    (b"", "empty"),
    (b"\xff\xfe\xfa not utf-8", "not_utf8"),
    ("caf\xe9".encode("latin-1"), "not_utf8"),
    (b'{"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"', "not_json"),
    (b"<xml>nope</xml>", "not_json"),
    (b"NaN", "not_json"),
    ('\ufeff{"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"}'.encode(), "not_json"),
    (b'{"event_id": "\\udc00"}', "not_json"),
    (b"[" * 5000 + b"]" * 5000, "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"just a string"', "not_object"),
    (b"3.14", "not_object"),
    (b"{}", "missing_event_id"),
    (b'{"event_id": null, "user_id": "u"}', "missing_event_id"),
    (b'{"event_id": 7}', "bad_event_id"),
    (b'{"event_id": "DROP TABLE raw.events; --"}', "bad_event_id"),
    (orjson.dumps({"event_id": str(uuid.uuid4()), "blob": "x" * 70_000}), "too_large"),
    (orjson.dumps({"event_id": str(uuid.uuid4()), "country": "D\u0000E"}), "db_rejected"),
    (orjson.dumps({"event_id": str(uuid.uuid4()), "user_id": "a\u0000b"}), "db_rejected"),
]


def test_bad_input_is_dead_lettered_with_a_reason_and_the_sink_keeps_running(
        platform, lane, engine):
    good_id = str(uuid.uuid4())
    prod = producer(platform.kafka)
    for value, _ in BAD_INPUTS:
        prod.produce(lane.topic, value, b"k", headers=[("origin", b"corpus")], partition=0)
    prod.produce(lane.topic, orjson.dumps({"event_id": good_id, "event_type": "login"}),
                 b"k", partition=0)
    assert prod.flush(30) == 0
    lane.start()
    wait_for(lambda: len(dead_letters(engine, lane.topic)) >= len(BAD_INPUTS),
             message="every bad input dead-lettered")
    letters = dead_letters(engine, lane.topic)
    assert [d["reason_code"] for d in letters] == [reason for _, reason in BAD_INPUTS]
    for (value, _), letter in zip(BAD_INPUTS, letters, strict=True):
        assert letter["reason"]
        assert bytes(letter["payload"] or b"") == (value or b"")
    assert letters[0]["headers"]["origin"] == "corpus"
    assert rows(engine, lane.topic)[0] == 1  # the good event around them landed
    assert lane.alive()
    on_topic = read_topic(platform, lane.dlq_topic, len(BAD_INPUTS))
    assert len(on_topic) == len(BAD_INPUTS)
    codes = sorted(dict(m.headers())["dlq.reason_code"].decode() for m in on_topic)
    assert codes == sorted(reason for _, reason in BAD_INPUTS)
    assert all(dict(m.headers())["dlq.source_topic"].decode() == lane.topic for m in on_topic)
    assert len({kind for _, kind in BAD_INPUTS}) >= 8 and len(BAD_INPUTS) >= 15


CLEAR_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+")


def test_no_clear_email_in_any_topic_or_table(platform, lane, engine):
    produce(platform, lane.topic, 5_000, invalid_rate=0.1, late_rate=0.1)
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] + len(dead_letters(engine, lane.topic))
             >= 5_000, message="all events landed or dead-lettered")
    messages = read_topic(platform, lane.topic, 5_000) + read_topic(
        platform, lane.dlq_topic, len(dead_letters(engine, lane.topic)))
    blobs = [m.value() or b"" for m in messages]
    with engine.connect() as conn:
        blobs += [r[0].encode() for r in conn.execute(text(
            "SELECT payload::text FROM raw.events WHERE kafka_topic = :t"), {"t": lane.topic})]
        blobs += [bytes(r[0] or b"") for r in conn.execute(text(
            "SELECT payload FROM raw.dead_letters WHERE source_topic = :t"), {"t": lane.topic})]
    assert len(blobs) > 5_000
    leaks = [m.group(0) for b in blobs for m in CLEAR_EMAIL.finditer(b)]
    assert leaks == []
    masked = sum(b"***@" in b for b in blobs)
    assert masked > 4_000  # the masked form is there instead


def test_the_sink_serves_its_metrics(platform, lane):
    """The sink serves Prometheus metrics with its counters."""
    produce(platform, lane.topic, 100)
    lane.start()
    port = int(wait_for(lambda: re.search(r"metrics on http://127.0.0.1:(\d+)",
                                          lane.output()), message="metrics line").group(1))
    import urllib.request

    def landed() -> float:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        match = re.search(r"^streamflow_events_landed_total (\S+)", body, re.M)
        return float(match.group(1)) if match else 0.0

    wait_for(lambda: landed() >= 100, message="landed counter")
    assert landed() == 100
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert "streamflow_sink_batch_seconds_bucket" in body
    assert "streamflow_consumer_lag" in body
    json.dumps(body)  # plain text exposition
