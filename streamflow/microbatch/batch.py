"""Watermarks and reading a batch of landed events by ingest sequence."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pandas as pd
import psycopg
from psycopg import sql

from streamflow.contract import Failure
from streamflow.db import tables
from streamflow.db.compose import column, statement
from streamflow.db.tables import events as raw_events
from streamflow.db.tables import watermarks as marks
from streamflow.dlq import Headers, stored_headers
from streamflow.validation import CONTRACT_COLUMNS, TIME_RANGE, Failures, typed_fields

# Events per step: bounds a run's memory (~0.5 KB per event in pandas, typed columns only)
# and its duration (~1 s per 100k on 2 cores). Sized by `make bench` (microbatch group):
# beyond ~100k a run's fixed Dagster cost is already amortised.
MAX_BATCH = 100_000


_LANDED_MAX = statement("SELECT coalesce(max({e.ingest_seq}), 0) FROM {e}", e=raw_events)
_WATERMARKS = statement("SELECT {w.name}, {w.last_seq} FROM {w} WHERE {w.name} = ANY(%s)",
                        w=marks)
_ADVANCE = statement(
    "INSERT INTO {w} AS w ({w.name}, {w.last_seq}) VALUES (%s, %s) "
    "ON CONFLICT ({w.name}) DO UPDATE SET {w.last_seq} = GREATEST(w.{w.last_seq}, "
    "EXCLUDED.{w.last_seq}), {w.updated_at} = now()", w=marks)


def landed_max_seq(conn: psycopg.Connection) -> int:
    return conn.execute(_LANDED_MAX).fetchone()[0]


def watermark(conn: psycopg.Connection, name: str) -> int:
    return watermarks(conn, [name])[name]


def watermarks(conn: psycopg.Connection, names: list[str]) -> dict[str, int]:
    rows = dict(conn.execute(_WATERMARKS, (names,)).fetchall())
    return {name: rows.get(name, 0) for name in names}


def advance(conn: psycopg.Connection, name: str, seq: int) -> None:
    """Move a watermark forward (never back), in the caller's transaction."""
    conn.execute(_ADVANCE, (name, seq))


def hold_off_detach(conn: psycopg.Connection) -> None:
    """Keep the lifecycle from detaching a period while this transaction runs (it waits for
    the transaction's end; tables.LIFECYCLE_LOCK)."""
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (tables.LIFECYCLE_LOCK,))


def lock(conn: psycopg.Connection, name: str) -> None:
    """One runner per step at a time (a retried run may overlap a slow one)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("streamflow.microbatch." + name,))


@dataclass(frozen=True)
class TypedBatch:
    """Landed events as typed columns, in ingest order, ready for the contract check."""

    seqs: list[int]
    columns: dict[str, list]          # contract field -> values (None: missing or mistyped)
    ingested_at: pd.Series
    type_errors: Failures  # row position -> its wrong-typed fields

    def __len__(self) -> int:
        return len(self.seqs)


# The sink's typed columns hold each field that has the contract's type (NULL otherwise), and
# it marks a row whose payload holds a field its column could not (`mistyped`; NULL: landed
# before the sink recorded it). The payload is re-read only for those rows and where the time
# does not fit pandas' nanoseconds: ~0 rows in a healthy stream.
_NEEDS_PAYLOAD = statement(
    "{e.mistyped} IS NOT FALSE OR {e.occurred_at} NOT BETWEEN {earliest} AND {latest}",
    e=raw_events, earliest=TIME_RANGE[0], latest=TIME_RANGE[1])
# Times as integer microseconds since the epoch: pandas converts an int array at C speed, a
# list of datetime objects at ~2 µs each (measured: 0.2 s for a 50k batch's two time columns).
_EPOCH_US = "(extract(epoch FROM {}) * 1000000)::bigint"
_SELECT_TYPED = statement(
    "SELECT {e.ingest_seq}, {e.event_id}::text, {typed}, {ingested_at}, "
    "CASE WHEN {needs_payload} THEN {e.payload}::text END FROM {e} ",
    e=raw_events,
    typed=sql.SQL(", ").join(
        sql.SQL(_EPOCH_US).format(column(raw_events, name)) if name == "occurred_at"
        else column(raw_events, name) for name in CONTRACT_COLUMNS[1:]),
    ingested_at=sql.SQL(_EPOCH_US).format(column(raw_events, "ingested_at")),
    needs_payload=_NEEDS_PAYLOAD)
_READ_TYPED = _SELECT_TYPED + statement(
    "WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s ORDER BY {e.ingest_seq} LIMIT %s",
    e=raw_events)
_READ_TYPED_AT = _SELECT_TYPED + statement(
    "WHERE {e.ingest_seq} = ANY(%s) ORDER BY {e.ingest_seq}", e=raw_events)
_READ_ORIGINS = statement(
    "SELECT {e.ingest_seq}, {e.payload}::text, {e.message_key}, {e.headers}, {e.raw_headers}, "
    "{e.event_id}::text, {e.kafka_topic}, {e.kafka_topic_id}::text, {e.kafka_partition}, "
    "{e.kafka_offset} FROM {e} ", e=raw_events)
_READ_ORIGINS_AT = _READ_ORIGINS + statement("WHERE {e.ingest_seq} = ANY(%s)", e=raw_events)
_READ_ORIGINS_IN = _READ_ORIGINS + statement(
    "WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s", e=raw_events)


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
    type_errors: Failures = {}
    slow = [i for i, text in enumerate(payloads) if text is not None]
    occurred = columns["occurred_at"]
    for i in slow:
        occurred[i] = None  # re-typed from the payload below, as a datetime
    columns["occurred_at"] = _from_epoch_us(occurred)
    for i in slow:
        # orjson, as in the sink: stdlib json recurses, and a payload the sink accepted
        # (nested up to orjson's 1,024 levels) would raise RecursionError here.
        errors: list[Failure] = []
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
    headers: Headers
    event_id: str
    kafka_topic: str
    kafka_topic_id: str
    kafka_partition: int
    kafka_offset: int


def read_origins(conn: psycopg.Connection, seqs: list[int]) -> dict[int, Origin]:
    """ingest_seq -> the event's original message and Kafka coordinates (for the rejects)."""
    if not seqs:
        return {}
    return _origins(conn.execute(_READ_ORIGINS_AT, (seqs,)).fetchall())


def read_origins_in(conn: psycopg.Connection, after: int, upto: int) -> dict[int, Origin]:
    """As ``read_origins``, for the events in (after, upto] (a small range)."""
    return _origins(conn.execute(_READ_ORIGINS_IN, (after, upto)).fetchall())


def _origins(rows: list[tuple]) -> dict[int, Origin]:
    return {seq: Origin(text.encode(), key, stored_headers(headers, raw), *where)
            for seq, text, key, headers, raw, *where in rows}
