"""Watermarks and reading a batch of landed events by ingest sequence."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pandas as pd
import psycopg
from psycopg import sql

from streamflow.validation import CONTRACT_COLUMNS, TIME_RANGE, typed_fields

# Events per step: bounds a run's memory (~0.5 KB per event in pandas, typed columns only)
# and its duration (~1 s per 100k on 2 cores). Sized by `make bench` (microbatch group):
# beyond ~100k a run's fixed Dagster cost is already amortised.
MAX_BATCH = 100_000


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


@dataclass(frozen=True)
class TypedBatch:
    """Landed events as typed columns, in ingest order, ready for the contract check."""

    seqs: list[int]
    columns: dict[str, list]          # contract field -> values (None: missing or mistyped)
    ingested_at: pd.Series
    type_errors: dict[int, list[str]]  # row position -> wrong-typed fields, as reasons

    def __len__(self) -> int:
        return len(self.seqs)


# The sink's typed columns hold each field that has the contract's type (NULL otherwise), and
# it marks a row whose payload holds a field its column could not (`mistyped`; NULL: landed
# before the sink recorded it). The payload is re-read only for those rows and where the time
# does not fit pandas' nanoseconds: ~0 rows in a healthy stream.
_NEEDS_PAYLOAD = sql.SQL("mistyped IS NOT FALSE OR occurred_at NOT BETWEEN {} AND {}").format(
    *map(sql.Literal, TIME_RANGE))
# Times as integer microseconds since the epoch: pandas converts an int array at C speed, a
# list of datetime objects at ~2 µs each (measured: 0.2 s for a 50k batch's two time columns).
_EPOCH_US = "(extract(epoch FROM {}) * 1000000)::bigint"
_SELECT_TYPED = sql.SQL(
    "SELECT ingest_seq, event_id::text, {typed}, {ingested_at}, "
    "CASE WHEN {needs_payload} THEN payload::text END FROM raw.events ").format(
        typed=sql.SQL(", ").join(
            sql.SQL(_EPOCH_US).format(sql.Identifier(name)) if name == "occurred_at"
            else sql.Identifier(name) for name in CONTRACT_COLUMNS[1:]),
        ingested_at=sql.SQL(_EPOCH_US).format(sql.Identifier("ingested_at")),
        needs_payload=_NEEDS_PAYLOAD)
_READ_TYPED = _SELECT_TYPED + sql.SQL(
    "WHERE ingest_seq > %s AND ingest_seq <= %s ORDER BY ingest_seq LIMIT %s")
_READ_TYPED_AT = _SELECT_TYPED + sql.SQL("WHERE ingest_seq = ANY(%s) ORDER BY ingest_seq")


def read_typed(conn: psycopg.Connection, after: int, upto: int,
               limit: int = MAX_BATCH) -> TypedBatch:
    """Events in (after, upto], at most ``limit``, from the sink's typed columns."""
    return _typed_batch(conn.execute(_READ_TYPED, (after, upto, limit)).fetchall())


def read_typed_at(conn: psycopg.Connection, seqs: list[int]) -> TypedBatch:
    """The events at these ingest sequences (those still there), in ingest order."""
    return _typed_batch(conn.execute(_READ_TYPED_AT, (seqs,)).fetchall())


def _typed_batch(rows: list[tuple]) -> TypedBatch:
    if not rows:
        empty = {name: [] for name in CONTRACT_COLUMNS}
        empty["occurred_at"] = _from_epoch_us([])
        return TypedBatch([], empty, _from_epoch_us([]), {})
    seqs, *values, ingested_us, payloads = (list(c) for c in zip(*rows, strict=True))
    columns = dict(zip(CONTRACT_COLUMNS, values, strict=True))
    type_errors: dict[int, list[str]] = {}
    slow = [i for i, text in enumerate(payloads) if text is not None]
    occurred = columns["occurred_at"]
    for i in slow:
        occurred[i] = None  # re-typed from the payload below, as a datetime
    columns["occurred_at"] = _from_epoch_us(occurred)
    for i in slow:
        # orjson, as in the sink: stdlib json recurses, and a payload the sink accepted
        # (nested up to orjson's 1,024 levels) would raise RecursionError here.
        errors: list[str] = []
        for name, value in typed_fields(orjson.loads(payloads[i]), errors).items():
            if name == "occurred_at":
                columns[name].iat[i] = pd.NaT if value is None else pd.Timestamp(value)
            else:
                columns[name][i] = value
        if errors:
            type_errors[i] = errors
    return TypedBatch(seqs, columns, _from_epoch_us(ingested_us), type_errors)


def _from_epoch_us(values: list[int | None]) -> pd.Series:
    return pd.Series(pd.to_datetime(pd.array(values, dtype="Int64"), unit="us", utc=True)
                     ).astype("datetime64[ns, UTC]")  # the contract's unit


@dataclass(frozen=True)
class Origin:
    """The message a landed event came from, as it arrived, for its dead letter."""

    payload: bytes
    key: bytes | None
    headers: dict[str, str]
    event_id: str
    kafka_topic: str
    kafka_topic_id: str
    kafka_partition: int
    kafka_offset: int


def read_origins(conn: psycopg.Connection, seqs: list[int]) -> dict[int, Origin]:
    """ingest_seq -> the event's original message and Kafka coordinates (for the rejects)."""
    if not seqs:
        return {}
    rows = conn.execute(
        "SELECT ingest_seq, payload::text, message_key, coalesce(headers, '{}'), "
        "event_id::text, kafka_topic, kafka_topic_id::text, kafka_partition, kafka_offset "
        "FROM raw.events WHERE ingest_seq = ANY(%s)", (seqs,)).fetchall()
    return {seq: Origin(text.encode(), key, headers, *where)
            for seq, text, key, headers, *where in rows}
