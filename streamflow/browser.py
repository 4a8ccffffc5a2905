"""`streamflow groups` and `streamflow tail`: the Kafka browser's terminal side.

The data comes from ``streamflow.cluster``; this module only renders it. Message bytes may be
anything a producer sent (binary, control characters, ANSI escape sequences, megabytes): a
terminal line shows them through ``dlq_ops.display`` (escaped, cut), ``--json`` as text when
UTF-8 and base64 otherwise, never raw.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamflow import cluster
from streamflow.dlq_ops import display
from streamflow.kafka_clients import require_broker
from streamflow.settings import load_settings

console = Console()
# Characters of a value on a terminal line: a screen's worth of an event (--json has it all).
VALUE_CHARS = 1000
# Characters of a key or a header value: ids, not documents.
KEY_CHARS = 80
# Most messages `tail --last` holds: the newest are kept in memory to merge them by time.
MAX_LAST = 100_000


def _safe(text: str) -> Text:
    """A table cell: control characters escaped, and a Text so rich reads no markup in it."""
    return Text(display.escape(text))


def groups_table(found: list[cluster.GroupInfo]) -> Table:
    """A row per group (state, members, total lag), then one per partition under it."""
    table = Table("group / partition", "state", "members", "committed", "end", "lag",
                  "consumer", title=f"{len(found)} consumer group{'s' * (len(found) != 1)}")
    for group in found:
        table.add_row(_safe(group.group_id), group.state, str(group.member_count), "", "",
                      f"{group.total_lag:,}", "", style="bold")
        for part in group.partitions:
            table.add_row(_safe(f"  {part.topic}/{part.partition}"), "", "",
                          _number(part.committed), _number(part.end), _number(part.lag),
                          _safe(part.owner or "-"))
    return table


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def groups_command(as_json: bool = typer.Option(False, "--json", help="One JSON document.")
                   ) -> None:
    """Consumer groups: state, members, and per partition the committed offset, end and lag."""
    settings = load_settings()
    require_broker(settings.kafka)
    found = cluster.groups(settings.kafka)
    if as_json:
        sys.stdout.write(json.dumps({"groups": [g.as_dict() for g in found]}, indent=2) + "\n")
        return
    console.print(groups_table(found))


def when(timestamp_ms: int | None) -> str:
    if timestamp_ms is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{timestamp_ms % 1000:03d}"


def text_line(msg: cluster.TailedMessage) -> str:
    """``time partition@offset key=… [header=…] value``: printable, one line, cut."""
    headers = " ".join(f"{display.escape(h.name)}={display.one_line(h.value, KEY_CHARS)}"
                       for h in msg.headers)
    return (f"{when(msg.timestamp_ms)} {msg.partition}@{msg.offset} "
            f"key={display.one_line(msg.key, KEY_CHARS)} "
            + (f"[{headers}] " if headers else "")
            + display.one_line(msg.value, VALUE_CHARS))


def json_document(msg: cluster.TailedMessage) -> dict:
    """Lossless: bytes as text when UTF-8, else base64 (``*_encoding`` says which)."""
    key, value = display.json_bytes(msg.key), display.json_bytes(msg.value)
    return {
        "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "timestamp": msg.timestamp_ms,
        "key": key.text, "key_encoding": key.encoding,
        "value": value.text, "value_encoding": value.encoding,
        "headers": [_json_header(h) for h in msg.headers],
    }


def _json_header(header: cluster.Header) -> dict:
    value = display.json_bytes(header.value)
    return {"name": header.name, "value": value.text, "encoding": value.encoding}


def json_line(msg: cluster.TailedMessage) -> str:
    # ensure_ascii: every non-ASCII character escaped, so not even a C1 control reaches
    # the terminal.
    return json.dumps(json_document(msg), ensure_ascii=True)


def tail_command(
    topic: str = typer.Argument(..., help="The topic to read."),
    last: int = typer.Option(10, "--last", min=0, max=MAX_LAST,
                             help="The newest N messages across partitions, by time."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Then print new ones (Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json",
                                 help="A JSON object per line, bytes whole (base64 if binary)."),
) -> None:
    """Print a topic's newest messages, safely; never commits, never joins a group."""
    settings = load_settings()
    require_broker(settings.kafka)
    render = json_line if as_json else text_line
    try:
        for msg in cluster.tail(settings.kafka, topic, last=last, follow=follow):
            sys.stdout.write(render(msg) + "\n")
            if follow:
                sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.flush()  # Ctrl-C ends --follow: the reader is closed, exit 0
    except BrokenPipeError:
        # Read by `head`: stop quietly, and keep Python from failing to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
