"""`streamflow dlq ...`: list, show, stats and replay dead letters from the command line."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import datetime

import typer
from rich.console import Console
from rich.markup import escape as markup_escape
from rich.table import Table

from streamflow import endpoints, topics
from streamflow.db.engine import connect_admin
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.dlq import Stage
from streamflow.dlq_ops import display
from streamflow.dlq_ops import replay as replays
from streamflow.dlq_ops import selection as sel
from streamflow.settings import load_settings

app = typer.Typer(help=f"Inspect, count and replay dead letters ({dead_letter_table.fullname}).",
                  no_args_is_help=True)
console = Console()

STAGE = typer.Option(None, "--stage", help="ingest or contract.")
REASON = typer.Option(None, "--reason", help="A reason code, or text in the reason detail.")
SINCE = typer.Option(None, "--since", help="Only the last DURATION: 90s, 15m, 2h, 7d.")
SOURCE = typer.Option(None, "--source", help="Only dead letters read from this topic.")


def _selection(stage: Stage | None, reason: str | None, since: str | None, source: str | None,
               limit: int | None, ids: list[int] | None = None) -> sel.Selection:
    return sel.Selection(stage=stage, reason=reason,
                         since=sel.parse_duration(since) if since else None,
                         source_topic=source, limit=limit, ids=tuple(ids or ()))


@contextmanager
def _connection():
    with connect_admin(endpoints.database_url(load_settings()), "streamflow-dlq") as conn:
        yield conn


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _json_letter(d: sel.StoredDeadLetter, *, full: bool) -> dict:
    document = {
        "id": d.id, "created_at": d.created_at.isoformat(), "stage": d.stage,
        "reason_code": d.reason_code, "reason": d.reason, "event_id": d.event_id,
        "source": {"topic": d.source_topic, "partition": d.source_partition,
                   "offset": d.source_offset},
        "replay_count": d.replay_count,
        "last_replayed_at": d.last_replayed_at.isoformat() if d.last_replayed_at else None,
    }
    if full:
        document.update(
            headers=d.headers or {}, headers_exact=d.raw_headers is None,
            key=display.safe_payload(d.message_key).__dict__,
            payload=display.safe_payload(d.payload, keep_newlines=True).__dict__,
            reasons=d.reasons, failures=d.failures)
    else:
        document["preview"] = display.preview(d.payload)
    return document


def _cell(text: str) -> str:
    return markup_escape(display.escape(text))


@app.command("list")
def list_(stage: Stage | None = STAGE, reason: str | None = REASON, since: str | None = SINCE,
          source: str | None = SOURCE,
          limit: int = typer.Option(20, "--limit", min=1, help="At most N, newest first."),
          as_json: bool = typer.Option(False, "--json", help="JSON lines for scripts.")) -> None:
    """Dead letters, newest first: time, stage, reason, source and a payload preview."""
    with _connection() as conn:
        letters = sel.select(conn, _selection(stage, reason, since, source, limit))
    if as_json:
        for d in letters:
            sys.stdout.write(json.dumps(_json_letter(d, full=False)) + "\n")
        return
    # One line per letter: fixed columns at their width, the text columns share the rest; a
    # narrow terminal drops the source and replay count (`show` and `--json` have them).
    wide = console.width >= 110
    rows = [{"id": str(d.id),
             "time (UTC)": d.created_at.strftime("%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M"),
             "stage": d.stage, "replays": str(d.replay_count or "-"),
             "reason": _cell(f"{d.reason_code}: {d.reason}"[:200]),
             "source": _cell(f"{d.source_topic}/{d.source_partition}@{d.source_offset}"),
             "payload": _cell(display.preview(d.payload, 200))} for d in letters]
    fixed = {"id": max((len(r["id"]) for r in rows), default=2),
             "time (UTC)": 19 if wide else 11, "stage": 8, **({"replays": 7} if wide else {})}
    shares = {"reason": 4, "source": 2, "payload": 4} if wide else {"reason": 4, "payload": 6}
    free = max(console.width - sum(fixed.values()) - 3 * (len(fixed) + len(shares)) - 1, 20)
    widths = {**fixed, **{n: free * k // sum(shares.values()) for n, k in shares.items()}}
    table = Table(title=f"{len(letters)} dead letters (newest first)")
    for name, width in widths.items():
        table.add_column(name, width=width, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[name] for name in widths))
    console.print(table)


@app.command()
def show(letter_id: int = typer.Argument(..., metavar="ID"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """One dead letter in full: headers, every reason, the original bytes shown safely."""
    with _connection() as conn:
        d = sel.get(conn, letter_id)
    document = _json_letter(d, full=True)
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    out = console.print
    out(f"[bold]dead letter {d.id}[/bold]  {_time(d.created_at)} UTC  stage={d.stage}  "
        f"reason_code={d.reason_code}")
    out(f"source: {_cell(d.source_topic)} partition {d.source_partition} "
        f"offset {d.source_offset}   event_id: {_cell(str(d.event_id or '-'))}")
    out(f"replayed: {d.replay_count} times, last {_time(d.last_replayed_at)}")
    out("[bold]reasons[/bold]")
    for why in document["reasons"]:
        out(f"  - {_cell(why)}")
    out("[bold]headers[/bold]")
    for k, v in (d.headers or {}).items():
        out(f"  {_cell(str(k))}: {_cell(str(v))}")
    key = document["key"]
    out(f"[bold]key[/bold] ({key['encoding']}, {key['size']} bytes): {_cell(key['text'])}")
    payload = document["payload"]
    out(f"[bold]payload[/bold] ({payload['encoding']}, {payload['size']} bytes)")
    out(markup_escape(payload["text"]) if payload["text"] else "(empty)", soft_wrap=True)


@app.command()
def stats(stage: Stage | None = STAGE, reason: str | None = REASON, since: str | None = SINCE,
          source: str | None = SOURCE, as_json: bool = typer.Option(False, "--json")) -> None:
    """Counts by stage and reason: last hour, last day, all time (and how many replayed)."""
    with _connection() as conn:
        rows = sel.stats(conn, _selection(stage, reason, since, source, None))
    if as_json:
        sys.stdout.write(json.dumps([{**r.__dict__, "latest": r.latest.isoformat()}
                                     for r in rows], indent=2) + "\n")
        return
    table = Table("stage", "reason", "last hour", "last day", "all time", "replayed",
                  "latest (UTC)", title="dead letters")
    for r in rows:
        table.add_row(r.stage, r.reason_code, f"{r.last_hour:,}", f"{r.last_day:,}",
                      f"{r.all_time:,}", f"{r.replayed:,}", _time(r.latest))
    table.add_row("total", "", *(f"{sum(getattr(r, c) for r in rows):,}" for c in
                                 ("last_hour", "last_day", "all_time", "replayed")), "")
    console.print(table)


@app.command("replay")
def replay_(stage: Stage | None = STAGE, reason: str | None = REASON, since: str | None = SINCE,
            source: str | None = SOURCE,
            limit: int | None = typer.Option(None, "--limit", min=1,
                                             help="At most N (oldest first)."),
            ids: list[int] = typer.Option(None, "--id", help="This dead letter (repeatable)."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Show, send nothing."),
            rate: float | None = typer.Option(None, "--rate", min=0.001,
                                              help="At most R messages per second."),
            force: bool = typer.Option(False, "--force",
                                       help="Also send dead letters replayed before."),
            topic: str = typer.Option(topics.USER_EVENTS, "--topic",
                                      help="Send to (one STREAMFLOW_REPLAY_TOPICS allows)."),
            ) -> None:
    """Send the original bytes of the selected dead letters back through the pipeline."""
    from streamflow.kafka_clients import producer, require_broker

    settings = load_settings()
    allowed = settings.replay_topic_names
    replays.check_topic(topic, allowed)  # before a broker is asked for anything
    selection = _selection(stage, reason, since, source, limit, ids)
    kafka = None
    if not dry_run:
        require_broker(settings.kafka)
        kafka = producer(settings.kafka)

    def on_chunk(progress: replays.Progress, letters: list[sel.StoredDeadLetter]) -> None:
        if not dry_run:
            console.print(f"  chunk {progress.chunk:,}/{progress.chunks:,}: sent "
                          f"{progress.letters:,}/{progress.total:,}", highlight=False)
            return
        # A table a chunk: the letters are printed as they stream, never held.
        table = Table("id", "stage", "reason", "payload", "replayed",
                      title=(f"dry run: would send {progress.total} to {topic}"
                             if progress.chunk == 1 else None),
                      show_header=progress.chunk == 1)
        for d in letters:
            table.add_row(str(d.id), d.stage, d.reason_code, _cell(display.preview(d.payload)),
                          str(d.replay_count or "-"))
        console.print(table)

    with _connection() as conn:
        result = replays.replay(conn, kafka, selection, topic=topic, allowed=allowed,
                                dry_run=dry_run, rate=rate, force=force, on_chunk=on_chunk)
    for gap in result.gaps:
        console.print(f"dead letter {gap.id} skipped: {replays.NOTHING_TO_REPLAY} "
                      f"({_cell(gap.reason)})", highlight=False)
    if result.skipped:
        console.print(f"{result.skipped:,} skipped: another replay took them meanwhile",
                      highlight=False)
    if dry_run:
        if not result.chunks:
            console.print(f"dry run: would send 0 to {topic}")
        if result.previously_replayed and not force:
            console.print(f"{result.previously_replayed} were replayed before: a real replay "
                          "is refused without --force")
        return
    console.print(f"replayed {result.sent:,} dead letters to {topic} in "
                  f"{result.seconds:.1f} s, {result.chunks:,} chunk{'s' * (result.chunks != 1)}"
                  + (f" ({result.previously_replayed} again, --force)"
                     if result.previously_replayed else ""))
