"""Watermarks and reading a batch of landed events by ingest sequence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
import psycopg

# Events per step: bounds a run's memory (~1 KB per event in pandas) and duration.
MAX_BATCH = 50_000


@dataclass(frozen=True)
class LandedEvent:
    ingest_seq: int
    payload: dict
    raw: bytes
    kafka_topic: str
    kafka_partition: int
    kafka_offset: int
    ingested_at: datetime


def landed_max_seq(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT coalesce(max(ingest_seq), 0) FROM raw.events").fetchone()[0]


def watermark(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT last_seq FROM streamflow.watermarks WHERE name = %s",
                       (name,)).fetchone()
    return row[0] if row else 0


def watermarks(conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
    rows = dict(conn.execute("SELECT name, last_seq FROM streamflow.watermarks "
                             "WHERE name = ANY(%s)", (names,)).fetchall())
    return {name: rows.get(name, 0) for name in names}


def advance(conn: psycopg.Connection, name: str, seq: int) -> None:
    """Move a watermark forward (never back), in the caller's transaction."""
    conn.execute(
        "INSERT INTO streamflow.watermarks (name, last_seq) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET last_seq = GREATEST(streamflow.watermarks.last_seq, "
        "EXCLUDED.last_seq), updated_at = now()", (name, seq))


def lock(conn: psycopg.Connection, name: str) -> None:
    """One runner per step at a time (a retried run may overlap a slow one)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("streamflow.microbatch." + name,))


def read_events(conn: psycopg.Connection, after: int, upto: int,
                limit: int = MAX_BATCH) -> list[LandedEvent]:
    rows = conn.execute(
        "SELECT ingest_seq, payload::text, kafka_topic, kafka_partition, kafka_offset, "
        "ingested_at FROM raw.events WHERE ingest_seq > %s AND ingest_seq <= %s "
        "ORDER BY ingest_seq LIMIT %s", (after, upto, limit)).fetchall()
    # orjson, as in the sink: psycopg's default (stdlib json) recurses, and a payload the sink
    # accepted (nested up to orjson's 1,024 levels) would raise RecursionError here.
    return [LandedEvent(seq, orjson.loads(text), text.encode(), topic, partition, offset,
                        ingested)
            for seq, text, topic, partition, offset, ingested in rows]
