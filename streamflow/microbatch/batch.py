"""Watermarks and reading a batch of landed events by ingest sequence."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pandas as pd
import psycopg
import pyarrow
from psycopg import sql
from pyarrow import csv as pa_csv

from streamflow.contract import Failure
from streamflow.db import tables
from streamflow.db.compose import column, statement
from streamflow.db.tables import events as raw_events
from streamflow.db.tables import watermarks as marks
from streamflow.dlq import Headers, stored_headers
from streamflow.validation import (
    ARROW_TYPES,
    CONTRACT_COLUMNS,
    TIME_RANGE,
    Failures,
    contract_frame,
    from_epoch_us,
    typed_fields,
)

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
    """Landed events as the frame the contract validates (its fields, None where missing or
    mistyped, plus ``ingest_seq`` and ``ingested_at``), in ingest order."""

    seqs: list[int]
    frame: pd.DataFrame
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
# Times as integer microseconds since the epoch (converted as whole arrays).
_EPOCH_US = "(extract(epoch FROM {}) * 1000000)::bigint"
_TYPED_COLUMNS = ["ingest_seq", *CONTRACT_COLUMNS, "ingested_at", "needs_payload"]
_SELECT_TYPED = statement(
    "SELECT {e.ingest_seq}, {e.event_id}::text, {typed}, {ingested_at}, {needs_payload} "
    "FROM {e} ",
    e=raw_events,
    typed=sql.SQL(", ").join(
        sql.SQL(_EPOCH_US).format(column(raw_events, name)) if name == "occurred_at"
        else column(raw_events, name) for name in CONTRACT_COLUMNS[1:]),
    ingested_at=sql.SQL(_EPOCH_US).format(column(raw_events, "ingested_at")),
    needs_payload=_NEEDS_PAYLOAD)
# Read as CSV straight into Arrow arrays (pyarrow's C++ parser): no Python object per value,
# half the Python CPU of fetching rows and building the frame from them (0.18 against 0.37 s
# per 100k; docs/BENCHMARKS.md, "Where a micro-batch spends its time").
# FORCE_QUOTE: a value is quoted, NULL is not, so only NULL reads as null (pyarrow would
# also take an unquoted "NaN" or "NULL" for one).
_AS_CSV = "COPY ({}) TO STDOUT (FORMAT csv, FORCE_QUOTE *)"
_READ_TYPED = sql.SQL(_AS_CSV).format(_SELECT_TYPED + statement(
    "WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s ORDER BY {e.ingest_seq} LIMIT %s",
    e=raw_events))
_READ_TYPED_AT = sql.SQL(_AS_CSV).format(_SELECT_TYPED + statement(
    "WHERE {e.ingest_seq} = ANY(%s) ORDER BY {e.ingest_seq}", e=raw_events))
_READ_ORIGINS = statement(
    "SELECT {e.ingest_seq}, {e.payload}::text, {e.message_key}, {e.headers}, {e.raw_headers}, "
    "{e.event_id}::text, {e.kafka_topic}, {e.kafka_topic_id}::text, {e.kafka_partition}, "
    "{e.kafka_offset} FROM {e} ", e=raw_events)
_READ_ORIGINS_AT = _READ_ORIGINS + statement("WHERE {e.ingest_seq} = ANY(%s)", e=raw_events)
_READ_ORIGINS_IN = _READ_ORIGINS + statement(
    "WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s", e=raw_events)
_CSV_TYPES = {"ingest_seq": pyarrow.int64(), **ARROW_TYPES, "ingested_at": pyarrow.int64(),
              "needs_payload": pyarrow.bool_()}
_CSV_OPTIONS = {
    # Any text a producer sent, newlines and quotes too.
    "parse_options": pa_csv.ParseOptions(newlines_in_values=True),
    "convert_options": pa_csv.ConvertOptions(
        column_types=_CSV_TYPES, null_values=[""], strings_can_be_null=True,
        quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"]),
}


def read_typed(conn: psycopg.Connection, after: int, upto: int,
               limit: int = MAX_BATCH) -> TypedBatch:
    """Events in (after, upto], at most ``limit``, from the sink's typed columns."""
    return _typed_batch(conn, _READ_TYPED, (after, upto, limit))


def read_typed_at(conn: psycopg.Connection, seqs: list[int]) -> TypedBatch:
    """The events at these ingest sequences (those still there), in ingest order."""
    return _typed_batch(conn, _READ_TYPED_AT, (seqs,))


def typed_frame(data: bytes) -> pd.DataFrame:
    """The typed columns as the COPY above wrote them (CSV) -> a frame of pandas' nullable
    and Arrow string dtypes (times still integer microseconds; ``needs_payload`` kept)."""
    if not data:
        return contract_frame(pyarrow.table({name: pyarrow.array([], type=_CSV_TYPES[name])
                                             for name in _TYPED_COLUMNS}))
    # One block: pyarrow refuses a row that straddles two (a text field longer than its
    # 1 MB default, as a sink with a raised max_event_bytes lands); parallel blocks buy
    # nothing on a busy 2-core box.
    read = pa_csv.ReadOptions(column_names=_TYPED_COLUMNS,
                              block_size=min(len(data) + 1, 2**31 - 1))
    return contract_frame(pa_csv.read_csv(pyarrow.py_buffer(data), read_options=read,
                                          **_CSV_OPTIONS))


def _typed_batch(conn: psycopg.Connection, query: sql.Composed, params: tuple) -> TypedBatch:
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        frame = typed_frame(b"".join(copy))
    slow = frame.index[frame.pop("needs_payload").fillna(False).to_numpy(dtype=bool)]
    frame.loc[slow, "occurred_at"] = None  # re-typed from the payload below (may not fit ns)
    for name in ("occurred_at", "ingested_at"):
        frame[name] = from_epoch_us(frame[name])
    seqs = frame["ingest_seq"].tolist()
    type_errors: Failures = {}
    if len(slow):
        origins = read_origins(conn, [seqs[i] for i in slow])
        for i in slow:
            # orjson, as in the sink: stdlib json recurses, and a payload the sink accepted
            # (nested up to orjson's 1,024 levels) would raise RecursionError here.
            errors: list[Failure] = []
            for name, value in typed_fields(orjson.loads(origins[seqs[i]].payload), errors).items():
                frame.at[i, name] = (pd.NaT if value is None else pd.Timestamp(value)
                                     ) if name == "occurred_at" else value
            if errors:
                type_errors[i] = errors
    return TypedBatch(seqs, frame, type_errors)


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
