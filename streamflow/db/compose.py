"""SQL statements whose table and column names come from streamflow.db.tables.

A statement is SQL text with placeholders, composed once at import with psycopg.sql:

    statement("SELECT {e.ingest_seq} FROM {e} WHERE {e.event_id} = %s", e=tables.events)

``{e}`` is the table passed as ``e`` (schema-qualified), ``{e.column}`` one of its columns,
quoted; a column the table does not declare raises at import, so a renamed column breaks
every statement that names it before any of them runs. Other ``{name}`` placeholders take
the psycopg composable (or plain value, as a literal) passed under that name. Parameters stay
``%s`` / ``%(name)s``; literal braces are doubled.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from psycopg import sql
from sqlalchemy import Table

_FORMAT = string.Formatter()


def table_name(table: Table) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(
        table.name)


def column(table: Table, name: str) -> sql.Identifier:
    if name not in table.c:
        raise KeyError(f"{table.fullname} has no column {name!r} (streamflow/db/tables.py)")
    return sql.Identifier(name)


def columns(table: Table, names: Iterable[str] | None = None, *,
            prefix: str | None = None) -> sql.Composed:
    """A comma-separated column list (every column of the table by default), each one
    qualified by ``prefix`` (a table alias) when given."""
    names = [c.name for c in table.columns] if names is None else list(names)
    for name in names:
        column(table, name)
    return sql.SQL(", ").join(
        sql.Identifier(*((prefix,) if prefix else ()), name) for name in names)


def statement(template: str, /, **names: Table | sql.Composable | object) -> sql.Composed:
    """The template composed with table, column and other names (see the module doc)."""
    parts: list[sql.Composable] = []
    for literal, field, spec, conversion in _FORMAT.parse(template):
        if literal:
            parts.append(sql.SQL(literal))
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"{{{field}}}: no format spec or conversion in a statement")
        parts.append(_resolve(field, names))
    return sql.Composed(parts)


def _resolve(field: str, names: dict[str, object]) -> sql.Composable:
    alias, _, name = field.partition(".")
    if alias not in names:
        raise KeyError(f"{{{field}}}: nothing passed as {alias!r}")
    value = names[alias]
    if isinstance(value, Table):
        return column(value, name) if name else table_name(value)
    if name:
        raise KeyError(f"{{{field}}}: {alias!r} is not a table")
    return value if isinstance(value, sql.Composable) else sql.Literal(value)
