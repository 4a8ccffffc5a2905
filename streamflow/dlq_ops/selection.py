"""Which dead letters a command is about, and the queries that read them.

Filters become a WHERE clause of fixed fragments with bound parameters: user text never
reaches the SQL string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from streamflow.db.tables import RAW_SCHEMA
from streamflow.dlq import Stage
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


@dataclass(frozen=True)
class Selection:
    """Filters shared by list, stats and replay; empty means every dead letter."""

    stage: Stage | None = None
    reason: str | None = None     # a reason code, or text found in the detail
    since: timedelta | None = None
    source_topic: str | None = None
    limit: int | None = None
    ids: tuple[int, ...] = ()

    def where(self) -> tuple[sql.Composable, dict]:
        parts: list[sql.Composable] = [sql.SQL("TRUE")]
        params: dict = {}
        if self.stage is not None:
            parts.append(sql.SQL("stage = %(stage)s"))
            params["stage"] = Stage(self.stage).value
        if self.reason:
            parts.append(sql.SQL("(reason_code = %(reason)s OR reason ILIKE %(reason_like)s)"))
            params["reason"] = self.reason
            params["reason_like"] = "%" + re.sub(r"([\\%_])", r"\\\1", self.reason) + "%"
        if self.since is not None:
            parts.append(sql.SQL("created_at >= now() - %(since)s"))
            params["since"] = self.since
        if self.source_topic:
            parts.append(sql.SQL("source_topic = %(source_topic)s"))
            params["source_topic"] = self.source_topic
        if self.ids:
            parts.append(sql.SQL("id = ANY(%(ids)s)"))
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
    headers: dict | None
    event_id: str | None
    source_topic: str
    source_partition: int
    source_offset: int
    replay_count: int
    last_replayed_at: datetime | None


_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, StoredDeadLetter.__dataclass_fields__))
_TABLE = sql.Identifier(RAW_SCHEMA, "dead_letters")


def select(conn: psycopg.Connection, selection: Selection, *, newest_first: bool = True,
           for_update: bool = False) -> list[StoredDeadLetter]:
    where, params = selection.where()
    query = sql.SQL("SELECT {cols} FROM {table} WHERE {where} ORDER BY id {order}").format(
        cols=_COLUMNS, table=_TABLE, where=where,
        order=sql.SQL("DESC" if newest_first else "ASC"))
    if selection.limit is not None:
        query = sql.SQL("{} LIMIT %(limit)s").format(query)
        params["limit"] = selection.limit
    if for_update:
        query = sql.SQL("{} FOR UPDATE").format(query)
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
    query = sql.SQL(
        "SELECT stage, reason_code, "
        "count(*) FILTER (WHERE created_at >= now() - interval '1 hour') AS last_hour, "
        "count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS last_day, "
        "count(*) AS all_time, count(*) FILTER (WHERE replay_count > 0) AS replayed, "
        "max(created_at) AS latest "
        "FROM {table} WHERE {where} GROUP BY stage, reason_code "
        "ORDER BY all_time DESC, stage, reason_code").format(table=_TABLE, where=where)
    with conn.cursor(row_factory=class_row(StatsRow)) as cur:
        return cur.execute(query, params).fetchall()
