"""Time partitions against the real PostgreSQL (streamflow.db.partitions): made ahead, a row
with no period's partition caught by the default one and moved out by the next ``ensure``,
one row per event across partition boundaries, and the migration of a populated database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streamflow import contract
from streamflow.db import migrate, partitions
from streamflow.db.engine import connect_admin
from streamflow.db.landed_before import LandedBefore
from streamflow.db.landing import Landing, LandingWriter
from streamflow.db.partitions import DEAD_LETTERS, EVENTS, NOTIFICATIONS, Period
from streamflow.dlq import DeadLetter
from streamflow.sink.decode import decode

HOUR = timedelta(hours=1)


def _event(**fields) -> bytes:
    return orjson.dumps({"event_id": str(uuid.uuid4()), "schema_version": 1,
                         "event_type": "page_view", "user_id": "u-1", **fields})


def _landing(topic: str, values: list[bytes], first_offset: int = 0) -> Landing:
    decoded = [decode(v, b"k", lambda: contract.HEADERS, topic, 0, first_offset + i)
               for i, v in enumerate(values)]
    return Landing(rows=[d for d in decoded if not isinstance(d, DeadLetter)],
                   dead_letters=[d for d in decoded if isinstance(d, DeadLetter)],
                   next_offsets={(topic, 0): first_offset + len(values)})


def _land(url: str, topic: str, batch: Landing):
    writer = LandingWriter(url, "g-" + topic)
    writer.setup()
    try:
        writer.claim(topic, [0])
        return writer.land(batch, lambda letters: [])
    finally:
        writer.close()


@pytest.fixture
def hourly(fresh_database):
    """A fresh database migrated with one-hour partitions: its URL."""
    migrate.upgrade(fresh_database, partition_interval=HOUR)
    return fresh_database


def _where(conn, table: str, column: str, value) -> list[str]:
    """The partitions holding the rows of ``table`` where ``column`` = ``value``."""
    return [name for (name,) in conn.execute(
        f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s",  # noqa: S608
        (value,)).fetchall()]


def test_partitions_are_made_ahead_and_a_stray_row_is_caught_then_moved(hourly):
    now = datetime.now(UTC)
    with connect_admin(hourly) as conn:
        # marts.fct_events is dbt's, partitioned at its first build (test_dbt_automation).
        assert not partitions.is_partitioned(conn, partitions.FCT_EVENTS)
        for spec in (EVENTS, DEAD_LETTERS, NOTIFICATIONS):
            made = partitions.partitions(conn, spec)
            assert made[0].period == Period.holding(now, HOUR), spec.name
            assert made[-1].period.end >= now + partitions.ahead(HOUR), spec.name
            assert partitions.default_rows(conn, spec) == 0
        # A row far past every partition made: the default partition takes it (no failure).
        later = now + timedelta(days=3)
        conn.execute("INSERT INTO raw.dead_letters (stage, reason_code, reason, source_topic, "
                     "source_partition, source_offset, created_at) "
                     "VALUES ('ingest', 'not_json', 'x', 't', 0, 0, %s)", (later,))
        assert partitions.default_rows(conn, DEAD_LETTERS) == 1
        assert _where(conn, "raw.dead_letters", "created_at", later) == [
            "raw.dead_letters_default"]
        ensured = partitions.ensure(conn, DEAD_LETTERS, HOUR, now)
        assert ensured.moved == 1
        assert partitions.default_rows(conn, DEAD_LETTERS) == 0
        home = DEAD_LETTERS.partition_name(Period.holding(later, HOUR))
        assert _where(conn, "raw.dead_letters", "created_at", later) == [f"raw.{home}"]
        # The count trigger sees rows in any partition; a move is not a new dead letter.
        assert conn.execute("SELECT sum(dead_letters) FROM streamflow.dlq_report").fetchone()[
            0] == 1
        # Idempotent: nothing more to make.
        assert partitions.ensure(conn, DEAD_LETTERS, HOUR, now).created == []


def _age(conn, table: str, key: str, by: timedelta) -> None:
    """Move every row of ``table`` back by ``by`` (into the partition of that time)."""
    conn.execute(f"UPDATE {table} SET {key} = {key} - %s", (by,))  # noqa: S608


@pytest.mark.parametrize("mixed", [False, True], ids=["same-batch", "with-new-events"])
def test_an_event_delivered_again_after_a_partition_boundary_is_not_a_second_row(
        hourly, unique_name, mixed):
    """Events landed an hour ago (now in the previous hour's partition) arrive again, as
    after a replay: none lands twice. The fast path's COPY alone would see no conflict: the
    current partition's unique index does not hold the earlier rows."""
    topic = unique_name
    values = [_event() for _ in range(20)]
    assert _land(hourly, topic, _landing(topic, values)).inserted == 20
    now = datetime.now(UTC)
    with connect_admin(hourly) as conn:
        partitions.ensure(conn, EVENTS, HOUR, now, periods_wanted=[Period.holding(now - HOUR,
                                                                                  HOUR)])
        _age(conn, "raw.events", "ingested_at", HOUR)
        before = EVENTS.partition_name(Period.holding(now - HOUR, HOUR))
        assert {p for (p,) in conn.execute("SELECT DISTINCT tableoid::regclass::text "
                                           "FROM raw.events")} == {f"raw.{before}"}
    again = values + ([_event() for _ in range(5)] if mixed else [])
    result = _land(hourly, topic, _landing(topic, again, first_offset=100))
    assert result.inserted == (5 if mixed else 0)
    with connect_admin(hourly) as conn:
        per_event = conn.execute("SELECT event_id, count(*) FROM raw.events GROUP BY 1"
                                 ).fetchall()
    assert len(per_event) == len(again)
    assert {n for _, n in per_event} == {1}


def test_a_dead_letter_and_a_notification_stored_again_after_a_boundary_are_one_row(
        hourly, unique_name):
    """Dead letters (a replayed batch) and notifications (a re-run range) are idempotent
    across partitions too."""
    from streamflow.db.dead_letters import insert_dead_letters

    topic = unique_name
    batch = _landing(topic, [b"not json", _event()])
    assert len(batch.dead_letters) == 1
    _land(hourly, topic, batch)
    now = datetime.now(UTC)
    with connect_admin(hourly) as conn:
        for spec in (DEAD_LETTERS, NOTIFICATIONS):
            partitions.ensure(conn, spec, HOUR, now,
                              periods_wanted=[Period.holding(now - HOUR, HOUR)])
        conn.execute("INSERT INTO streamflow.notifications (event_id, ingest_seq, "
                     "schema_version, event_type, user_id, email_hash, email_masked, "
                     "occurred_at, country, device) SELECT event_id, ingest_seq, 1, 'x', 'u', "
                     "'h', 'm', now(), 'FR', 'web' FROM raw.events")
        _age(conn, "raw.dead_letters", "created_at", HOUR)
        _age(conn, "streamflow.notifications", "validated_at", HOUR)
        with conn.transaction():
            insert_dead_letters(conn, batch.dead_letters)
        inserted = conn.execute("""
            INSERT INTO streamflow.notifications (event_id, ingest_seq, schema_version,
                event_type, user_id, email_hash, email_masked, occurred_at, country, device)
            SELECT event_id, ingest_seq, 1, 'x', 'u', 'h', 'm', now(), 'FR', 'web'
            FROM raw.events r
            WHERE NOT EXISTS (SELECT 1 FROM streamflow.notifications x
                              WHERE x.event_id = r.event_id)
            ON CONFLICT DO NOTHING""").rowcount
        assert inserted == 0
        assert conn.execute("SELECT count(*) FROM raw.dead_letters").fetchone()[0] == 1
        assert conn.execute("SELECT sum(dead_letters) FROM streamflow.dlq_report"
                            ).fetchone()[0] == 1


ROWS = 20_000


def test_a_populated_database_is_converted_in_place(fresh_database):
    """Upgraded from 0010 with rows over three days in every table: after the migration and
    the first ``ensure``, every row is in its day's partition, none in the default one, none
    lost, and the counters and sequences carry on."""
    url = fresh_database
    migrate.upgrade(url, "0010")
    start = datetime.now(UTC) - timedelta(days=2)
    with connect_admin(url) as conn:
        conn.execute("""
            INSERT INTO raw.events (event_id, payload, kafka_topic, kafka_partition,
                                    kafka_offset, ingested_at)
            SELECT gen_random_uuid(), '{}'::json, 't', 0, g,
                   %(start)s + g * interval '1 second' * (172800.0 / %(n)s)
            FROM generate_series(1, %(n)s) g""", {"start": start, "n": ROWS})
        conn.execute("""
            INSERT INTO raw.dead_letters (stage, reason_code, reason, source_topic,
                                          source_partition, source_offset, created_at)
            SELECT 'ingest', 'not_json', 'x', 't', 0, g, %(start)s + g * interval '1 minute'
            FROM generate_series(1, 2000) g""", {"start": start})
        conn.execute("""
            INSERT INTO streamflow.notifications (event_id, ingest_seq, schema_version,
                event_type, user_id, email_hash, email_masked, occurred_at, country, device,
                validated_at)
            SELECT event_id, ingest_seq, 1, 'x', 'u', 'h', 'm', ingested_at, 'FR', 'web',
                   ingested_at FROM raw.events""")
        report = conn.execute("SELECT sum(dead_letters) FROM streamflow.dlq_report"
                              ).fetchone()[0]
        last_seq = conn.execute("SELECT max(ingest_seq) FROM raw.events").fetchone()[0]
    migrate.upgrade(url, partition_interval=timedelta(days=1))
    with connect_admin(url) as conn:
        for spec, n in ((EVENTS, ROWS), (DEAD_LETTERS, 2000), (NOTIFICATIONS, ROWS)):
            assert partitions.default_rows(conn, spec) == 0, spec.name
            assert conn.execute(f"SELECT count(*) FROM {spec.name}").fetchone()[0] == n  # noqa: S608
            days = {p.period.start.date() for p in partitions.partitions(conn, spec)}
            assert {(start + timedelta(days=d)).date() for d in range(3)} <= days
        assert conn.execute("SELECT sum(dead_letters) FROM streamflow.dlq_report"
                            ).fetchone()[0] == report
        (spread,) = conn.execute("SELECT count(DISTINCT tableoid) FROM raw.events").fetchone()
        assert spread >= 3
    topic = "t-after"
    assert _land(url, topic, _landing(topic, [_event()])).inserted == 1
    with connect_admin(url) as conn:
        assert conn.execute("SELECT max(ingest_seq) FROM raw.events").fetchone()[0] > last_seq


def test_the_look_up_before_the_fast_copy_searches_only_where_an_event_could_be(hourly):
    """streamflow.db.landed_before: ids above the newest of the other partitions are new
    without a search; an id at or below it is searched for; the partition the batch lands
    in is left to its own unique index; with no period partition for now, every partition
    is searched."""
    def uuidv7s(n: int, ago: timedelta = timedelta(0)) -> list[str]:
        with connect_admin(hourly) as conn:
            return [str(i) for i in conn.execute(
                "SELECT array_agg(uuidv7(-%s::interval)) FROM generate_series(1, %s)",
                (ago, n)).fetchone()[0]]

    with connect_admin(hourly) as conn:
        now = datetime.now(UTC)
        partitions.ensure(conn, EVENTS, HOUR, now, periods_wanted=[
            Period.holding(now - HOUR, HOUR)])
    topic = "look-up"
    older = [_event(event_id=i) for i in uuidv7s(3, HOUR)]
    assert _land(hourly, topic, _landing(topic, older)).inserted == 3
    with connect_admin(hourly) as conn:
        _age(conn, "raw.events", "ingested_at", HOUR)
    current = [_event(event_id=i) for i in uuidv7s(3)]
    assert _land(hourly, topic, _landing(topic, current, first_offset=3)).inserted == 3
    old_ids = [orjson.loads(v)["event_id"] for v in older]
    current_ids = [orjson.loads(v)["event_id"] for v in current]
    with connect_admin(hourly) as conn:
        new_ids = uuidv7s(50)
        landed = LandedBefore()
        landed.refresh(conn)
        assert landed.period == Period.holding(datetime.now(UTC), HOUR)
        with conn.transaction():
            assert landed.any(conn, new_ids) is False
            assert landed.any(conn, [*new_ids, old_ids[1]]) is True
            assert landed.any(conn, [str(uuid.uuid4()) for _ in range(20)]) is False
            # The current partition's own index refuses these at the COPY.
            assert landed.any(conn, current_ids) is False
        unknown = LandedBefore()
        unknown.refresh(conn, now=datetime.now(UTC) + timedelta(days=30))
        assert unknown.period is None
        with conn.transaction():
            assert unknown.any(conn, current_ids) is True
            assert unknown.any(conn, new_ids) is False
    # The fast path's COPY refuses a current event again: the safe path keeps one row.
    again = _land(hourly, topic, _landing(topic, [*current, _event()], first_offset=6))
    assert again.inserted == 1
    with connect_admin(hourly) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.events"
                            ).fetchone() == (7, 7)
