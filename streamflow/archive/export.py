"""Archive one period of a partitioned table to Parquet (docs/ARCHITECTURE.md, "The archive").

PostgreSQL streams the rows as CSV (``COPY ... TO STDOUT``), pyarrow parses the stream in C++
batch by batch and a ParquetWriter compresses it (zstd) to a hidden temp file beside the
period's ``data.parquet``, then moves it over that name: a period archived again is replaced
whole or not at all. Never the whole period in memory: a row group at a time.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from psycopg import sql

from streamflow.archive import columns
from streamflow.archive.checksum import Checksum, archive_checksum
from streamflow.archive.layout import open_location
from streamflow.archive.source import rows_of
from streamflow.db.compose import columns as column_list
from streamflow.db.partitions import Partitioned, Period

log = logging.getLogger("streamflow.archive")

# zstd level 3 (zstd's default). Measured on 200,000 demo events (benchmarks/
# archive_footprint.py), B/event at 256k-row groups: level 1 62.4, 3 64.2, 6 60.5 (2.4x the
# time), 9 59.3 (3.4x); the ints (sequences, offsets) delta-encoded instead of dictionary:
# 59.2 at level 3, no slower.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
DELTA = "DELTA_BINARY_PACKED"
# Rows per Parquet row group: large enough for zstd and dictionaries to find the repeats
# (event types, countries, devices, topic), small enough to hold in memory (~100 MB of demo
# events). DuckDB and restore read a row group at a time.
ROW_GROUP_ROWS = 262_144
# Bytes of CSV text pyarrow parses per batch.
CSV_BLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class Archived:
    """One archived period: where, how many rows, how many bytes of Parquet."""

    table: str              # schema.table
    period: str             # Period.key
    rows: int
    bytes: int              # the file's size
    path: str               # the file, within the archive's filesystem
    checksum: Checksum | None = None  # as read back from the file (None: not computed)

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


class _CopyStream(io.RawIOBase):
    """A ``COPY ... TO STDOUT`` as a readable byte stream (pyarrow's CSV reader reads it)."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._chunks = iter(copy)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def at_end(self) -> bool:
        """Nothing (more) to read: an empty period's COPY sends no bytes at all, which
        pyarrow's CSV reader refuses as an empty file."""
        if not self._pending:
            chunk = next(self._chunks, None)
            self._pending = memoryview(b"" if chunk is None else chunk)
        return not self._pending

    def readinto(self, buffer) -> int:
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk)
            n = min(size - filled, len(self._pending))
            buffer[filled:filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        return filled


def _csv_reader(stream: io.RawIOBase, spec: Partitioned) -> pa_csv.CSVStreamingReader:
    target = columns.schema(spec.table)
    binary = set(columns.binary_columns(spec.table))
    # bytea arrives as text (\x hex): parsed as a string, decoded in _decode_binary.
    types = {f.name: pa.string() if f.name in binary else f.type for f in target}
    return pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(column_names=target.names, block_size=CSV_BLOCK_BYTES),
        # A json payload, a reason text may hold line breaks (quoted, as CSV allows).
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types=types, true_values=["t"], false_values=["f"],
            # PostgreSQL's CSV: NULL is an empty unquoted field, '' a quoted one.
            strings_can_be_null=True, quoted_strings_can_be_null=False,
            null_values=[""], timestamp_parsers=[pa_csv.ISO8601]))


def _decode_binary(batch: pa.RecordBatch, binary: list[str], target: pa.Schema) -> pa.Table:
    table = pa.Table.from_batches([batch])
    for name in binary:
        index = table.schema.get_field_index(name)
        values = [None if v is None else bytes.fromhex(v[2:])
                  for v in table.column(index).to_pylist()]
        table = table.set_column(index, target.field(name), pa.array(values, pa.binary()))
    return table.cast(target)


def _export_sql(spec: Partitioned, period: Period, relation: str | None) -> sql.Composed:
    # A partition's own table holds only its period's rows; filtering it anyway costs little
    # and keeps a mis-named relation from archiving a wrong period's rows.
    return sql.SQL("COPY (SELECT {cols} FROM {rows}) TO STDOUT (FORMAT CSV)").format(
        cols=column_list(spec.table), rows=rows_of(spec, period, relation))


def parquet_writer(sink, target: pa.Schema) -> pq.ParquetWriter:
    ints = [f.name for f in target if f.type == pa.int64()]
    return pq.ParquetWriter(sink, target, compression=COMPRESSION,
                            compression_level=COMPRESSION_LEVEL,
                            use_dictionary=[n for n in target.names if n not in ints],
                            column_encoding=dict.fromkeys(ints, DELTA))


def _write(conn: psycopg.Connection, spec: Partitioned, period: Period,
           relation: str | None, sink) -> int:
    """Stream the period's rows into ``sink`` (a writable file) as Parquet: rows written."""
    target = columns.schema(spec.table)
    binary = columns.binary_columns(spec.table)
    rows = 0
    with (conn.transaction(), conn.cursor() as cur,
          parquet_writer(sink, target) as writer):
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        with cur.copy(_export_sql(spec, period, relation)) as copy:
            stream = _CopyStream(copy)
            reader = [] if stream.at_end() else _csv_reader(stream, spec)
            pending: list[pa.Table] = []
            pending_rows = 0
            for batch in reader:
                pending.append(_decode_binary(batch, binary, target))
                pending_rows += batch.num_rows
                if pending_rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    rows += pending_rows
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
    return rows


def archive_period(conn: psycopg.Connection, spec: Partitioned, period: Period, url: str,
                   relation: str | None = None) -> Archived:
    """Write the rows of ``period`` to ``<url>/<schema.table>/period=<key>/data.parquet``,
    replacing any earlier file of it atomically. The rows are those of ``relation`` (the
    period's partition table, ``schema.name``, attached or detached) or, by default, the
    parent table's rows with the time key in [start, end). The checksum is read back from
    the file written."""
    location = open_location(url)
    final = location.data_path(spec.name, period.key)
    temp = location.temp_path(spec.name, period.key)
    location.fs.makedirs(location.period_folder(spec.name, period.key), exist_ok=True)
    try:
        with location.fs.open(temp, "wb") as sink:
            rows = _write(conn, spec, period, relation, sink)
        location.fs.mv(temp, final)
    except BaseException:
        if location.fs.exists(temp):
            location.fs.rm(temp)
        raise
    archived = Archived(spec.name, period.key, rows, location.fs.size(final), final,
                        archive_checksum(url, spec, period))
    log.info("archived %s %s: %d rows, %d bytes", spec.name, period.key, rows, archived.bytes)
    return archived
