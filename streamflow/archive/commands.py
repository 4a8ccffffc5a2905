"""`streamflow archive ...`: what the archive holds, SQL over it, and rows loaded back.

pyarrow and DuckDB are imported by the command that runs (0.3 s every other `streamflow`
command need not pay)."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from streamflow import endpoints
from streamflow.db import partitions
from streamflow.errors import ArchiveTableUnknown
from streamflow.settings import load_settings

app = typer.Typer(help="The archive of old periods (Parquet under STREAMFLOW_ARCHIVE_URL).",
                  no_args_is_help=True)
console = Console()
AS_JSON = typer.Option(False, "--json", help="One JSON document.")


def _echo(message: str) -> None:
    console.print(message, highlight=False, markup=False)


@app.command("list")
def list_(as_json: bool = AS_JSON) -> None:
    """Archived periods per table: rows, bytes, bytes per row; totals per table."""
    from streamflow.archive.listing import list_archive

    url = load_settings().archive_location
    found = list_archive(url)
    by_table = defaultdict(list)
    for archived in found:
        by_table[archived.table].append(archived)
    if as_json:
        document = {"archive": url, "tables": [
            {"table": table, "rows": sum(a.rows for a in periods),
             "bytes": sum(a.bytes for a in periods),
             "periods": [{"period": a.period, "rows": a.rows, "bytes": a.bytes}
                         for a in periods]}
            for table, periods in by_table.items()]}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    if not found:
        _echo(f"nothing archived yet at {url}")
        return
    out = Table("table", "period", "rows", "bytes", "B/row", title=f"archive: {url}")
    for table, periods in by_table.items():
        for a in periods:
            out.add_row(table, a.period, f"{a.rows:,}", f"{a.bytes:,}", f"{a.bytes_per_row:.1f}")
        rows, size = sum(a.rows for a in periods), sum(a.bytes for a in periods)
        out.add_row(table, f"total ({len(periods)})", f"{rows:,}", f"{size:,}",
                    f"{size / rows if rows else 0:.1f}", style="bold", end_section=True)
    console.print(out)


@app.command("query")
def query(statement: str = typer.Argument(..., metavar="SQL",
                                          help="DuckDB SQL over the views events, "
                                               "dead_letters, notifications, fct_events."),
          as_json: bool = AS_JSON) -> None:
    """Run SQL over the archive (DuckDB, in process; each table a view by its short name)."""
    from streamflow.archive.querying import query as run_query

    result = run_query(load_settings().archive_location, statement)
    if as_json:
        document = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
        return
    out = Table(*result.columns)
    for row in result.rows:
        out.add_row(*("NULL" if v is None else str(v) for v in row))
    console.print(out)


def _moment(text: str) -> datetime:
    """A date (its midnight) or an ISO datetime; UTC unless it says otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: expected a date (2026-12-01) or an ISO "
                                 "datetime (2026-12-01T14:00)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("restore")
def restore_(table: str = typer.Option(..., "--table", help=" or ".join(
                 spec.name for spec in partitions.TABLES) + " (or its short name)."),
             start: str = typer.Option(..., "--from", help="A date or ISO datetime (UTC)."),
             end: str = typer.Option(..., "--to", help="Up to, not including."),
             ) -> None:
    """Load archived rows back into PostgreSQL (those of [--from, --to)), e.g. to reprocess
    old data. Rows still in the table are skipped: running it again inserts nothing."""
    from streamflow.archive.restoring import PeriodRestored, restore

    try:
        spec = partitions.by_name(table)
    except KeyError as exc:
        raise ArchiveTableUnknown(exc.args[0]) from exc
    settings = load_settings()
    begin, until = _moment(start), _moment(end)
    if until <= begin:
        raise typer.BadParameter("--to must be after --from")

    def progress(done: PeriodRestored) -> None:
        _echo(f"{done.table} {done.period}: {done.read:,} read, {done.inserted:,} inserted")

    restored = restore(endpoints.database_url(settings), spec, begin, until,
                       settings.archive_location, settings.partition_period, progress=progress)
    _echo(f"restored {spec.name}: {restored.read:,} rows read from the archive, "
          f"{restored.inserted:,} inserted")
