"""The quarantine: what could not be processed after every retry, recorded so that nothing
stops and nothing is skipped without a trace (docs/ARCHITECTURE.md, "Quarantine").

Two kinds reach it:

- ``dead_letter_copy``: Kafka refused a dead letter's topic copy for good (too large for the
  dead-letter topic, say). The dead letter itself is in raw.dead_letters, whole; only its
  copy on the topic is missing.
- ``event``: a landed event the micro-batch step failed on in every attempt (its range was
  split down to this one event). It is neither a notification nor a dead letter until
  ``retry`` gives it a new ingest sequence, so that the step checks it again.

Each is one row of raw.quarantine, unresolved until someone resolves or retries it; the
asset check ``quarantine_empty`` fails and ``streamflow status`` shows a line meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from streamflow.db.compose import columns, statement
from streamflow.db.tables import INGEST_SEQ_LOCK, events, events_ingest_seq, quarantine
from streamflow.dlq import Stage, Unpublished, storable_text
from streamflow.topics import UNKNOWN_TOPIC_ID


class Kind(StrEnum):
    DEAD_LETTER_COPY = "dead_letter_copy"  # Kafka refused the topic copy; the table has it
    EVENT = "event"                        # the micro-batch step failed on it every time


@dataclass(frozen=True, kw_only=True)
class Entry:
    kind: Kind
    stage: Stage
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_topic_id: str = UNKNOWN_TOPIC_ID
    event_id: str | None = None
    ingest_seq: int | None = None
    attempts: int = 1


def of_unpublished(unpublished: Unpublished) -> Entry:
    letter = unpublished.letter
    return Entry(kind=Kind.DEAD_LETTER_COPY, stage=letter.stage,
                 reason=f"dead-letter topic refused the copy: {unpublished.error}",
                 source_topic=letter.source_topic, source_partition=letter.source_partition,
                 source_offset=letter.source_offset, source_topic_id=letter.source_topic_id,
                 event_id=letter.event_id)


_WRITTEN = ("kind", "stage", "reason", "source_topic", "source_topic_id", "source_partition",
            "source_offset", "event_id", "ingest_seq", "attempts")
# Quarantined again (a retried event failing again): the newest reason, unresolved again.
_INSERT = statement(
    "INSERT INTO {q} AS q ({written}) VALUES ({values}) "
    "ON CONFLICT ON CONSTRAINT quarantine_source_key DO UPDATE SET "
    "{q.reason} = EXCLUDED.{q.reason}, {q.ingest_seq} = EXCLUDED.{q.ingest_seq}, "
    "{q.attempts} = q.{q.attempts} + EXCLUDED.{q.attempts}, {q.resolved_at} = NULL",
    q=quarantine, written=columns(quarantine, _WRITTEN),
    values=sql.SQL(", ").join([sql.Placeholder()] * len(_WRITTEN)))


def insert(conn: psycopg.Connection, entries: list[Entry]) -> None:
    """Record ``entries`` in the caller's transaction (with the work they were taken out of)."""
    if entries:
        with conn.cursor() as cur:
            cur.executemany(_INSERT, [
                (e.kind.value, e.stage.value, storable_text(e.reason), e.source_topic,
                 e.source_topic_id, e.source_partition, e.source_offset,
                 storable_text(e.event_id), e.ingest_seq, e.attempts) for e in entries])


@dataclass(frozen=True)
class Stored:
    id: int
    kind: str
    stage: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None
    ingest_seq: int | None
    attempts: int
    created_at: datetime
    resolved_at: datetime | None


_UNRESOLVED = statement("SELECT count(*), min({q.created_at}) FROM {q} "
                        "WHERE {q.resolved_at} IS NULL", q=quarantine)
_LIST = statement(
    "SELECT {cols} FROM {q} WHERE (%(all)s OR {q.resolved_at} IS NULL) "
    "ORDER BY {q.id} DESC LIMIT %(limit)s",
    q=quarantine, cols=columns(quarantine, Stored.__dataclass_fields__))
_RESOLVE = statement(
    "UPDATE {q} SET {q.resolved_at} = now() WHERE {q.resolved_at} IS NULL "
    "AND (%(every)s OR {q.id} = ANY(%(ids)s)) RETURNING {q.id}", q=quarantine)
# Retry: the events get new ingest sequences past every landed row, so the contract step
# checks them again (like a replayed contract reject, streamflow.db.landing).
_RETRY_EVENTS = statement(
    "UPDATE {e} SET {e.ingest_seq} = nextval({seq}::regclass), {e.ingested_at} = now() "
    "WHERE {e.ingest_seq} = ANY(%s) RETURNING {e.ingest_seq}",
    e=events, seq=f"{events_ingest_seq.schema}.{events_ingest_seq.name}")
_RETRY_SELECT = statement(
    "SELECT {q.id}, {q.ingest_seq} FROM {q} WHERE {q.resolved_at} IS NULL "
    "AND {q.kind} = %(kind)s AND (%(every)s OR {q.id} = ANY(%(ids)s)) FOR UPDATE",
    q=quarantine)


def unresolved(conn: psycopg.Connection) -> tuple[int, datetime | None]:
    """How many entries are unresolved, and since when."""
    count, oldest = conn.execute(_UNRESOLVED).fetchone()
    return count, oldest


def entries(conn: psycopg.Connection, *, limit: int = 50,
            include_resolved: bool = False) -> list[Stored]:
    with conn.cursor(row_factory=class_row(Stored)) as cur:
        return cur.execute(_LIST, {"all": include_resolved, "limit": limit}).fetchall()


def resolve(conn: psycopg.Connection, ids: list[int]) -> list[int]:
    """Mark entries resolved (all unresolved ones when ``ids`` is empty); the ids marked."""
    with conn.transaction():
        return [i for (i,) in conn.execute(_RESOLVE, {"every": not ids, "ids": ids})]


def retry(conn: psycopg.Connection, ids: list[int]) -> list[int]:
    """Give quarantined events (every unresolved one when ``ids`` is empty) a new ingest
    sequence so the micro-batch checks them again, and mark them resolved; the ids retried.
    An event that fails again is quarantined again."""
    with conn.transaction():
        chosen = conn.execute(_RETRY_SELECT, {"kind": Kind.EVENT.value, "every": not ids,
                                              "ids": ids}).fetchall()
        if not chosen:
            return []
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_SEQ_LOCK,))
        conn.execute(_RETRY_EVENTS, ([seq for _, seq in chosen if seq is not None],))
        picked = [i for i, _ in chosen]
        conn.execute(_RESOLVE, {"every": False, "ids": picked})
        return picked
