"""Writing dead letters to raw.dead_letters: one statement for every stage."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy.dialects import postgresql

from streamflow.db import quarantine
from streamflow.db.compose import columns, statement
from streamflow.db.tables import DEAD_LETTER_SOURCE, dead_letters
from streamflow.dlq import (
    DeadLetter,
    Unpublished,
    raw_headers_json,
    storable_headers,
    storable_text,
)

# In the order of _params.
_WRITTEN = ("stage", "reason_code", "reason", "payload", "message_key", "headers", "raw_headers",
            "event_id", "source_topic", "source_topic_id", "source_partition", "source_offset",
            "failures")
# A typed placeholder per written column: the values pass through a SELECT, which would
# otherwise take them for text.
_TYPED = sql.SQL(", ").join(
    sql.SQL("%s::{}").format(sql.SQL(dead_letters.c[name].type.compile(dialect=postgresql.dialect())))
    for name in _WRITTEN)
_INSERT_DEAD_LETTER = statement(
    "INSERT INTO {d} ({written}) SELECT * FROM (VALUES ({values})) v ({written}) "
    # Idempotent on the source message: a replayed batch stores each reject once per stage,
    # in whichever time partition it was stored before (streamflow.db.partitions: the unique
    # key is per partition). The sink writes under the ingest lock; the contract step's runs
    # never share a raw row (streamflow.microbatch.claims).
    "WHERE NOT EXISTS (SELECT 1 FROM {d} x WHERE ({source_x}) = ({source_v})) "
    "ON CONFLICT DO NOTHING",
    d=dead_letters, written=columns(dead_letters, _WRITTEN), values=_TYPED,
    source_x=columns(dead_letters, DEAD_LETTER_SOURCE, prefix="x"),
    source_v=columns(dead_letters, DEAD_LETTER_SOURCE, prefix="v"))


def _params(d: DeadLetter) -> tuple:
    return (d.stage.value, d.reason_code.value, storable_text(d.reason), d.payload, d.key,
            storable_headers(d.headers), raw_headers_json(d.headers), storable_text(d.event_id),
            d.source_topic,
            d.source_topic_id, d.source_partition, d.source_offset, d.failures_json())


def insert_dead_letters(conn: psycopg.Connection, letters: list[DeadLetter],
                        unpublished: list[Unpublished] = ()) -> None:
    """Insert within the caller's transaction (so they commit with the rest of the batch),
    and quarantine those whose topic copy Kafka refused for good (``dlq.publish``)."""
    if letters:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_DEAD_LETTER, [_params(d) for d in letters])
    quarantine.insert(conn, [quarantine.of_unpublished(u) for u in unpublished])
