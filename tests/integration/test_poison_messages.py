"""No message the broker accepted stops the sink or the micro-batch: headers of raw bytes, a
dead letter the dead-letter topic refuses, a range that fails every attempt. What cannot be
processed is quarantined (raw.quarantine), never skipped without a record. Real Kafka and
PostgreSQL; each test fails on the code before the fix (docs/RELIABILITY.md)."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
from sqlalchemy import text

from resources import KafkaResource
from streamflow import contract, topics
from streamflow.db import migrate, quarantine
from streamflow.db.engine import connect_admin
from streamflow.dlq import MAX_COPY_BYTES, Reason, Stage, stored_headers
from streamflow.errors import MessageRefused
from streamflow.kafka_clients import producer
from streamflow.microbatch import batch as batches
from streamflow.microbatch import claims
from streamflow.microbatch import notifications as contract_step
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.workers.runtime import StopFlag
from tests.conftest import create_topic, wait_for
from tests.integration.lanes import SinkProcess, offsets_stored, read_whole_topic, rows
from tests.integration.microbatch_helpers import Scenario, land

# 340 KB of bytes that are not UTF-8: as replaced text (U+FFFD, 3 bytes each) a dead letter's
# copy was over librdkafka's 1,000,000 bytes, and the sink stopped for good.
POISON_HEADERS = [("blob", b"\xff" * 340_000), ("trace", b"t-poison")]
VALID = 200
# Larger than a 2,000-byte topic takes even compressed (the producer compresses with lz4).
INCOMPRESSIBLE = os.urandom(6_000)


def _valid(s: Scenario, n: int) -> list[dict]:
    at = datetime.now(UTC) - timedelta(minutes=30)
    return [s.event("page_view", i, at + timedelta(milliseconds=i)) for i in range(n)]


def _send(platform, topic: str, messages: list[tuple[bytes, list | None]]) -> None:
    prod = producer(platform.kafka)
    for value, headers in messages:
        prod.produce(topic, value, b"k", headers=headers, partition=0)
    assert prod.flush(30) == 0


@pytest.fixture
def database(fresh_database) -> str:
    """A migrated database of this test's own: its watermarks and claims are its alone."""
    migrate.upgrade(fresh_database)
    return fresh_database


def test_headers_of_raw_bytes_on_an_ingest_reject_do_not_stop_the_sink(
        platform, lane, engine):
    s = Scenario()
    _send(platform, lane.topic, [(b"not json", POISON_HEADERS)]
          + [(orjson.dumps(e), contract.HEADERS) for e in _valid(s, VALID)])
    lane.start()
    wait_for(lambda: offsets_stored(engine, lane.group, lane.topic) == VALID + 1,
             timeout_s=90, message=f"the sink to land past the poison message ({VALID} after)")
    assert lane.alive(), lane.output()
    assert rows(engine, lane.topic)[0] == VALID
    with engine.connect() as conn:
        letter = conn.execute(text(
            "SELECT reason_code, headers, raw_headers FROM raw.dead_letters "
            "WHERE source_topic = :t"), {"t": lane.topic}).one()
    assert letter.reason_code == Reason.NOT_JSON
    assert stored_headers(letter.headers, letter.raw_headers) == tuple(POISON_HEADERS)
    (copy,) = read_whole_topic(platform, lane.dlq_topic)
    assert len(copy.value()) + sum(len(k) + len(v or b"") for k, v in copy.headers()) \
        <= MAX_COPY_BYTES
    assert dict(copy.headers())["dlq.reason_code"] == b"not_json"


def test_headers_of_raw_bytes_on_a_contract_reject_do_not_stop_the_micro_batch(
        platform, database, unique_name):
    s = Scenario()
    topic = create_topic(platform, unique_name)
    bad = s.event("page_view", 999, datetime.now(UTC) - timedelta(minutes=30))
    del bad["country"]  # lands, fails the contract
    _send(platform, topic, [(orjson.dumps(bad), POISON_HEADERS)]
          + [(orjson.dumps(e), contract.HEADERS) for e in _valid(s, VALID)])
    run_sink(SinkConfig(platform.kafka, database, topic=topic, group_id=f"g-{topic}",
                        stop_when_idle_s=2.0), StopFlag())
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    with connect_admin(database) as conn:
        landed = batches.landed_max_seq(conn)
        assert landed == VALID + 1
        result = contract_step.run(conn, landed, lambda m: kafka.publish(topics.NOTIFICATIONS,
                                                                         m),
                                   kafka.publish_dead_letters)
        assert (result.valid, result.rejected, result.quarantined) == (VALID, 1, 0)
        assert batches.watermark(conn, contract_step.STEP) == landed  # the watermark passes
        headers, raw = conn.execute(
            "SELECT headers, raw_headers FROM raw.dead_letters WHERE stage = 'contract'"
        ).fetchone()
    assert stored_headers(headers, raw) == tuple(POISON_HEADERS)  # every byte, from the row


def test_a_dead_letter_the_topic_refuses_is_quarantined_and_the_sink_carries_on(
        platform, unique_name, tmp_path, engine):
    """A dead-letter topic whose max.message.bytes is below the copy: Kafka refuses it for
    good. The sink records it (the dead letter in its table, an entry in the quarantine) and
    lands what follows, instead of replaying the batch after every restart."""
    topic = create_topic(platform, unique_name)
    small = create_topic(platform, unique_name + "-dlq", partitions=1,
                         config={"max.message.bytes": "2000"})
    sink = SinkProcess(platform, topic, small, "g-" + unique_name, tmp_path / "sink.log")
    s = Scenario()
    _send(platform, topic, [(INCOMPRESSIBLE, None)]
          + [(orjson.dumps(e), contract.HEADERS) for e in _valid(s, 50)])
    sink.start()
    try:
        wait_for(lambda: offsets_stored(engine, sink.group, topic) == 51, timeout_s=90,
                 message="the sink to land past the refused dead letter")
        assert sink.alive(), sink.output()
    finally:
        sink.stop()
    assert rows(engine, topic)[0] == 50
    with engine.connect() as conn:
        entry = conn.execute(text(
            "SELECT kind, stage, reason, source_offset, resolved_at FROM raw.quarantine "
            "WHERE source_topic = :t"), {"t": topic}).one()
        stored = conn.execute(text("SELECT length(payload) FROM raw.dead_letters "
                                   "WHERE source_topic = :t"), {"t": topic}).scalar_one()
    assert (entry.kind, entry.stage, entry.source_offset) == (
        quarantine.Kind.DEAD_LETTER_COPY, Stage.INGEST, 0)
    assert "MSG_SIZE_TOO_LARGE" in entry.reason and entry.resolved_at is None
    assert stored == len(INCOMPRESSIBLE)  # the table has every byte
    assert "quarantined" in sink.output()


def test_a_contract_dead_letter_the_topic_refuses_is_quarantined(
        platform, database, unique_name):
    s = Scenario()
    topic = create_topic(platform, unique_name)
    small = create_topic(platform, unique_name + "-dlq", partitions=1,
                         config={"max.message.bytes": "2000"})
    bad = {**s.event("page_view", 1, datetime.now(UTC)),
           "country": base64.b64encode(INCOMPRESSIBLE).decode()}
    land(platform, topic, [bad, *_valid(s, 20)], database_url=database)
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)

    def to_small_topic(letters):
        from streamflow import dlq

        return dlq.publish(kafka.producer(), small, letters)

    with connect_admin(database) as conn:
        landed = batches.landed_max_seq(conn)
        result = contract_step.run(conn, landed, lambda m: kafka.publish(topics.NOTIFICATIONS,
                                                                         m), to_small_topic)
        assert (result.valid, result.rejected, result.quarantined) == (20, 1, 1)
        assert batches.watermark(conn, contract_step.STEP) == landed
        assert quarantine.unresolved(conn)[0] == 1
        kind, event_id = conn.execute("SELECT kind, event_id FROM raw.quarantine").fetchone()
    assert (kind, event_id) == (quarantine.Kind.DEAD_LETTER_COPY, bad["event_id"])


def test_a_range_that_fails_every_attempt_is_split_to_the_one_event_and_quarantined(
        platform, database, unique_name):
    """Publishing one event's notification is refused for good (as Kafka refuses a message
    too large for its topic): its range is split until that event alone fails, and after
    MAX_ATTEMPTS it is quarantined; every other event is validated and the watermark moves
    on. `quarantine retry` then sends it through again."""
    s = Scenario()
    events = _valid(s, 40)
    poison = events[23]["event_id"]
    land(platform, create_topic(platform, unique_name), events, database_url=database)
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    published: list[bytes] = []

    def refusing(messages):
        if any(poison.encode() in value for _, value in messages):
            raise MessageRefused(f"{topics.NOTIFICATIONS} refused 1 message(s): too large")
        kafka.publish(topics.NOTIFICATIONS, messages)
        published.extend(value for _, value in messages)

    with connect_admin(database) as conn:
        landed = batches.landed_max_seq(conn)
        result = contract_step.run(conn, landed, refusing, kafka.publish_dead_letters)
        assert (result.valid, result.quarantined) == (39, 1)
        assert batches.watermark(conn, contract_step.STEP) == landed
        (entry,) = quarantine.entries(conn)
        assert (entry.kind, entry.event_id, entry.attempts) == (
            quarantine.Kind.EVENT, poison, contract_step.MAX_ATTEMPTS)
        assert "MessageRefused" in entry.reason
        assert conn.execute("SELECT count(*) FROM streamflow.notifications").fetchone()[0] == 39
        assert not any(poison.encode() in value for value in published)

        # After the fix (here: the topic takes it), a retry validates it once.
        assert quarantine.retry(conn, []) == [entry.id]
        again = contract_step.run(conn, batches.landed_max_seq(conn),
                                  lambda m: kafka.publish(topics.NOTIFICATIONS, m),
                                  kafka.publish_dead_letters)
        assert (again.valid, again.quarantined) == (1, 0)
        assert quarantine.unresolved(conn)[0] == 0
        assert conn.execute("SELECT count(*) FROM streamflow.notifications").fetchone()[0] == 40


def test_an_outage_is_not_counted_against_the_range(platform, database, unique_name):
    """A broker gone (KafkaUnavailable) fails the run with the range whole: its attempt is
    given back, so an outage never splits or quarantines anything."""
    from streamflow.errors import KafkaUnavailable

    s = Scenario()
    land(platform, create_topic(platform, unique_name), _valid(s, 10), database_url=database)

    def gone(_messages):
        raise KafkaUnavailable("no Kafka broker answered")

    with connect_admin(database) as conn:
        landed = batches.landed_max_seq(conn)
        for _ in range(contract_step.MAX_ATTEMPTS + 1):
            with pytest.raises(KafkaUnavailable):
                contract_step.run(conn, landed, gone, lambda letters: [])
        after, upto, attempts = conn.execute(
            "SELECT after_seq, upto_seq, attempts FROM streamflow.step_claims").fetchone()
        assert (after, upto, attempts) == (0, landed, 0)  # whole, never counted
        assert quarantine.unresolved(conn)[0] == 0


class _PausesAfterListingClaims(psycopg.Connection):
    """Runs ``between`` right after next_claim has read the claims: where another run could
    finish the claim it is about to lock."""

    between = staticmethod(lambda: None)

    def execute(self, query, params=None, **kwargs):
        cursor = super().execute(query, params, **kwargs)
        if query is claims._CLAIMS:
            type(self).between()
        return cursor


def test_a_claim_finished_between_listing_and_locking_is_not_taken_again(
        platform, database, unique_name):
    """Run A finishes its claim (done, lock released) after run B listed the claims and before
    B tried their locks: B must not take it (it would publish its dead letters twice and fail
    with "not ours")."""
    from streamflow.db.engine import libpq_url

    s = Scenario()
    land(platform, create_topic(platform, unique_name), _valid(s, 10), database_url=database)
    with connect_admin(database) as a:
        landed = batches.landed_max_seq(a)
        mine = claims.next_claim(a, contract_step.STEP, landed, limit=5)
        # Abandoned-looking (not done) while B lists; A finishes it in between.
        def finish_a():
            with a.transaction():
                claims.mark_done(a, mine)
            claims.release(a, mine)

        _PausesAfterListingClaims.between = staticmethod(finish_a)
        with _PausesAfterListingClaims.connect(libpq_url(database), autocommit=True) as b:
            theirs = claims.next_claim(b, contract_step.STEP, landed, limit=5)
        _PausesAfterListingClaims.between = staticmethod(lambda: None)
    assert theirs is not None and theirs.after != mine.after
    assert theirs.after == mine.upto  # the next range, not the finished one


def test_status_and_the_check_report_the_quarantine(platform, database, unique_name):
    from assets.checks import quarantine_empty
    from resources import PostgresResource
    from streamflow import stack
    from streamflow.settings import load_settings

    settings = load_settings(DATABASE_URL=database, KAFKA_BOOTSTRAP_SERVERS=platform.bootstrap)
    healthy = stack.ComponentStatus("postgres", None, "", True)

    def status_lines():
        return [(c.healthy, c.detail) for c in stack._quarantine_status(settings, healthy)]

    assert status_lines() == []
    entry = quarantine.Entry(kind=quarantine.Kind.EVENT, stage=Stage.CONTRACT,
                             reason="boom", source_topic=unique_name, source_partition=0,
                             source_offset=uuid.uuid4().int % 1000, ingest_seq=1)
    check = quarantine_empty(PostgresResource(database_url=database))
    assert check.passed
    with connect_admin(database) as conn, conn.transaction():
        quarantine.insert(conn, [entry])
    check = quarantine_empty(PostgresResource(database_url=database))
    assert not check.passed and check.metadata["unresolved"].value == 1
    ((healthy_line, detail),) = status_lines()
    assert not healthy_line and detail.startswith("1 unresolved since")
    with connect_admin(database) as conn:
        assert len(quarantine.resolve(conn, [])) == 1
    assert quarantine_empty(PostgresResource(database_url=database)).passed
    assert status_lines() == []
