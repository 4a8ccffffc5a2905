"""A replay's selection, planned once and worked through in chunks: which letters, claimed
so that two replays never send the same one, read with their bytes, marked once Kafka has
acknowledged them (the steps are in streamflow.dlq_ops.replay).

Every statement here is its own short transaction on the caller's autocommit connection: no
row stays locked and no transaction stays open while a chunk is sent. A claim is a session
advisory lock (as the micro-batch's claims, streamflow.microbatch.claims): it outlives the
statement that took it and goes with the session if the process dies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from streamflow.db.compose import statement
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.dlq import Reason
from streamflow.dlq_ops.selection import COLUMNS, Selection, StoredDeadLetter

# A claim's advisory lock: (hashtext of the space's name, the id's low 31 bits). Two int4
# keys never meet the single bigint keys of the other advisory locks; two ids 2^31 apart
# share a key, which at worst makes one look claimed (skipped, counted) for a chunk.
_CLAIM_SPACE = "streamflow.dlq.replay"
_CLAIM = ("SELECT i FROM unnest(%(ids)s::bigint[]) AS i "
          "WHERE pg_try_advisory_lock(hashtext(%(space)s), (i & 2147483647)::int)")
_RELEASE = ("SELECT pg_advisory_unlock(hashtext(%(space)s), (i & 2147483647)::int) "
            "FROM unnest(%(ids)s::bigint[]) AS i")


@dataclass(frozen=True)
class Plan:
    """The selection as a replay starts: counts only, no payload is read."""

    letters: int          # with bytes to send
    gaps: int             # offset_gap letters: nothing to send
    again: int            # letters with bytes that were replayed before
    last_id: int          # the selection ends here: letters that arrive later are not in it
    largest: int          # bytes of the largest payload
    started: datetime     # the database's clock: a letter replayed after it is not sent again


def plan(conn: psycopg.Connection, selection: Selection) -> Plan:
    where, params = selection.where()
    query = statement("""
        SELECT count(*) FILTER (WHERE {d.reason_code} <> %(gap)s),
               count(*) FILTER (WHERE {d.reason_code} = %(gap)s),
               count(*) FILTER (WHERE {d.reason_code} <> %(gap)s AND {d.replay_count} > 0),
               coalesce(max({d.id}), 0), coalesce(max(size), 0), now()
        FROM (SELECT {d.id}, {d.reason_code}, {d.replay_count},
                     octet_length({d.payload}) AS size
              FROM {d} WHERE {where} ORDER BY {d.id} LIMIT %(limit)s) s
    """, d=dead_letter_table, where=where)
    row = conn.execute(query, {**params, "gap": Reason.OFFSET_GAP.value,
                               "limit": selection.limit}).fetchone()
    return Plan(*row)


def replayed_before(conn: psycopg.Connection, selection: Selection, plan: Plan,
                    n: int = 10) -> list[int]:
    """The first ``n`` ids of the planned letters that were replayed before."""
    where, params = selection.where()
    query = statement("SELECT {d.id} FROM {d} WHERE {where} AND {d.id} <= %(last)s "
                      "AND {d.replay_count} > 0 AND {d.reason_code} <> %(gap)s "
                      "ORDER BY {d.id} LIMIT %(n)s", d=dead_letter_table, where=where)
    return [i for (i,) in conn.execute(query, {**params, "last": plan.last_id, "n": n,
                                               "gap": Reason.OFFSET_GAP.value})]


def chunk_ids(conn: psycopg.Connection, selection: Selection, plan: Plan, after: int,
              rows: int) -> list[int]:
    """The next ``rows`` ids of the planned selection after ``after``, oldest first."""
    where, params = selection.where()
    query = statement("SELECT {d.id} FROM {d} WHERE {where} AND {d.id} > %(after)s "
                      "AND {d.id} <= %(last)s ORDER BY {d.id} LIMIT %(rows)s",
                      d=dead_letter_table, where=where)
    return [i for (i,) in conn.execute(query, {**params, "after": after,
                                               "last": plan.last_id, "rows": rows})]


def claim(conn: psycopg.Connection, ids: list[int]) -> list[int]:
    """Those of ``ids`` no other replay holds, now held by this session until ``release``.
    (One lock attempt per id: a LIMIT beside the lock call could lock rows it never returns.)"""
    return [i for (i,) in conn.execute(_CLAIM, {"ids": ids, "space": _CLAIM_SPACE})]


def release(conn: psycopg.Connection, ids: list[int]) -> None:
    if ids:
        conn.execute(_RELEASE, {"ids": ids, "space": _CLAIM_SPACE})


_READ = statement("SELECT {cols} FROM {d} WHERE {d.id} = ANY(%(ids)s) "
                  "AND ({d.last_replayed_at} IS NULL OR {d.last_replayed_at} < %(started)s) "
                  "AND ({d.replay_count} = 0 OR %(again)s) "
                  "ORDER BY {d.id}", d=dead_letter_table, cols=COLUMNS)
_MARK = statement("UPDATE {d} SET {d.replay_count} = {d.replay_count} + 1, "
                  "{d.last_replayed_at} = now() WHERE {d.id} = ANY(%s)", d=dead_letter_table)


def read(conn: psycopg.Connection, ids: list[int], plan: Plan, *,
         again: bool) -> list[StoredDeadLetter]:
    """The letters at ``ids`` with their bytes, but for any replayed since ``plan`` began (by
    another replay that has finished with it) and, unless ``again``, any replayed at all (the
    plan found none: one marked while it was planned is left out too)."""
    with conn.cursor(row_factory=class_row(StoredDeadLetter)) as cur:
        return cur.execute(_READ, {"ids": ids, "started": plan.started,
                                   "again": again}).fetchall()


def mark(conn: psycopg.Connection, ids: list[int]) -> None:
    """Mark these letters replayed (one statement: its own short transaction)."""
    if ids:
        conn.execute(_MARK, (ids,))
