"""Archived rows loaded back into PostgreSQL (to reprocess old data): those of a time range,
each period's partition made first, with their original columns (ingest_seq and the time key
included). Idempotent: a row whose id is in the table already is skipped, so a second restore
inserts nothing."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import sql

from streamflow.archive import columns
from streamflow.archive.layout import open_location
from streamflow.db import partitions, tables
from streamflow.db.compose import columns as column_list
from streamflow.db.compose import table_name
from streamflow.db.engine import connect_admin
from streamflow.db.partitions import Partitioned, Period
from streamflow.errors import ArchiveEmpty

# Rows per restore transaction: the ingest lock (raw.events) is held only for one INSERT of
# these, so the sink waits a fraction of a second at most.
RESTORE_BATCH_ROWS = 50_000


@dataclass(frozen=True)
class Restored:
    read: int      # archived rows in the range
    inserted: int  # of those, rows not in the table yet


@dataclass(frozen=True)
class PeriodRestored:
    table: str
    period: str
    read: int
    inserted: int


def archived_periods(url: str, spec: Partitioned, start: datetime, end: datetime,
                     interval: timedelta) -> list[Period]:
    """The archived periods of ``spec`` overlapping [start, end)."""
    location = open_location(url)
    found = [Period.from_key(key, interval) for key in location.period_keys(spec.name)]
    return [p for p in found if p.start < end and start < p.end]


def restore(database_url: str, spec: Partitioned, start: datetime, end: datetime, url: str,
            interval: timedelta, *,
            progress: Callable[[PeriodRestored], None] | None = None) -> Restored:
    """Load the archived rows of ``spec`` whose time key is in [start, end) back into the
    table (``interval``: STREAMFLOW_PARTITION_INTERVAL, the partitions made for them).
    ``progress`` hears of each period when done. Raises ``ArchiveEmpty`` when no archived
    period overlaps the range."""
    wanted = archived_periods(url, spec, start, end, interval)
    if not wanted:
        raise ArchiveEmpty(f"the archive at {url} holds no period of {spec.name} between "
                           f"{start.isoformat()} and {end.isoformat()}")
    location = open_location(url)
    read = inserted = 0
    with connect_admin(database_url, "streamflow-archive-restore") as conn:
        partitions.ensure(conn, spec, interval, datetime.now(UTC), periods_wanted=[
            p for period in wanted
            for p in partitions.periods(max(start, period.start),
                                        min(end, period.end) - timedelta(microseconds=1),
                                        interval)])
        for period in wanted:
            with location.fs.open(location.data_path(spec.name, period.key), "rb") as file:
                done = _restore_file(conn, spec, pq.ParquetFile(file), start, end)
            read += done.read
            inserted += done.inserted
            if progress:
                progress(PeriodRestored(spec.name, period.key, done.read, done.inserted))
    return Restored(read, inserted)


def _restore_file(conn: psycopg.Connection, spec: Partitioned, file: pq.ParquetFile,
                  start: datetime, end: datetime) -> Restored:
    # The table's columns the file has (a column added since is left to its default).
    names = [n for n in columns.names(spec) if n in file.schema_arrow.names]
    read = inserted = 0
    for batch in file.iter_batches(batch_size=RESTORE_BATCH_ROWS, columns=names):
        key = batch.column(spec.key)
        rows = batch.filter(pc.and_(pc.greater_equal(key, pa.scalar(start, key.type)),
                                    pc.less(key, pa.scalar(end, key.type))))
        if rows.num_rows:
            read += rows.num_rows
            inserted += _insert(conn, spec, names, _csv(rows, spec))
    return Restored(read, inserted)


def _csv(rows: pa.RecordBatch, spec: Partitioned) -> bytes:
    """The rows as PostgreSQL's CSV: bytea as \\x hex; NULL an empty unquoted field (pyarrow
    quotes every string, so '' stays '')."""
    table = pa.Table.from_batches([rows])
    for name in columns.binary_columns(spec.table):
        if name in table.column_names:
            index = table.column_names.index(name)
            hexed = [None if v is None else "\\x" + v.hex()
                     for v in table.column(index).to_pylist()]
            table = table.set_column(index, name, pa.array(hexed, pa.string()))
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue()


def _insert(conn: psycopg.Connection, spec: Partitioned, names: list[str], data: bytes) -> int:
    """One transaction: the rows into a temp table, then those whose id no partition holds
    into the table. Unique keys are per partition (streamflow.db.partitions): NOT EXISTS
    looks in all of them, under the ingest lock for raw.events as the sink's landing does;
    ON CONFLICT covers the other unique keys of the partition."""
    parent = table_name(spec.table)
    cols = column_list(spec.table, names)
    ids = sql.Identifier(spec.ids)
    temp = sql.Identifier(f"archive_restore_{spec.short}")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {parent}) "
                             "ON COMMIT DELETE ROWS").format(temp=temp, parent=parent))
        with conn.cursor().copy(sql.SQL("COPY {temp} ({cols}) FROM STDIN (FORMAT CSV)").format(
                temp=temp, cols=cols)) as copy:
            copy.write(data)
        if spec.table is tables.events:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (tables.INGEST_SEQ_LOCK,))
        # Counted in streamflow.dlq_report when they first came (the drop never uncounted
        # them): the count trigger skips this statement (migration 0012).
        conn.execute("SELECT set_config('streamflow.restoring', 'on', true)")
        return conn.execute(sql.SQL(
            "INSERT INTO {parent} ({cols}) SELECT {cols} FROM {temp} r "
            "WHERE NOT EXISTS (SELECT 1 FROM {parent} x WHERE x.{ids} = r.{ids}) "
            "ON CONFLICT DO NOTHING").format(parent=parent, cols=cols, temp=temp, ids=ids)
        ).rowcount
