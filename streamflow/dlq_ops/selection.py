"""Which dead letters a command is about, and the queries that read them.

Filters become a WHERE clause of fixed fragments with bound parameters: user text never
reaches the SQL string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from streamflow.contract import Failure
from streamflow.db.compose import columns, statement
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.dlq import Headers, Stage, stored_headers
from streamflow.errors import DeadLetterNotFound, SettingsError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> timedelta."""
    match = _DURATION_RE.match(text or "")
    if not match:
        raise SettingsError(f"duration {text!r} is not a number followed by s, m, h, d or w "
                            "(e.g. 15m, 2h, 7d)")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


# The filters' fixed fragments, each with its bound parameters.
_BY_STAGE = statement("{d.stage} = %(stage)s", d=dead_letter_table)
_BY_REASON = statement("({d.reason_code} = %(reason)s OR {d.reason} ILIKE %(reason_like)s)",
                       d=dead_letter_table)
_SINCE = statement("{d.created_at} >= now() - %(since)s", d=dead_letter_table)
_CREATED_FROM = statement("{d.created_at} >= %(created_from)s", d=dead_letter_table)
_BY_SOURCE = statement("{d.source_topic} = %(source_topic)s", d=dead_letter_table)
_BY_IDS = statement("{d.id} = ANY(%(ids)s)", d=dead_letter_table)


@dataclass(frozen=True)
class Selection:
    """Filters shared by list, stats and replay; empty means every dead letter."""

    stage: Stage | None = None
    reason: str | None = None     # a reason code, or text found in the detail
    since: timedelta | None = None
    source_topic: str | None = None
    limit: int | None = None
    ids: tuple[int, ...] = ()
    created_from: datetime | None = None  # ``since`` fixed to a moment (``pinned``)

    def pinned(self, now: datetime) -> Selection:
        """The same selection with ``since`` counted back from ``now``: a long replay keeps
        the letters it planned, even those that grow older than ``since`` meanwhile."""
        if self.since is None:
            return self
        start = now - self.since
        return replace(self, since=None, created_from=max(start, self.created_from or start))

    def where(self) -> tuple[sql.Composable, dict]:
        parts: list[sql.Composable] = [sql.SQL("TRUE")]
        params: dict = {}
        if self.stage is not None:
            parts.append(_BY_STAGE)
            params["stage"] = Stage(self.stage).value
        if self.reason:
            parts.append(_BY_REASON)
            params["reason"] = self.reason
            params["reason_like"] = "%" + re.sub(r"([\\%_])", r"\\\1", self.reason) + "%"
        if self.since is not None:
            parts.append(_SINCE)
            params["since"] = self.since
        if self.created_from is not None:
            parts.append(_CREATED_FROM)
            params["created_from"] = self.created_from
        if self.source_topic:
            parts.append(_BY_SOURCE)
            params["source_topic"] = self.source_topic
        if self.ids:
            parts.append(_BY_IDS)
            params["ids"] = list(self.ids)
        return sql.SQL(" AND ").join(parts), params


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    created_at: datetime
    stage: str
    reason_code: str
    reason: str
    payload: bytes | None
    message_key: bytes | None
    headers: dict | None      # as text (bytes that are not UTF-8 replaced)
    raw_headers: list | None  # every byte, where the text cannot hold them (dlq.raw_headers_json)
    event_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    replay_count: int
    last_replayed_at: datetime | None
    failures: list[dict] | None  # contract.Failure.as_json() of each (stage contract)

    @property
    def original_headers(self) -> Headers:
        """The headers byte for byte, as the message arrived."""
        return stored_headers(self.headers, self.raw_headers)

    @property
    def reasons(self) -> list[str]:
        """Each reason as a line: one per contract failure (the stored reason is their text
        joined, never split: a value may hold the separator)."""
        if not self.failures:
            return [self.reason]
        return [str(Failure.from_json(f)) for f in self.failures]


COLUMNS = columns(dead_letter_table, StoredDeadLetter.__dataclass_fields__)


def select(conn: psycopg.Connection, selection: Selection, *,
           newest_first: bool = True) -> list[StoredDeadLetter]:
    where, params = selection.where()
    query = statement("SELECT {cols} FROM {d} WHERE {where} ORDER BY {d.id} {order}",
                      d=dead_letter_table, cols=COLUMNS, where=where,
                      order=sql.SQL("DESC" if newest_first else "ASC"))
    if selection.limit is not None:
        query = sql.SQL("{} LIMIT %(limit)s").format(query)
        params["limit"] = selection.limit
    with conn.cursor(row_factory=class_row(StoredDeadLetter)) as cur:
        return cur.execute(query, params).fetchall()


def get(conn: psycopg.Connection, letter_id: int) -> StoredDeadLetter:
    found = select(conn, Selection(ids=(letter_id,)))
    if not found:
        raise DeadLetterNotFound(f"no dead letter with id {letter_id} "
                                 "(`streamflow dlq list` shows the ids)")
    return found[0]


@dataclass(frozen=True)
class StatsRow:
    stage: str
    reason_code: str
    last_hour: int
    last_day: int
    all_time: int
    replayed: int
    latest: datetime


def stats(conn: psycopg.Connection, selection: Selection = Selection()) -> list[StatsRow]:
    """Counts by stage and reason over the last hour, the last day and all time."""
    where, params = selection.where()
    # The AS names are StatsRow's fields, not columns.
    query = statement(
        "SELECT {d.stage}, {d.reason_code}, "
        "count(*) FILTER (WHERE {d.created_at} >= now() - interval '1 hour') AS last_hour, "
        "count(*) FILTER (WHERE {d.created_at} >= now() - interval '1 day') AS last_day, "
        "count(*) AS all_time, count(*) FILTER (WHERE {d.replay_count} > 0) AS replayed, "
        "max({d.created_at}) AS latest "
        "FROM {d} WHERE {where} GROUP BY {d.stage}, {d.reason_code} "
        "ORDER BY all_time DESC, {d.stage}, {d.reason_code}", d=dead_letter_table, where=where)
    with conn.cursor(row_factory=class_row(StatsRow)) as cur:
        return cur.execute(query, params).fetchall()
