"""Disjoint ranges of one step's input, worked on by concurrent runs at once.

A step's watermark says that every ingest_seq up to it is done. During a burst the sensor
keeps two runs going; with one watermark the second only waited for the first's lock, and
one process (Python and PostgreSQL taking turns) uses about one core of two. Instead, each
run claims the next range past the watermark and past every other claim, works on it in its
own transaction, marks the claim done in that same transaction, and then settles: the
watermark moves over done claims that follow it without a gap, so it never passes a range
that is still being worked on. Readers of the watermark (the sensor, the windows step) see
exactly what they saw before: a prefix of ingest_seq, all of it done.

A claim belongs to a live session: the claimer holds a session advisory lock on it while it
works. A claim whose lock is free was abandoned (its run died, its transaction rolled back)
and is taken over by the next run that looks: the lock is taken before the claim is read
again, so a claim finished meanwhile is never taken twice.

Each take counts as an attempt (a taker that dies counts too; one that met an outage gives
its attempt back). A claim taken again after a failed attempt is split in halves, and a claim
of one event that failed every attempt is quarantined by the step (docs/ARCHITECTURE.md,
"Quarantine"): one event that no code can process never stops the watermark.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psycopg

from streamflow.db.compose import statement
from streamflow.db.tables import events, step_claims
from streamflow.microbatch import batch as batches

_CLAIMS = statement("SELECT {c.after_seq}, {c.upto_seq}, {c.done} FROM {c} WHERE {c.step} = %s "
                    "ORDER BY {c.after_seq}", c=step_claims)
# Take an abandoned claim whose lock we now hold: read after the lock, so a claim finished
# (done, lock released) since the list above was read is seen done and left alone.
_TAKE = statement(
    "UPDATE {c} SET {c.attempts} = {c.attempts} + 1 "
    "WHERE {c.step} = %s AND {c.after_seq} = %s AND NOT {c.done} "
    "RETURNING {c.upto_seq}, {c.attempts} - 1, {c.last_error}", c=step_claims)
# The end of a new range: the ``limit``-th landed row after its start (or the last one).
_RANGE_END = statement(
    "SELECT max({e.ingest_seq}) FROM (SELECT {e.ingest_seq} FROM {e} "
    "WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s ORDER BY {e.ingest_seq} LIMIT %s) s",
    e=events)
_INSERT = statement("INSERT INTO {c} ({c.step}, {c.after_seq}, {c.upto_seq}, {c.attempts}) "
                    "VALUES (%s, %s, %s, %s)", c=step_claims)
_FORGIVE = statement("UPDATE {c} SET {c.attempts} = greatest({c.attempts} - 1, 0) "
                     "WHERE {c.step} = %s AND {c.after_seq} = %s", c=step_claims)
_FAILED = statement("UPDATE {c} SET {c.last_error} = %s "
                    "WHERE {c.step} = %s AND {c.after_seq} = %s", c=step_claims)
# Splitting a range: its size, and the last ingest_seq of its first half.
_EVENTS_IN = statement("SELECT count(*) FROM {e} WHERE {e.ingest_seq} > %s "
                       "AND {e.ingest_seq} <= %s", e=events)
_NTH_SEQ = statement("SELECT {e.ingest_seq} FROM {e} WHERE {e.ingest_seq} > %s "
                     "AND {e.ingest_seq} <= %s ORDER BY {e.ingest_seq} OFFSET %s LIMIT 1",
                     e=events)
# The first half is a range of its own from here: this take is its first attempt.
_SHRINK = statement("UPDATE {c} SET {c.upto_seq} = %s, {c.attempts} = 1 "
                    "WHERE {c.step} = %s AND {c.after_seq} = %s", c=step_claims)
_MARK_DONE = statement("UPDATE {c} SET {c.done} = true "
                       "WHERE {c.step} = %s AND {c.after_seq} = %s AND NOT {c.done}",
                       c=step_claims)
_DONE = statement("SELECT {c.after_seq}, {c.upto_seq} FROM {c} WHERE {c.step} = %s AND {c.done} "
                  "ORDER BY {c.after_seq}", c=step_claims)
_FORGET_SETTLED = statement("DELETE FROM {c} WHERE {c.step} = %s AND {c.done} "
                            "AND {c.upto_seq} <= %s", c=step_claims)


@dataclass(frozen=True)
class Claim:
    step: str
    after: int  # the range (after, upto] of ingest_seq
    upto: int
    tried: int = 0  # earlier attempts at this range (each failed, or its taker died)
    last_error: str | None = None  # why the last failed one did


def _name(step: str, after: int) -> str:
    """The claim's own advisory lock, keyed by hashtextextended() of this name."""
    return f"streamflow.claim.{step}.{after}"


def next_claim(conn: psycopg.Connection, step: str, upto: int, limit: int) -> Claim | None:
    """The next range of ``step`` nobody works on: an abandoned claim first, else a new one of
    at most ``limit`` rows up to ``upto``. The caller owns it until ``release``."""
    with conn.transaction():
        batches.lock(conn, step)
        watermark = _settle(conn, step)
        claims = conn.execute(_CLAIMS, (step,)).fetchall()
        for after, _, done in claims:
            if done or not conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                                        (_name(step, after),)).fetchone()[0]:
                continue
            taken = conn.execute(_TAKE, (step, after)).fetchone()
            if taken is None:  # finished between the list and the lock
                _unlock(conn, step, after)
                continue
            return Claim(step, after, *taken)
        start = max([watermark, *(end for _, end, _ in claims)])
        end = conn.execute(_RANGE_END, (start, upto, limit)).fetchone()[0]
        if end is None:
            return None
        conn.execute(_INSERT, (step, start, end, 1))
        # Session-level: held past this commit, while the range is worked on.
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (_name(step, start),))
        return Claim(step, start, end)


def mark_done(conn: psycopg.Connection, claim: Claim) -> None:
    """In the caller's transaction, the one that wrote the range's results."""
    done = conn.execute(_MARK_DONE, (claim.step, claim.after)).rowcount
    if done != 1:
        raise RuntimeError(f"claim {claim} was not ours to finish")


def split(conn: psycopg.Connection, claim: Claim) -> Claim | None:
    """Halve a claim that failed before: the first half stays ours (under the same lock), the
    second becomes a claim of its own, untried, for any run. None: one event (or none) in it,
    nothing to split."""
    with conn.transaction():
        count = conn.execute(_EVENTS_IN, (claim.after, claim.upto)).fetchone()[0]
        if count <= 1:
            return None
        middle = conn.execute(_NTH_SEQ, (claim.after, claim.upto, count // 2 - 1)).fetchone()[0]
        conn.execute(_SHRINK, (middle, claim.step, claim.after))
        conn.execute(_INSERT, (claim.step, middle, claim.upto, 0))
    return Claim(claim.step, claim.after, middle, 0, claim.last_error)


def failed(conn: psycopg.Connection, claim: Claim, error: BaseException) -> None:
    """Record why an attempt failed (its attempt stays counted): the next take splits it."""
    with conn.transaction():
        conn.execute(_FAILED, (f"{type(error).__name__}: {error}"[:2000], claim.step,
                               claim.after))


def forgive(conn: psycopg.Connection, claim: Claim) -> None:
    """Give back the attempt of a taker that met an outage (a database or broker gone): not
    the range's fault. A broken connection cannot, and the attempt stays counted."""
    with contextlib.suppress(psycopg.OperationalError, psycopg.InterfaceError):
        with conn.transaction():
            conn.execute(_FORGIVE, (claim.step, claim.after))


def release(conn: psycopg.Connection, claim: Claim) -> None:
    """Give the claim's lock back (done or not), on the steps' autocommit connection. A broken
    connection has lost it already."""
    with contextlib.suppress(psycopg.OperationalError, psycopg.InterfaceError):
        _unlock(conn, claim.step, claim.after)


def _unlock(conn: psycopg.Connection, step: str, after: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_name(step, after),))


def settle(conn: psycopg.Connection, step: str) -> int:
    """Move the watermark over the done claims that follow it; returns the watermark."""
    with conn.transaction():
        batches.lock(conn, step)
        return _settle(conn, step)


def _settle(conn: psycopg.Connection, step: str) -> int:
    watermark = batches.watermark(conn, step)
    done = conn.execute(_DONE, (step,)).fetchall()
    settled = watermark
    for after, end in done:
        if after != settled:
            break
        settled = end
    if settled != watermark:
        conn.execute(_FORGET_SETTLED, (step, settled))
        batches.advance(conn, step, settled)
    return settled
