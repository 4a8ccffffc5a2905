"""An archived table's Parquet schema: every column of its streamflow/db/tables.py
definition, under its own name, typed (docs/ARCHITECTURE.md, "The archive")."""

from __future__ import annotations

import pyarrow as pa
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    LargeBinary,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

from streamflow.db.partitions import Partitioned

TIMESTAMP = pa.timestamp("us", tz="UTC")  # PostgreSQL's resolution, always UTC
# Checked in order (subclasses first: BigInteger is an Integer).
_TYPES: tuple[tuple[type, pa.DataType], ...] = (
    (DateTime, TIMESTAMP),
    (Date, pa.date32()),
    (BigInteger, pa.int64()),
    (Integer, pa.int32()),
    (Boolean, pa.bool_()),
    (LargeBinary, pa.binary()),
    # Text forms: a uuid lower-case as PostgreSQL writes it, json verbatim, jsonb rendered.
    (UUID, pa.string()),
    (JSON, pa.string()),
    (JSONB, pa.string()),
    (Text, pa.string()),
)


def arrow_type(column: Column) -> pa.DataType:
    for sql_type, arrow in _TYPES:
        if isinstance(column.type, sql_type):
            return arrow
    raise TypeError(f"{column.table.fullname}.{column.name}: no archive type for "
                    f"{column.type!r} (streamflow/archive/columns.py)")


def schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c), nullable=c.nullable)
                      for c in table.columns])


def binary_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if arrow_type(c) == pa.binary()]


def names(spec: Partitioned) -> list[str]:
    return [c.name for c in spec.table.columns]
