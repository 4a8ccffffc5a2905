"""A period's table brought into an archive that already holds the period, losing nothing
of either (docs/ARCHITECTURE.md, "Storage over time").

The lifecycle calls this when a detached period does not match its file. The table may hold
more than the file (rows that committed into the period after it was archived), or less (a
partial `streamflow archive restore` put some rows back), or other rows (a partition made
again for rows that arrived after its period was dropped). Writing the file again from the
table alone would lose what only the file holds; so the table's rows are staged beside the
file, and the file is replaced by the file's rows the table does not have plus every row of
the table, matched on the table's id column (the table's version wins). The result is checked
before it is trusted: every id of the table is in the new file, and the new file holds
exactly the old file's rows plus the table's new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import psycopg
import pyarrow as pa

from streamflow.archive import columns, duck
from streamflow.archive.checksum import db_checksum
from streamflow.archive.export import archive_period, parquet_writer
from streamflow.archive.layout import Location, open_location
from streamflow.db.partitions import Partitioned, Period

_BATCH_ROWS = 256 * 1024


@dataclass(frozen=True)
class Merged:
    ok: bool
    rows: int        # in the archive's file now
    added: int       # rows of the table the file did not hold
    reason: str = ""  # why not ok


def merge_into_archive(conn: psycopg.Connection, spec: Partitioned, period: Period, url: str,
                       relation: str) -> Merged:
    """Make the period's file hold every row of ``relation`` and keep every row it held."""
    location = open_location(url)
    final = location.data_path(spec.name, period.key)
    if not location.fs.exists(final):
        done = archive_period(conn, spec, period, url, relation=relation)
        return Merged(True, done.rows, done.rows)
    # Beside the archive's folders, where no query's glob reaches (`<table>/*/*.parquet`).
    staging = f"{url.rstrip('/')}/.staging"
    staged = archive_period(conn, spec, period, staging, relation=relation)
    expected = db_checksum(conn, spec, period, relation=relation)
    try:
        if (staged.rows, staged.checksum) != (expected.rows, expected):
            return Merged(False, 0, 0, f"{spec.name} {period.key}: the staged copy of the "
                                       "table does not match it")
        return _merge(location, spec, period, final, staged.path)
    finally:
        staged_in = open_location(staging)
        staged_in.fs.rm(staged_in.period_folder(spec.name, period.key), recursive=True)


def _merge(location: Location, spec: Partitioned, period: Period, final: str,
           staged: str) -> Merged:
    ids = duckdb.ColumnExpression(spec.ids)
    with duck.connect(location) as con:
        def read(path: str) -> duckdb.DuckDBPyRelation:
            return con.read_parquet(location.url(path))

        old_rows = read(final).count("*").fetchall()[0][0]
        new = read(staged).join(read(final).select(ids.alias("_id")),
                                duckdb.ColumnExpression(spec.ids) == duckdb.ColumnExpression(
                                    "_id"), how="anti")
        added = new.count("*").fetchall()[0][0]
        if added == 0:  # the file holds every row of the table already
            return Merged(True, old_rows, 0)
        kept = read(final).join(read(staged).select(ids.alias("_id")),
                                duckdb.ColumnExpression(spec.ids) == duckdb.ColumnExpression(
                                    "_id"), how="anti")
        merged = kept.union(read(staged))
        temp = location.temp_path(spec.name, period.key)
        target = columns.schema(spec.table)
        with location.fs.open(temp, "wb") as sink, parquet_writer(sink, target) as writer:
            for batch in merged.fetch_record_batch(_BATCH_ROWS):
                writer.write_table(pa.Table.from_batches([batch]).cast(target))
        location.fs.mv(temp, final)
        now_rows = read(final).count("*").fetchall()[0][0]
        missing = read(staged).join(read(final).select(ids.alias("_id")),
                                    duckdb.ColumnExpression(spec.ids)
                                    == duckdb.ColumnExpression("_id"), how="anti")
        lost = missing.count("*").fetchall()[0][0]
    if lost or now_rows != old_rows + added:
        return Merged(False, now_rows, added,
                      f"{spec.name} {period.key}: the merged file holds {now_rows} rows, "
                      f"expected {old_rows} + {added}, {lost} of the table's missing")
    return Merged(True, now_rows, added)
