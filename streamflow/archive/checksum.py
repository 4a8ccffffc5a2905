"""The checksum that verifies an archived period against PostgreSQL before its drop
(docs/ARCHITECTURE.md, "The archive"): the row count, and the sum over rows of the first 15
hex digits (60 bits) of md5(the row's id as text). A sum is free of row order; 60 bits per
row keep it exact in PostgreSQL's numeric, DuckDB's hugeint and Python's int alike.

The same function three times, each one checked against the others (tests/unit and
tests/integration/test_archive.py): ``id_hash`` in Python, ``_SQL_HASH`` in PostgreSQL,
``_DUCK_HASH`` in DuckDB. The archive's side reads the ids back from the Parquet file itself:
its stored metadata is not evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import duckdb
import psycopg
from psycopg import sql

from streamflow.archive import duck
from streamflow.archive.layout import open_location
from streamflow.archive.source import rows_of
from streamflow.db.partitions import Partitioned, Period

HEX_DIGITS = 15  # 60 bits: a sum of 2**60-bit values overflows no engine's exact type


class Checksum(NamedTuple):
    rows: int
    sum: int


def id_hash(value: object) -> int:
    """One id's term: ``value`` as text (a uuid lower-case, a number in decimal)."""
    return int(hashlib.md5(str(value).encode()).hexdigest()[:HEX_DIGITS], 16)  # noqa: S324 - a checksum, not security


def checksum_of(ids: Iterable[object]) -> Checksum:
    rows = total = 0
    for value in ids:
        rows += 1
        total += id_hash(value)
    return Checksum(rows, total)


_SQL_HASH = sql.SQL("('x' || left(md5({id}::text), {digits}))::bit({bits})::bigint")
# HEX_DIGITS written out (a constant statement); the unit tests hold it to ``id_hash``.
_DUCK_CHECKSUM = "count(*), coalesce(sum(('0x' || left(md5(CAST(id AS VARCHAR)), 15))::BIGINT), 0)"


def db_checksum(conn: psycopg.Connection, spec: Partitioned, period: Period | None = None,
                *, relation: str | None = None) -> Checksum:
    """The rows of ``relation`` (a partition's own table, attached or not; default: the
    parent table), those of ``period`` when given."""
    term = _SQL_HASH.format(id=sql.Identifier(spec.ids), digits=sql.Literal(HEX_DIGITS),
                            bits=sql.Literal(HEX_DIGITS * 4))
    query = sql.SQL("SELECT count(*), coalesce(sum({term}), 0) FROM {rows}").format(
        term=term, rows=rows_of(spec, period, relation))
    rows, total = conn.execute(query).fetchone()
    return Checksum(rows, int(total))


def archive_checksum(url: str, spec: Partitioned, period: Period | str) -> Checksum | None:
    """The archived file of ``period`` (or its key): its rows and ids as read back from the
    file; None when there is no file."""
    location = open_location(url)
    key = period if isinstance(period, str) else period.key
    path = location.data_path(spec.name, key)
    if not location.fs.exists(path):
        return None
    with duck.connect(location) as con:
        ids = con.read_parquet(location.url(path)).select(
            duckdb.ColumnExpression(spec.ids).alias("id"))
        ((rows, total),) = ids.aggregate(_DUCK_CHECKSUM).fetchall()
    return Checksum(rows, int(total))
