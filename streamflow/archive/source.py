"""Which rows of PostgreSQL an archived period is: a partition's own table (attached or
detached), or the parent table's rows of the period."""

from __future__ import annotations

from psycopg import sql

from streamflow.db.compose import table_name
from streamflow.db.partitions import Partitioned, Period


def relation_name(spec: Partitioned, relation: str | None) -> sql.Identifier:
    """``relation`` (``schema.name``, or a name in the table's schema), else the parent."""
    if relation is None:
        return table_name(spec.table)
    schema, _, name = relation.rpartition(".")
    return sql.Identifier(schema or spec.table.schema, name)


def rows_of(spec: Partitioned, period: Period | None, relation: str | None) -> sql.Composed:
    """``<relation> [WHERE <key> in [start, end)]``, to follow FROM."""
    rows = sql.Composed([relation_name(spec, relation)])
    if period is None:
        return rows
    return rows + sql.SQL(" WHERE {key} >= {start} AND {key} < {end}").format(
        key=sql.Identifier(spec.key), start=sql.Literal(period.start),
        end=sql.Literal(period.end))
