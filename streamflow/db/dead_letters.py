"""Writing dead letters to raw.dead_letters: one statement for every stage."""

from __future__ import annotations

import psycopg
from psycopg import sql

from streamflow.db.tables import RAW_SCHEMA
from streamflow.dlq import DeadLetter, storable_headers, storable_text

_INSERT_DEAD_LETTER = sql.SQL(
    "INSERT INTO {schema}.dead_letters (stage, reason_code, reason, payload, message_key, "
    "headers, event_id, source_topic, source_topic_id, source_partition, source_offset) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    # Idempotent on the source message: a replayed batch stores each reject once per stage.
    "ON CONFLICT ON CONSTRAINT dead_letters_source_key DO NOTHING").format(
        schema=sql.Identifier(RAW_SCHEMA))


def _params(d: DeadLetter) -> tuple:
    return (d.stage.value, d.reason_code.value, storable_text(d.reason), d.payload, d.key,
            storable_headers(d.headers), storable_text(d.event_id), d.source_topic,
            d.source_topic_id, d.source_partition, d.source_offset)


def insert_dead_letters(conn: psycopg.Connection, letters: list[DeadLetter]) -> None:
    """Insert within the caller's transaction (so they commit with the rest of the batch)."""
    if letters:
        with conn.cursor() as cur:
            cur.executemany(_INSERT_DEAD_LETTER, [_params(d) for d in letters])
