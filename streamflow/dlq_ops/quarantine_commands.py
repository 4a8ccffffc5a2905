"""`streamflow quarantine ...`: what could not be processed after every retry (list, resolve,
retry). See streamflow/db/quarantine.py and docs/ARCHITECTURE.md, "Quarantine"."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from streamflow import endpoints
from streamflow.db import quarantine
from streamflow.db.engine import connect_admin
from streamflow.dlq_ops import display
from streamflow.settings import load_settings

app = typer.Typer(help="What could not be processed after every retry: dead letters whose "
                       "topic copy Kafka refused, events the contract step always failed on.",
                  no_args_is_help=True)
console = Console()
IDS = typer.Argument(None, metavar="[ID]...", help="Entries (none: every unresolved one).")


@contextmanager
def _connection():
    with connect_admin(endpoints.database_url(load_settings()), "streamflow-quarantine") as conn:
        yield conn


def _cell(text: str) -> str:
    return markup_escape(display.escape(text))


@app.command("list")
def list_(include_resolved: bool = typer.Option(False, "--all", help="Resolved ones too."),
          limit: int = typer.Option(50, "--limit", min=1, help="At most N, newest first."),
          as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """Quarantined entries, newest first."""
    with _connection() as conn:
        found = quarantine.entries(conn, limit=limit, include_resolved=include_resolved)
    if as_json:
        for e in found:
            sys.stdout.write(json.dumps({**e.__dict__, "created_at": e.created_at.isoformat(),
                                         "resolved_at": e.resolved_at and
                                         e.resolved_at.isoformat()}) + "\n")
        return
    table = Table("id", "time (UTC)", "kind", "stage", "source", "ingest_seq", "tries",
                  "reason", title=f"{len(found)} quarantined" + ("" if include_resolved
                                                                 else " (unresolved)"))
    for e in found:
        table.add_row(str(e.id), e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.kind, e.stage,
                      _cell(f"{e.source_topic}/{e.source_partition}@{e.source_offset}"),
                      str(e.ingest_seq or "-"), str(e.attempts), _cell(e.reason[:300]))
    console.print(table)


@app.command()
def resolve(ids: list[int] = IDS) -> None:
    """Mark entries resolved (someone looked): the asset check and `status` pass again."""
    with _connection() as conn:
        done = quarantine.resolve(conn, ids or [])
    console.print(f"resolved {len(done)} quarantined entr{'y' if len(done) == 1 else 'ies'}")


@app.command()
def retry(ids: list[int] = IDS) -> None:
    """Send quarantined events through the contract step again (a new ingest sequence each),
    after a fix; an event that fails again is quarantined again."""
    with _connection() as conn:
        done = quarantine.retry(conn, ids or [])
    console.print(f"queued {len(done)} quarantined event(s) for the contract step again")
