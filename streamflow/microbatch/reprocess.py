"""Reprocess a range of landed events: notifications re-validated under the contract in force,
the windows they touch recomputed, and what changed published again.

A range is ingest sequences ``[first, last]`` or event time ``[start, end)`` (``occurred_at``,
widened to whole 10 s windows, so that every window it touches is re-validated whole). Only
rows the contract step has processed count (ingest_seq up to its watermark): later ones are
the running micro-batch's, which checks them under the same contract.

What recompute means, per chunk of the range's ingest sequences (``_run_chunk``):

- notifications: the raw rows are checked again; streamflow.notifications at those ingest
  sequences is made what the contract step would write today. A row that passes and has no
  notification gets one (also a former contract reject: its dead letter stays, as the record
  of the rejection; replaying it later lands nothing twice, the sink drops a validated
  event_id); a notification whose row now fails is removed and the row dead-lettered (stage
  `contract`, every reason, the original message); a notification whose row was deleted is
  removed; one whose row was corrected in raw.events is updated. Added and corrected ones are
  published to `notifications` (same event_id: the newest copy wins).
- windows: every window holding a notification of the chunk, before or after, is recomputed
  from streamflow.notifications (streamflow.microbatch.windows.recompute); only a window whose
  numbers differ gets revision + 1, and it is published to `analytics` once closed (a window
  still open is published by the windows step when it closes). A window left without events
  keeps its row at zero. An event-time range also recomputes the range's other windows.

Each chunk is one transaction (``_run_chunk`` lists its steps). It holds the reprocesses' own
advisory lock (``batches.lock``), so two reprocesses take turns, and the windows step's only
from its windows recompute to its commit: the windows step never waits for a Kafka flush of
the reprocess. Notifications and dead letters are flushed before the commit, as in the
contract step; the changed windows after it, outside the lock, and a crash before they are
marked published leaves them to the windows step: at least once on every topic. The contract
step never works on the same rows: its claims all lie past its watermark. A range
reprocessed again finds nothing to change, so it writes and publishes nothing.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import psycopg

from streamflow.contract import parse_time
from streamflow.db.compose import columns, statement
from streamflow.db.dead_letters import insert_dead_letters
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.db.tables import event_windows as window_table
from streamflow.db.tables import events as raw_events
from streamflow.db.tables import notifications as notification_table
from streamflow.dlq import Stage
from streamflow.errors import ReprocessRangeInvalid
from streamflow.microbatch import batch as batches
from streamflow.microbatch import notifications, windows
from streamflow.microbatch.notifications import Publish, PublishDeadLetters
from streamflow.microbatch.phases import Phases
from streamflow.validation import CONTRACT_COLUMNS, validate


@dataclass(frozen=True)
class SeqRange:
    """raw.events with ingest_seq in [first, last]."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"ingest_seq {self.first} to {self.last}"


@dataclass(frozen=True)
class TimeRange:
    """raw.events with occurred_at in [start, end), both on 10 s window bounds."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"occurred_at {self.start.isoformat()} to {self.end.isoformat()} (exclusive)"


Range = SeqRange | TimeRange


def parse_range(occurred_from: str | None = None, occurred_to: str | None = None,
                seq_from: int | None = None, seq_to: int | None = None) -> Range:
    """The range an operator asked for: both bounds of one kind, never both kinds; an event
    time range widened to whole windows. Raises ReprocessRangeInvalid saying what is wrong."""
    times, seqs = (occurred_from, occurred_to), (seq_from, seq_to)
    given_times = [t for t in times if t not in (None, "")]
    given_seqs = [s for s in seqs if s is not None]
    if given_times and given_seqs:
        raise ReprocessRangeInvalid(
            "give an event-time range (occurred_from, occurred_to) or an ingest-sequence range "
            "(ingest_seq_from, ingest_seq_to), not both")
    if not given_times and not given_seqs:
        raise ReprocessRangeInvalid(
            "no range: give occurred_from and occurred_to (event time, ISO-8601), or "
            "ingest_seq_from and ingest_seq_to")
    if given_seqs:
        if len(given_seqs) != 2:
            raise ReprocessRangeInvalid("give both ingest_seq_from and ingest_seq_to")
        if seq_from < 1 or seq_to < seq_from:
            raise ReprocessRangeInvalid(
                f"empty ingest-sequence range {seq_from} to {seq_to}: need "
                "1 <= ingest_seq_from <= ingest_seq_to")
        return SeqRange(seq_from, seq_to)
    if len(given_times) != 2:
        raise ReprocessRangeInvalid("give both occurred_from and occurred_to")
    start, end = (_time(name, value) for name, value in
                  (("occurred_from", occurred_from), ("occurred_to", occurred_to)))
    if end <= start:
        raise ReprocessRangeInvalid(
            f"empty time range: occurred_to ({end.isoformat()}) must be after occurred_from "
            f"({start.isoformat()})")
    last = windows.window_start(end)
    return TimeRange(windows.window_start(start),
                     last if last == end else last + windows.WINDOW)


def _time(name: str, value: str) -> datetime:
    moment = parse_time(value)
    if moment is None:
        raise ReprocessRangeInvalid(f"{name} {value!r} is not an ISO-8601 time such as "
                                    "2026-11-27T14:00:00Z (no offset: UTC)")
    return moment


@dataclass(frozen=True)
class Counts:
    rechecked: int = 0             # raw rows checked against the contract again
    added: int = 0                 # notifications that were not there
    added_former_rejects: int = 0  # of those, rows the contract had dead-lettered before
    removed: int = 0               # notifications whose row fails now, or is gone
    corrected: int = 0             # notifications updated from a corrected raw row
    dead_lettered: int = 0         # rows that failed now and had passed before
    windows_recomputed: int = 0
    windows_changed: int = 0       # new windows and amended ones
    revisions_bumped: int = 0      # amended ones (revision + 1)
    notifications_published: int = 0
    windows_published: int = 0
    dead_letters_published: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) + getattr(other, f.name)
                        for f in dataclasses.fields(self)))


@dataclass(frozen=True)
class ReprocessResult:
    selected: Range
    processed_upto: int  # the contract step's watermark: later rows were left to it
    counts: Counts
    top_reasons: list[tuple[str, int]]  # why the newly dead-lettered rows failed
    chunks: int
    dry_run: bool
    phases: Phases = field(default_factory=Phases, compare=False)


@dataclass(frozen=True)
class Publishers:
    notifications: Publish
    windows: Publish
    dead_letters: PublishDeadLetters


_DRY_RUN = Publishers(lambda _: None, lambda _: None, lambda _: [])
# The reprocesses' own advisory lock (``batches.lock``): two take turns, while the windows
# step is held only for a chunk's windows.
STEP = "reprocess"


class _Chunk(NamedTuple):
    counts: Counts
    reasons: dict[int, list[str]]  # ingest_seq -> why, of the rows dead-lettered now
    windows: set[datetime]         # the starts of the windows recomputed

_ROW = ("ingest_seq", *CONTRACT_COLUMNS)  # a notification: its raw row's columns
_VALUES = CONTRACT_COLUMNS[1:]  # all but event_id, the key
_WINDOWS_OF = statement("""
    SELECT DISTINCT to_timestamp(floor(extract(epoch FROM {n.occurred_at}) / %(w)s) * %(w)s)
    FROM {n} WHERE {n.ingest_seq} = ANY(%(seqs)s)
""", n=notification_table)
_REMOVE = statement("""
    DELETE FROM {n} WHERE {n.ingest_seq} = ANY(%s) RETURNING {n.ingest_seq}
""", n=notification_table)
_CORRECT = statement("""
    UPDATE {n} n SET ({cols}) = ({raw})
    FROM {e} r
    WHERE r.{e.ingest_seq} = ANY(%(valid)s) AND n.{n.event_id} = r.{e.event_id}
      AND ({now}) IS DISTINCT FROM ({raw})
    RETURNING n.{n.ingest_seq}
""", n=notification_table, e=raw_events, cols=columns(notification_table, _VALUES),
    raw=columns(raw_events, _VALUES, prefix="r"),
    now=columns(notification_table, _VALUES, prefix="n"))
_ADD = statement("""
    INSERT INTO {n} ({cols})
    SELECT {raw} FROM {e} r WHERE r.{e.ingest_seq} = ANY(%(valid)s)
      AND NOT EXISTS (SELECT 1 FROM {n} x WHERE x.{n.event_id} = r.{e.event_id}
                                              AND x.{n.validated_at} >= r.{e.ingested_at})
    ON CONFLICT DO NOTHING
    RETURNING {n.ingest_seq}, {n.event_id}::text
""", n=notification_table, e=raw_events, cols=columns(notification_table, _ROW),
    raw=columns(raw_events, _ROW))
# Rows the contract dead-lettered before (the partial index of migration 0003).
_FORMER_REJECTS = statement(
    "SELECT count(DISTINCT lower({d.event_id})) FROM {d} "
    "WHERE {d.stage} = {contract} AND lower({d.event_id}) = ANY(%s)",
    d=dead_letter_table, contract=Stage.CONTRACT.value)
# An event-time range: its raw rows (a scan: raw.events has no occurred_at index, which would
# cost the sink ~20 % of its rate) and its notifications (their occurred_at index).
_SEQS_IN_TIME = statement("""
    SELECT {e.ingest_seq} FROM {e}
    WHERE {e.occurred_at} >= %(start)s AND {e.occurred_at} < %(end)s
      AND {e.ingest_seq} <= %(upto)s
    UNION
    SELECT {n.ingest_seq} FROM {n}
    WHERE {n.occurred_at} >= %(start)s AND {n.occurred_at} < %(end)s
      AND {n.ingest_seq} <= %(upto)s
    ORDER BY 1
""", e=raw_events, n=notification_table)
_CHUNK_END = statement("""
    SELECT max({e.ingest_seq}), count(*) FROM (SELECT {e.ingest_seq} FROM {e}
        WHERE {e.ingest_seq} > %s AND {e.ingest_seq} <= %s ORDER BY {e.ingest_seq} LIMIT %s) s
""", e=raw_events)
_SEQS_BETWEEN = statement("""
    SELECT {e.ingest_seq} FROM {e}
    WHERE {e.ingest_seq} > %(after)s AND {e.ingest_seq} <= %(upto)s
    UNION
    SELECT {n.ingest_seq} FROM {n}
    WHERE {n.ingest_seq} > %(after)s AND {n.ingest_seq} <= %(upto)s
    ORDER BY 1
""", e=raw_events, n=notification_table)
_WINDOWS_IN = statement("""
    SELECT DISTINCT {w.window_start} FROM {w}
    WHERE {w.window_start} >= %s AND {w.window_start} < %s
""", w=window_table)
# Ingest sequences fetched at a time while an event-time range is collected: ~4 MB of
# Python tuples at once, whatever the range (the array keeps 8 bytes a row).
_FETCH = 50_000


def run(conn: psycopg.Connection, selected: Range, publishers: Publishers, *,
        dry_run: bool = False, limit: int = batches.MAX_BATCH,
        grace: timedelta = windows.DEFAULT_GRACE,
        idle: timedelta = windows.DEFAULT_IDLE) -> ReprocessResult:
    """Reprocess ``selected``, ``limit`` raw rows at a time (each chunk its own transaction:
    memory stays bounded, a failure keeps the chunks before it, and running again completes
    it). ``grace`` and ``idle`` decide which changed windows are closed (the windows step's
    defaults). A dry run rolls every chunk back and publishes nothing: it reports what would
    change."""
    phase = Phases()
    processed = batches.watermark(conn, notifications.STEP)
    total, reasons, recomputed, chunks = Counts(), {}, set(), 0
    for seqs in _chunks(conn, selected, processed, limit, phase):
        chunk = _run_chunk(conn, seqs, publishers, dry_run=dry_run, grace=grace, idle=idle,
                           phase=phase)
        total, chunks = total + chunk.counts, chunks + 1
        reasons |= chunk.reasons
        recomputed |= chunk.windows
    # A window with events in two chunks was recomputed by each: count it once.
    total = dataclasses.replace(total, windows_recomputed=len(recomputed))
    if isinstance(selected, TimeRange):
        total += _rest_of_windows(conn, selected, recomputed, publishers, dry_run=dry_run,
                                  grace=grace, idle=idle, phase=phase)
    return ReprocessResult(selected, processed, total, notifications.top_reasons(reasons),
                           chunks, dry_run, phase)


def _chunks(conn: psycopg.Connection, selected: Range, processed: int, limit: int,
            phase: Phases) -> Iterator[list[int]]:
    """The ingest sequences to recheck, in order, about ``limit`` raw rows a chunk: the raw
    rows of the range and its notifications (one whose row was deleted is removed)."""
    if isinstance(selected, TimeRange):
        seqs = array("q")  # 8 bytes a row: 10M rows in 80 MB
        with phase("select"), conn.transaction(), conn.cursor(name="reprocess_seqs") as cur:
            cur.execute(_SEQS_IN_TIME, {"start": selected.start, "end": selected.end,
                                        "upto": processed})
            while rows := cur.fetchmany(_FETCH):
                seqs.extend(seq for (seq,) in rows)
        for i in range(0, len(seqs), limit):
            yield seqs[i:i + limit].tolist()
        return
    after, upto = selected.first - 1, min(selected.last, processed)
    while after < upto:
        with phase("select"):
            end, rows = conn.execute(_CHUNK_END, (after, upto, limit)).fetchone()
            end = upto if rows < limit else end  # the last chunk takes trailing notifications
            seqs = [seq for (seq,) in conn.execute(_SEQS_BETWEEN,
                                                   {"after": after, "upto": end})]
        if seqs:
            yield seqs
        after = end


def _run_chunk(conn: psycopg.Connection, seqs: list[int], publishers: Publishers, *,
               dry_run: bool, grace: timedelta, idle: timedelta, phase: Phases) -> _Chunk:
    """Reprocess the rows at ``seqs`` (all processed by the contract step): one transaction
    that holds the windows step's lock only for the windows, then their publication.

    1. Take the reprocesses' own lock (two take turns); note the windows of the
       notifications there now.
    2. Read the raw rows' typed columns and validate them against the contract in force.
    3. Make the notifications match: remove those whose row fails or is gone, correct those
       whose row changed, add the rows that pass and had none.
    4. Publish the added and corrected notifications and the dead letters of the removed rows
       that fail; flush (before the commit, as in the contract step: at least once).
    5. Insert the dead letters.
    6. Take the windows step's lock; recompute the windows of the notifications before and
       after (revision + 1 where the numbers differ); note the changed ones that are closed;
       commit (a dry run rolls back), which releases the lock.
    7. Publish those windows, flush, mark them published: outside the lock and any
       transaction (``_publish_windows``).
    """
    publish = _DRY_RUN if dry_run else publishers
    with conn.transaction() as tx:
        # Step 1
        with phase("lock"):
            batches.hold_off_detach(conn)
            batches.lock(conn, STEP)
        starts = _windows_of(conn, seqs)
        # Step 2
        with phase("read"):
            events = batches.read_typed_at(conn, seqs)
        with phase("validate"):
            valid, reasons = validate(events.frame, events.type_errors)
        # Step 3
        with phase("notifications"):
            passed = valid["ingest_seq"].tolist()
            params = {"valid": passed}
            # Failing now, or the raw row is gone: few, so a list (NOT = ANY over the rows
            # that pass would compare every row with every other).
            gone = sorted(set(seqs).difference(passed))
            removed = [seq for (seq,) in conn.execute(_REMOVE, (gone,))] if gone else []
            corrected = [seq for (seq,) in conn.execute(_CORRECT, params)]
            added = conn.execute(_ADD, params).fetchall()
            former = (conn.execute(_FORMER_REJECTS, ([i for _, i in added],)).fetchone()[0]
                      if added else 0)
            failing = {events.seqs[i]: why for i, why in reasons.items()}
            now_failing = [seq for seq in removed if seq in failing]
            origins = batches.read_origins(conn, now_failing)
            letters = [notifications.contract_dead_letter(origins[seq], failing[seq])
                       for seq in now_failing if seq in origins]
            changed_rows = {*corrected, *(seq for seq, _ in added)}
            messages = notifications.notification_messages(
                valid[valid["ingest_seq"].isin(changed_rows)])
        # Step 4
        with phase("publish"):
            publish.notifications(messages)
            unpublished = publish.dead_letters(letters)
        # Step 5
        with phase("dead_letters"):
            insert_dead_letters(conn, letters, unpublished)
        # Step 6
        with phase("lock"):
            batches.lock(conn, windows.STEP)
        with phase("windows"):
            starts |= _windows_of(conn, seqs)
            changes = windows.recompute(conn, sorted(starts))
            closed = windows.closed_rows(conn, windows.closed_now(conn, grace, idle), changes)
        if dry_run:
            raise psycopg.Rollback(tx)
    # Step 7
    published = _publish_windows(conn, publish, closed, phase)
    counts = Counts(
        rechecked=len(events), added=len(added), added_former_rejects=former,
        removed=len(removed), corrected=len(corrected), dead_lettered=len(letters),
        windows_recomputed=len(starts), windows_changed=len(changes),
        revisions_bumped=sum(1 for c in changes if c.revision > 1),
        notifications_published=len(messages), windows_published=published,
        dead_letters_published=len(letters))
    return _Chunk(counts, {seq: failing[seq] for seq in now_failing}, starts)


def _publish_windows(conn: psycopg.Connection, publish: Publishers,
                     closed: list[windows.WindowRow], phase: Phases) -> int:
    """Publish the closed windows a committed recompute changed; returns how many (a dry
    run: how many would be).

    Outside the windows step's lock: the step runs meanwhile. A crash before the mark leaves
    them unpublished, and the step publishes them (it publishes every closed window with an
    unpublished revision: at least once, as before). If the step amends one of them first,
    both revisions are published, the newer possibly first; the mark never moves back, and
    the revision each message carries says which is newer."""
    if publish is _DRY_RUN:
        return len(closed)
    with phase("publish"):
        return windows.publish_rows(conn, publish.windows, closed)


def _rest_of_windows(conn: psycopg.Connection, selected: TimeRange, done: set[datetime],
                     publishers: Publishers, *, dry_run: bool, grace: timedelta,
                     idle: timedelta, phase: Phases) -> Counts:
    """The event-time range's windows no chunk recomputed (a window row with no notification
    left: it is set to zero), in one transaction under the windows step's lock; then the
    changed ones that are closed are published, outside it."""
    with conn.transaction() as tx, phase("windows"):
        batches.hold_off_detach(conn)
        batches.lock(conn, STEP)
        batches.lock(conn, windows.STEP)
        starts = [start for (start,) in conn.execute(_WINDOWS_IN, (selected.start, selected.end))
                  if start not in done]
        changes = windows.recompute(conn, starts)
        closed = windows.closed_rows(conn, windows.closed_now(conn, grace, idle), changes)
        if dry_run:
            raise psycopg.Rollback(tx)
    published = _publish_windows(conn, _DRY_RUN if dry_run else publishers, closed, phase)
    return Counts(windows_recomputed=len(starts), windows_changed=len(changes),
                  revisions_bumped=sum(1 for c in changes if c.revision > 1),
                  windows_published=published)


def _windows_of(conn: psycopg.Connection, seqs: list[int]) -> set[datetime]:
    return {start for (start,) in conn.execute(
        _WINDOWS_OF, {"w": windows.WINDOW_SECONDS, "seqs": seqs})}

