"""SQL over the archive with DuckDB, in process: each archived table a view under its short
name (events, dead_letters, notifications, fct_events), its periods' files read in place.
The Hive folder adds a ``period`` column (the period's key, text)."""

from __future__ import annotations

from typing import NamedTuple

import duckdb

from streamflow.archive import duck
from streamflow.archive.layout import ARCHIVED_TABLES, DATA_FILE, PERIOD_PREFIX, open_location
from streamflow.errors import ArchiveEmpty, ArchiveQueryFailed

_PERIOD_AS_TEXT = "* REPLACE (CAST(period AS VARCHAR) AS period)"


class QueryResult(NamedTuple):
    columns: list[str]
    rows: list[tuple]


def query(url: str, statement: str) -> QueryResult:
    location = open_location(url)
    present = {short: name for short, name in ARCHIVED_TABLES.items()
               if location.period_keys(name)}
    if not present:
        raise ArchiveEmpty(f"the archive at {url} holds no table yet")
    with duck.connect(location) as con:
        for short, name in present.items():
            files = location.url(f"{location.table_folder(name)}/{PERIOD_PREFIX}*/{DATA_FILE}")
            # union_by_name: a column added to the table later is NULL in older periods. The
            # Hive folder's period is a date when every key is one: text, as the keys are.
            con.read_parquet(files, hive_partitioning=True, union_by_name=True).select(
                _PERIOD_AS_TEXT).create_view(short)
        try:
            cursor = con.execute(statement)
            names = [d[0] for d in cursor.description or ()]
            rows = cursor.fetchall() if cursor.description else []
        except duckdb.CatalogException as exc:
            missing = sorted(set(ARCHIVED_TABLES) - set(present))
            hint = (f" (the archive holds {', '.join(sorted(present))}; "
                    f"nothing yet of {', '.join(missing)})" if missing else "")
            raise ArchiveQueryFailed(f"{exc}{hint}") from exc
        except duckdb.Error as exc:
            raise ArchiveQueryFailed(str(exc)) from exc
    return QueryResult(names, rows)
