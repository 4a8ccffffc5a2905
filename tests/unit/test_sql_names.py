"""Static check: SQL takes its table and column names from streamflow/db/tables.py.

Statements are composed with streamflow.db.compose (psycopg.sql), so a renamed table or column
is changed in one place. Here the product's source is read for a schema-qualified table name
written out in a string (docstrings and comments may name tables; migrations are history and
keep theirs), and the composed statements are rendered.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from streamflow.db import tables
from streamflow.db.compose import column, columns, statement
from tests.conftest import ROOT

CHECKED_DIRS = ("streamflow", "assets", "sensors", "resources", "streamflow_defs")
HISTORY = ROOT / "streamflow" / "db" / "migrations"
# "raw.events", "streamflow.watermarks", ...: every table tables.py declares.
TABLE_NAME_RE = re.compile(r"\b(?:{})\b".format(
    "|".join(re.escape(name) for name in sorted(tables.metadata.tables))))


def product_files() -> list[Path]:
    return sorted(p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py")
                  if not p.is_relative_to(HISTORY))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                found.add(id(body[0].value))
    return found


def written_out_names(source: str, path: str = "<snippet>") -> list[str]:
    """``path:line: name`` of each string (not a docstring) that names a table itself."""
    tree = ast.parse(source, filename=path)
    docstrings = _docstrings(tree)
    return [f"{path}:{node.lineno}: {match[0]}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings
            for match in TABLE_NAME_RE.finditer(node.value)]


# -- the checker can fail --------------------------------------------------------------------

def test_the_checker_flags_a_table_name_in_a_string_but_not_in_a_docstring():
    source = ('"""Reads raw.events."""\n'
              'def f(conn):\n'
              '    """Counts streamflow.watermarks."""\n'
              '    # streamflow.notifications, in a comment\n'
              '    conn.execute("SELECT count(*) "\n'
              '                 "FROM raw.dead_letters")\n'
              '    return f"rows of streamflow.event_windows: {conn}"\n')
    assert written_out_names(source) == ["<snippet>:5: raw.dead_letters",
                                         "<snippet>:7: streamflow.event_windows"]


def test_the_pattern_knows_every_table_and_nothing_longer():
    assert {m[0] for m in TABLE_NAME_RE.finditer(" ".join(tables.metadata.tables))} == set(
        tables.metadata.tables)
    assert not TABLE_NAME_RE.search("raw.events_archive streamflow.notifications2")


# -- the product -----------------------------------------------------------------------------

def test_no_table_name_is_written_out_in_the_product():
    files = product_files()
    assert len(files) > 30  # it is looking at the real source, not at nothing
    found = [name for path in files
             for name in written_out_names(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, ("table names written out instead of taken from streamflow/db/tables.py "
                       "(streamflow.db.compose.statement):\n" + "\n".join(found))


# -- composition -----------------------------------------------------------------------------

def test_an_unknown_column_raises_when_the_statement_is_composed():
    with pytest.raises(KeyError, match="raw.events has no column 'ingest_sequence'"):
        statement("SELECT {e.ingest_sequence} FROM {e}", e=tables.events)
    with pytest.raises(KeyError, match="no column"):
        column(tables.watermarks, "seq")
    with pytest.raises(KeyError, match="no column"):
        columns(tables.dead_letters, ["id", "letter_id"])


def test_a_statement_renders_names_quoted_and_parameters_kept():
    composed = statement("SELECT w.{w.last_seq}, '{{}}' FROM {w} w WHERE {w.name} = %(name)s "
                         "AND {w.last_seq} > {floor}", w=tables.watermarks, floor=0)
    assert composed.as_string(None) == (
        'SELECT w."last_seq", \'{}\' FROM "streamflow"."watermarks" w WHERE "name" = %(name)s '
        'AND "last_seq" > 0')


def _composing_modules() -> list[str]:
    """The product modules that compose statements (import streamflow.db.compose)."""
    found = []
    for path in product_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.ImportFrom) and (
                node.module == "streamflow.db.compose" or node.module == "streamflow.db"
                and any(alias.name == "compose" for alias in node.names))
               for node in ast.walk(tree)):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _composables(value: object) -> Iterator[sql.Composable]:
    """``value`` if it is composed SQL, and the composed SQL a dict, tuple or list holds."""
    if isinstance(value, sql.Composable):
        yield value
    elif type(value) is dict:  # plain containers only: Dagster's records refuse iteration
        for item in value.values():
            yield from _composables(item)
    elif type(value) in (tuple, list):
        for item in value:
            yield from _composables(item)


def test_the_composed_statements_of_the_product_render():
    modules = _composing_modules()
    assert {"streamflow.microbatch.reprocess", "streamflow.dlq_ops.selection",
            "streamflow.dlq_ops.chunks", "assets.checks", "sensors.landing"} <= set(modules)
    rendered = [(f"{name}.{attr}", c.as_string(None))  # an unknown column raises at import
                for name in modules
                for attr, value in vars(importlib.import_module(name)).items()
                for c in _composables(value)]
    assert len(rendered) > 20
    assert all(text.strip() for _, text in rendered)
    # The qualified names come out quoted, from tables.py: none is left written out.
    assert not [f"{where}: {text}" for where, text in rendered if TABLE_NAME_RE.search(text)]
