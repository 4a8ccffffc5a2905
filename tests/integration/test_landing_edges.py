"""Edges of the sink's write path against the real broker and PostgreSQL: a dead letter too big
for the dead-letter topic, the dead-letter flush kept outside the ingest-sequence lock, and the
zombie fence (only the sink that claimed a partition last stores its offsets)."""

from __future__ import annotations

import threading
import uuid

import orjson
import psycopg
import pytest
from sqlalchemy import text

from streamflow import contract
from streamflow.db.engine import libpq_url
from streamflow.db.landing import Landing, LandingWriter
from streamflow.db.tables import INGEST_SEQ_LOCK
from streamflow.dlq import MAX_COPY_BYTES, DeadLetter, Reason
from streamflow.errors import LandingFenced
from streamflow.kafka_clients import producer
from streamflow.sink.decode import decode
from tests.conftest import wait_for
from tests.integration.lanes import offsets_stored, read_topic, rows

NEAR_LIMIT = 999_900  # accepted by the broker; with a dead letter's headers it is over 1 MB


def _event(**fields) -> bytes:
    return orjson.dumps({"event_id": str(uuid.uuid4()), "schema_version": 1,
                         "event_type": "page_view", "user_id": "u-1", **fields})


def test_an_oversized_message_is_dead_lettered_and_the_sink_carries_on(platform, lane, engine):
    prod = producer(platform.kafka)
    prod.produce(lane.topic, b"x" * NEAR_LIMIT, b"k", partition=0)
    for _ in range(10):
        prod.produce(lane.topic, _event(), b"u-1", headers=contract.HEADERS, partition=0)
    assert prod.flush(30) == 0
    lane.start()
    wait_for(lambda: offsets_stored(engine, lane.group, lane.topic) == 11, timeout_s=60,
             message="the sink to store the offset after all 11 messages")
    assert lane.alive(), lane.output()
    assert rows(engine, lane.topic)[0] == 10
    with engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT reason_code, length(payload) FROM raw.dead_letters "
            "WHERE source_topic = :t"), {"t": lane.topic}).one()
    assert tuple(stored) == (Reason.TOO_LARGE, NEAR_LIMIT)  # every byte kept in the table
    (copy,) = read_topic(platform, lane.dlq_topic, 1)
    headers = dict(copy.headers())
    assert b"value cut from 999900 bytes" in headers["dlq.truncated"]
    assert len(copy.value()) < NEAR_LIMIT and copy.value() == b"x" * len(copy.value())
    assert len(copy.value()) + sum(len(k) + len(v) for k, v in copy.headers()) <= MAX_COPY_BYTES


def test_dead_letters_are_published_outside_the_ingest_lock(platform, unique_name, engine):
    """A slow dead-letter flush must not hold the lock every sink lands under: while the
    writer publishes (decode rejects, then a row PostgreSQL refuses), another session can take
    the lock; and the batch still lands whole, in one transaction."""
    topic = unique_name
    messages = [(_event(), 0), (b"not json", 1), (_event(user_id="a\u0000b"), 2), (_event(), 3)]
    decoded = [decode(value, b"k", lambda: None, topic, 0, offset) for value, offset in messages]
    batch = Landing(rows=[d for d in decoded if not isinstance(d, DeadLetter)],
                    dead_letters=[d for d in decoded if isinstance(d, DeadLetter)],
                    next_offsets={(topic, 0): 4})
    published: list[tuple[list[Reason], bool]] = []

    def publish(letters: list[DeadLetter]) -> list:
        with psycopg.connect(libpq_url(platform.database_url), autocommit=True) as other:
            free = other.execute("SELECT pg_try_advisory_lock(%s)", (INGEST_SEQ_LOCK,)
                                 ).fetchone()[0]
            if free:
                other.execute("SELECT pg_advisory_unlock(%s)", (INGEST_SEQ_LOCK,))
        published.append(([d.reason_code for d in letters], free))
        return []  # none refused for good

    writer = LandingWriter(platform.database_url, "g-" + topic)
    writer.setup()
    try:
        writer.claim(topic, [0])
        result = writer.land(batch, publish)
    finally:
        writer.close()
    assert published == [([Reason.NOT_JSON], True), ([Reason.DB_REJECTED], True)]
    assert (result.inserted, result.dead_lettered, result.db_rejected) == (2, 2, 1)
    assert rows(engine, topic)[0] == 2
    with engine.connect() as conn:
        codes = conn.execute(text(
            "SELECT array_agg(reason_code ORDER BY source_offset) FROM raw.dead_letters "
            "WHERE source_topic = :t"), {"t": topic}).scalar_one()
        stored = conn.execute(text(
            "SELECT next_offset FROM raw.consumer_offsets WHERE group_id = :g"),
            {"g": "g-" + topic}).scalar_one()
    assert codes == [Reason.NOT_JSON, Reason.DB_REJECTED] and stored == 4


def _landing(topic: str, *at: tuple[int, int]) -> Landing:
    """One event at each (partition, offset)."""
    rows = [decode(_event(), b"k", lambda: None, topic, p, o) for p, o in at]
    return Landing(rows=rows, next_offsets={(topic, p): o + 1 for p, o in at})


def test_a_landing_of_a_partition_claimed_by_another_sink_since_stores_nothing(
        platform, unique_name, engine):
    """Sink A is paused past its session timeout; the group gives partition 1 to sink B, which
    claims it. A's next landing (partitions 0 and 1) is fenced whole: no row, no offset; B
    resumes where A's last landing left partition 1, and lands."""
    topic, group = unique_name, "g-" + unique_name
    a, b = LandingWriter(platform.database_url, group), LandingWriter(platform.database_url, group)
    try:
        assert a.claim(topic, [0, 1]) == {}  # nothing landed yet: both from the beginning
        a.land(_landing(topic, (0, 0), (1, 0)), lambda _: [])
        assert {p: o.next_offset for p, o in b.claim(topic, [1]).items()} == {1: 1}
        with pytest.raises(LandingFenced) as fenced:
            a.land(_landing(topic, (0, 1), (1, 1)), lambda _: [])
        assert fenced.value.partitions == [(topic, 1)]
        assert rows(engine, topic)[0] == 2 and offsets_stored(engine, group, topic) == 2
        b.land(_landing(topic, (1, 1)), lambda _: [])
        a.land(_landing(topic, (0, 1)), lambda _: [])  # partition 0 is still A's
        assert rows(engine, topic)[0] == 4 and offsets_stored(engine, group, topic) == 4
    finally:
        a.close()
        b.close()


def test_a_claim_waits_for_the_landing_that_stored_offsets_first_and_reads_them(
        platform, unique_name):
    """A landing holds its partitions' rows from its offset write to its commit: a claim in
    between waits, then starts the partition where that landing left it (never before it)."""
    topic, group = unique_name, "g-" + unique_name
    a, b = LandingWriter(platform.database_url, group), LandingWriter(platform.database_url, group)
    a.claim(topic, [0])
    claimed: list = []
    try:
        with a.conn.transaction():  # A's landing, from its offset write to its commit
            a._store_offsets(topic, {0: 10}, None)
            taker = threading.Thread(target=lambda: claimed.append(b.claim(topic, [0])))
            taker.start()
            taker.join(1.0)
            assert taker.is_alive() and not claimed  # waits for A's commit
        taker.join(30)
        assert claimed[0][0].next_offset == 10
    finally:
        a.close()
        b.close()


def test_a_sink_frozen_while_sending_a_copy_is_cut_off_by_the_next_landing(
        platform, unique_name, engine):
    """Sink A took the ingest lock and stopped in the middle of a COPY (SIGSTOP, a GC pause):
    its session waits for data, out of reach of PostgreSQL's timeouts. Sink B's landing waits
    for the lock, finds A stuck, terminates A's session and lands."""
    topic, group = unique_name, "g-" + unique_name
    a = LandingWriter(platform.database_url, group)
    b = LandingWriter(platform.database_url, group, stuck_sink_s=1)
    a.setup()
    b.claim(topic, [0])
    landed: list = []
    lander = threading.Thread(target=lambda: landed.append(
        b.land(_landing(topic, (0, 0)), lambda _: [])))
    try:
        with pytest.raises(psycopg.OperationalError), a.conn.transaction():
            a.conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_SEQ_LOCK,))
            with a.conn.cursor() as cur, cur.copy("COPY landing FROM STDIN"):
                lander.start()  # the server waits for A's rows meanwhile
                lander.join(30)
                assert not lander.is_alive(), "the other sink still waits for the lock"
    finally:
        lander.join(30)
        a.close()
        b.close()
    assert landed[0].inserted == 1 and rows(engine, topic)[0] == 1


def test_of_two_copies_of_an_event_in_one_batch_the_first_lands(platform, unique_name, engine):
    """A producer's retry can put one event twice in a batch, with the same or another body:
    the first copy (lowest offset) lands, whatever plan PostgreSQL picks for the safe path's
    look-up (a hash anti-join emits rows in hash order, not the batch's)."""
    topic = unique_name
    ids = [str(uuid.uuid4()) for _ in range(100)]
    rows_ = [decode(_event(event_id=event_id, user_id=copy), b"k", lambda: None, topic, 0,
                    offset)
             for offset, (copy, event_id) in enumerate(
                 [("first", i) for i in ids] + [("second", i) for i in ids])]
    writer = LandingWriter(platform.database_url, "g-" + topic)
    writer.setup()
    try:
        writer.claim(topic, [0])
        # The plans that reorder: the batch hashed, every partition of raw.events probing it.
        writer.conn.execute("SET enable_nestloop = off")
        writer.conn.execute("SET enable_mergejoin = off")
        writer.conn.commit()
        result = writer.land(Landing(rows=rows_, next_offsets={(topic, 0): 200}), lambda _: [])
    finally:
        writer.close()
    assert result.inserted == 100
    with engine.connect() as conn:
        kept = conn.execute(text(
            "SELECT user_id, count(*) FROM raw.events WHERE kafka_topic = :t GROUP BY user_id"),
            {"t": topic}).all()
    assert [tuple(r) for r in kept] == [("first", 100)]
