"""The chaos accounting: what PostgreSQL holds for one incarnation of a topic, offset by offset.

Every message of an incarnation (a topic id) has one (partition, offset). It must end as
exactly one row in raw.events, one ingest dead letter, or inside the range of exactly one
``offset_gap`` dead letter (a hole: offsets gone from Kafka before the sink read them, which
records the hole once, not once per message). ``covered`` counts the distinct offsets
recorded so, ``entries`` everything recorded (a hole counts each offset in its range):
entries beyond covered are duplicates, messages in Kafka beyond covered are lost.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from streamflow.db.engine import libpq_url
from streamflow.dlq import Headers, Reason, Stage, stored_headers
from streamflow.sink.gaps import OffsetGap, described_gap

# %(id)s NULL: every incarnation of the topic (before a re-creation there is only one).
_HOLES = """
    SELECT source_partition, source_offset, reason FROM raw.dead_letters
    WHERE source_topic = %(t)s AND stage = %(stage)s AND reason_code = %(gap)s
      AND (%(id)s::uuid IS NULL OR source_topic_id = %(id)s::uuid)
"""
_TALLY = """
    WITH recorded (p, o) AS (
        SELECT kafka_partition, kafka_offset FROM raw.events
        WHERE kafka_topic = %(t)s AND (%(id)s::uuid IS NULL OR kafka_topic_id = %(id)s::uuid)
      UNION ALL
        SELECT source_partition, source_offset FROM raw.dead_letters
        WHERE source_topic = %(t)s AND stage = %(stage)s AND reason_code <> %(gap)s
          AND (%(id)s::uuid IS NULL OR source_topic_id = %(id)s::uuid)
      UNION ALL
        SELECT h.p, o FROM unnest(%(hp)s::int[], %(hf)s::bigint[], %(he)s::bigint[])
            AS h (p, lo, hi), generate_series(h.lo, h.hi - 1) AS o)
    SELECT count(*), count(DISTINCT (p, o)) FROM recorded
"""
_ROWS = """
    SELECT count(*) FROM raw.events
    WHERE kafka_topic = %(t)s AND (%(id)s::uuid IS NULL OR kafka_topic_id = %(id)s::uuid)
"""
_LETTERS = """
    SELECT count(*) FROM raw.dead_letters
    WHERE source_topic = %(t)s AND stage = %(stage)s AND reason_code <> %(gap)s
      AND (%(id)s::uuid IS NULL OR source_topic_id = %(id)s::uuid)
"""
_AT_OFFSET = """
    SELECT (SELECT count(*) FROM raw.events
            WHERE kafka_topic = %(t)s AND kafka_partition = %(p)s AND kafka_offset = %(o)s),
           (SELECT count(*) FROM raw.dead_letters
            WHERE source_topic = %(t)s AND stage = %(stage)s AND source_partition = %(p)s
              AND source_offset = %(o)s),
           (SELECT array_agg(DISTINCT reason_code) FROM raw.dead_letters
            WHERE source_topic = %(t)s AND stage = %(stage)s AND source_partition = %(p)s
              AND source_offset = %(o)s),
           (SELECT max(length(payload)) FROM raw.dead_letters
            WHERE source_topic = %(t)s AND stage = %(stage)s AND source_partition = %(p)s
              AND source_offset = %(o)s),
           (SELECT array_agg(ARRAY[headers, raw_headers]) FROM raw.dead_letters
            WHERE source_topic = %(t)s AND stage = %(stage)s AND source_partition = %(p)s
              AND source_offset = %(o)s)
"""


@dataclass(frozen=True)
class Ledger:
    """One topic incarnation's messages as PostgreSQL records them."""

    rows: int          # in raw.events
    dead_letters: int  # ingest dead letters of one message each (every reason but offset_gap)
    holes: tuple[OffsetGap, ...]  # the ranges offset_gap dead letters record
    covered: int       # distinct (partition, offset) in a row, a dead letter or a hole
    entries: int       # rows + dead letters + every offset of every hole

    @property
    def hole_offsets(self) -> int:
        return sum(hole.count for hole in self.holes)

    @property
    def duplicates(self) -> int:
        return self.entries - self.covered


@dataclass(frozen=True)
class MessageOutcome:
    """What became of one message chaos wrote itself (the oversized one)."""

    partition: int
    offset: int
    size: int
    rows: int
    dead_letters: int
    reason_codes: list[str]
    stored_bytes: int | None  # the payload's length in raw.dead_letters
    # Whether the dead letter holds the headers ``message_outcome`` was given, byte for byte
    # (None: none were given).
    headers_kept: bool | None = None


def _connect(database_url: str) -> psycopg.Connection:
    return psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=3)


def _hole(topic: str, partition: int, first: int, reason: str) -> OffsetGap:
    """The range an offset_gap dead letter records. A reason that does not describe a hole
    starting at the letter's own offset counts for that offset only: the rest of the range
    then shows up as lost, never as silently covered."""
    hole = described_gap(reason)
    if hole is None or (hole.topic, hole.partition, hole.first) != (topic, partition, first):
        return OffsetGap(topic, partition, first, first + 1)
    return hole


def account(database_url: str, topic: str, topic_id: str | None = None) -> Ledger:
    """The ledger of ``topic``'s incarnation ``topic_id`` (None: every incarnation).
    Raises ``psycopg.OperationalError`` while PostgreSQL is down."""
    params = {"t": topic, "id": topic_id, "stage": Stage.INGEST.value,
              "gap": Reason.OFFSET_GAP.value}
    with _connect(database_url) as conn:
        holes = tuple(sorted((_hole(topic, p, o, reason)
                              for p, o, reason in conn.execute(_HOLES, params).fetchall()),
                             key=lambda h: (h.partition, h.first)))
        params |= {"hp": [h.partition for h in holes], "hf": [h.first for h in holes],
                   "he": [h.end for h in holes]}
        entries, covered = conn.execute(_TALLY, params).fetchone()
        rows = conn.execute(_ROWS, params).fetchone()[0]
        letters = conn.execute(_LETTERS, params).fetchone()[0]
    return Ledger(rows, letters, holes, covered, entries)


def covered_now(database_url: str, topic: str) -> int:
    """Offsets accounted for so far (-1 while PostgreSQL is down): progress between faults."""
    try:
        return account(database_url, topic).covered
    except psycopg.OperationalError:
        return -1


def message_outcome(database_url: str, topic: str, partition: int, offset: int,
                    size: int, headers: Headers | None = None) -> MessageOutcome:
    """Rows and ingest dead letters at one (partition, offset) of ``topic``, and whether they
    kept ``headers`` (when given) byte for byte."""
    params = {"t": topic, "p": partition, "o": offset, "stage": Stage.INGEST.value}
    with _connect(database_url) as conn:
        rows, letters, codes, stored, kept = conn.execute(_AT_OFFSET, params).fetchone()
    exact = None if headers is None else bool(kept) and all(
        stored_headers(text, raw) == tuple(headers) for text, raw in kept)
    return MessageOutcome(partition, offset, size, rows, letters, codes or [], stored, exact)
