"""10-second event-time tumbling windows over validated events.

Every window a batch touched is recomputed from streamflow.notifications, so a late event
amends its window; a window whose numbers change gets its revision bumped. A window is closed
once the event-time watermark (latest event time, never past the clock, minus a grace
period) has passed its end;
once no new validated event has arrived for a quiet time (processing time: an idle stream),
every window up to the one holding the last event is closed too. Closed windows with a
revision not yet published go to the `analytics` topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import class_row

from streamflow import contract
from streamflow.db.compose import columns, statement
from streamflow.db.tables import dropped_periods, event_windows, notifications
from streamflow.microbatch import batch as batches
from streamflow.microbatch.phases import Phases
from streamflow.validation import FUTURE_SKEW

STEP = "event_windows"
WINDOW = timedelta(seconds=10)
WINDOW_SECONDS = int(WINDOW.total_seconds())
# How long after a window's end late events are still expected before it is published.
DEFAULT_GRACE = timedelta(seconds=10)
# Processing time without a new validated event after which the stream counts as idle and its
# last windows close. Three windows' width: at the demo's 50 events/s events are 20 ms apart,
# so this is a stopped stream, not a gap; it must exceed the grace period (assets/microbatch.py
# checks), or an idle close would publish windows before late events had their grace period.
DEFAULT_IDLE = timedelta(seconds=30)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(at: datetime) -> datetime:
    """The start of the 10 s window holding ``at`` (the SQL below floors the same way)."""
    return at - (at - _EPOCH) % WINDOW


def idle_wait(last_arrival: datetime | None, now: datetime, idle: timedelta) -> timedelta:
    """Processing time until the stream counts as idle (zero or less: idle now)."""
    return timedelta(0) if last_arrival is None else last_arrival + idle - now


def closed_before(max_event_time: datetime | None, grace: timedelta,
                  last_arrival: datetime | None = None, now: datetime | None = None,
                  idle: timedelta = DEFAULT_IDLE) -> datetime | None:
    """Windows ending at or before this instant are closed.

    While events arrive: the latest event time minus the grace period. Once no new validated
    event has arrived for ``idle`` (processing time, ``last_arrival`` to ``now``; no clock: never
    idle), the watermark moves to the end of the window holding the last event, so every window
    up to and including it closes instead of waiting for the next event (Flink's idle sources).
    A late event after that still amends its window, which is published again.

    Event time never runs ahead of the clock (``now``): the contract accepts events up to
    5 minutes in the future (a producer's fast clock), and one of them must not close the
    next 5 minutes of windows before their events arrive. So the watermark is bounded by
    ``now``: a future event waits in its open window until the clock reaches it."""
    if max_event_time is None:
        return None
    if now is not None:
        max_event_time = min(max_event_time, now)
    if now is not None and idle_wait(last_arrival, now, idle) <= timedelta(0):
        return window_start(max_event_time) + WINDOW
    return max_event_time - grace


_TOUCHED = statement("""
    SELECT DISTINCT to_timestamp(floor(extract(epoch FROM {n.occurred_at}) / %(w)s) * %(w)s)
    FROM {n} WHERE {n.ingest_seq} > %(after)s AND {n.ingest_seq} <= %(upto)s
""", n=notifications)

# A window's numbers, in the order of the `analytics` message (WindowRow).
_NUMBERS = ("events", "distinct_users", "login_successes", "login_failures", "purchase_cents")
def _aggregate(batch_only: bool) -> sql.Composed:
    """Each window's numbers per event type, over the validated events in the windows
    ``%(starts)s`` (each reads only its own 10 s, event-time index: an old late event must not
    make the step scan everything between it and now); ``batch_only``: only the batch's
    events, ``%(after)s`` < ingest_seq <= ``%(upto)s``."""
    return statement("""
        SELECT s.window_start,
               {n.event_type},
               count(*) AS {w.events},
               count(DISTINCT {n.user_id}) AS {w.distinct_users},
               count(*) FILTER (WHERE {n.event_type} = 'login' AND {n.success})
                   AS {w.login_successes},
               count(*) FILTER (WHERE {n.event_type} = 'login' AND NOT {n.success})
                   AS {w.login_failures},
               coalesce(sum({n.amount_cents}) FILTER (WHERE {n.event_type} = 'purchase'), 0)
                   AS {w.purchase_cents}
        FROM unnest(%(starts)s::timestamptz[]) AS s(window_start)
        JOIN {n}
          ON {n.occurred_at} >= s.window_start AND {n.occurred_at} < s.window_start + %(width)s
         {batch}
        GROUP BY 1, 2
    """, n=notifications, w=event_windows, batch=statement(
        "AND {n.ingest_seq} > %(after)s AND {n.ingest_seq} <= %(upto)s", n=notifications)
        if batch_only else sql.SQL(""))


# Recompute the touched windows from all validated events in them (late ones included), in
# one statement. A recomputed window left without a validated event of its type (only a
# reprocess removes validated events: streamflow.microbatch.reprocess) keeps its row, with
# zero counts and a new revision, so that the consumers of `analytics` learn it emptied; it is
# found against the same aggregate (a NOT EXISTS on notifications per window was planned as a
# sequential scan of all of them: 0.3 s at a million validated events, growing with history;
# `make bench`, history).
_RECOMPUTE = statement("""
    WITH agg AS ({agg}),
    upserted AS (
        INSERT INTO {w} AS w ({w.window_start}, {w.window_end}, {w.event_type}, {numbers})
        SELECT window_start, window_start + %(width)s, {n.event_type}, {numbers}
        FROM agg
        ON CONFLICT ({w.window_start}, {w.event_type}) DO UPDATE SET
            ({numbers}) = ({excluded}),
            {w.revision} = w.{w.revision} + 1, {w.updated_at} = now()
        WHERE ({existing}) IS DISTINCT FROM ({excluded})
        RETURNING w.{w.window_start}, w.{w.event_type}, w.{w.revision}
    ),
    emptied AS (
        UPDATE {w} AS w SET ({numbers}) = ({zeros}),
            {w.revision} = w.{w.revision} + 1, {w.updated_at} = now()
        WHERE w.{w.window_start} = ANY(%(starts)s) AND w.{w.events} > 0
          AND NOT EXISTS (SELECT 1 FROM agg a WHERE a.window_start = w.{w.window_start}
                                               AND a.{n.event_type} = w.{w.event_type})
        RETURNING w.{w.window_start}, w.{w.event_type}, w.{w.revision}
    )
    SELECT * FROM upserted UNION ALL SELECT * FROM emptied
""", agg=_aggregate(batch_only=False), n=notifications, w=event_windows,
    numbers=columns(event_windows, _NUMBERS),
    existing=columns(event_windows, _NUMBERS, prefix="w"),
    excluded=columns(event_windows, _NUMBERS, prefix="excluded"),
    zeros=sql.SQL(", ").join([sql.Literal(0)] * len(_NUMBERS)))

# A window some of whose events may have been dropped with their period (streamflow.lifecycle)
# cannot be recounted: the windows step adds its batch's events to it instead. Counts and sums
# stay exact (each event reaches the step once); distinct_users becomes an upper bound.
_AMEND = statement("""
    WITH agg AS ({agg})
    INSERT INTO {w} AS w ({w.window_start}, {w.window_end}, {w.event_type}, {numbers})
    SELECT window_start, window_start + %(width)s, {n.event_type}, {numbers} FROM agg
    ON CONFLICT ({w.window_start}, {w.event_type}) DO UPDATE SET
        ({numbers}) = ({sums}), {w.revision} = w.{w.revision} + 1, {w.updated_at} = now()
    RETURNING w.{w.window_start}, w.{w.event_type}, w.{w.revision}
""", agg=_aggregate(batch_only=True), n=notifications, w=event_windows,
    numbers=columns(event_windows, _NUMBERS),
    sums=sql.SQL(", ").join(sql.SQL("w.{c} + EXCLUDED.{c}").format(c=sql.Identifier(c))
                            for c in _NUMBERS))

_LAST_DROPPED = statement("SELECT max({d.period_end}) FROM {d} WHERE {d.table_name} = %s",
                          d=dropped_periods)

# When the newest validated event arrived (processing time), and the clock that wrote it: its
# validated_at (the contract step's insert time, so a backlog being worked off is fresh and
# never looks idle), found through the ingest_seq index, so the cost stays flat with history.
_LAST_ARRIVAL_AND_NOW = statement(
    "(SELECT {n.validated_at} FROM {n} ORDER BY {n.ingest_seq} DESC LIMIT 1), now()",
    n=notifications)
# The last event time (the event-time index) with the above.
_FRONTIER = statement("SELECT (SELECT max({n.occurred_at}) FROM {n}), {rest}",
                      n=notifications, rest=_LAST_ARRIVAL_AND_NOW)
# For the sensor: the first window waiting to be published, with the above. min() reads one
# entry of the partial index of migration 0004; EXISTS was planned as a sequential scan that
# passed every published window first (26k rows at 3 days of history, growing with it).
_WAITING = statement("SELECT (SELECT min({w.window_end}) FROM {w} "
                     "WHERE {w.published_revision} < {w.revision}), {rest}",
                     w=event_windows, rest=_LAST_ARRIVAL_AND_NOW)


@dataclass(frozen=True)
class WindowChange:
    """A window whose numbers a recompute changed."""

    window_start: datetime
    event_type: str
    revision: int  # 1: a new window; more: an amended one


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One window's numbers as the `analytics` topic carries them."""

    window_start: datetime
    window_end: datetime
    event_type: str
    events: int
    distinct_users: int
    login_successes: int
    login_failures: int
    purchase_cents: int
    revision: int

    @property
    def key(self) -> bytes:
        return f"{self.window_start.isoformat()}|{self.event_type}".encode()

    def message(self) -> bytes:
        return orjson.dumps({
            "window_start": contract.format_time(self.window_start),
            "window_end": contract.format_time(self.window_end),
            "event_type": self.event_type, "events": self.events,
            "distinct_users": self.distinct_users, "login_successes": self.login_successes,
            "login_failures": self.login_failures, "purchase_cents": self.purchase_cents,
            "revision": self.revision})


_TO_PUBLISH = """
    SELECT {row} FROM {w}
    WHERE {w.window_end} <= %(closed)s AND {w.published_revision} < {w.revision} {only}
    ORDER BY {w.window_start}, {w.event_type}
"""
_ROW = columns(event_windows, WindowRow.__dataclass_fields__)
_TO_PUBLISH_ALL = statement(_TO_PUBLISH, w=event_windows, row=_ROW, only=sql.SQL(""))
_TO_PUBLISH_ONLY = statement(_TO_PUBLISH, w=event_windows, row=_ROW, only=statement(
    "AND ({w.window_start}, {w.event_type}) IN "
    "(SELECT * FROM unnest(%(starts)s::timestamptz[], %(types)s::text[]))", w=event_windows))
# Never back: a reprocess publishes after its commit, outside the step's lock
# (streamflow.microbatch.reprocess), when the step may have published a newer revision.
_MARK_PUBLISHED = statement(
    "UPDATE {w} SET {w.published_revision} = %(revision)s "
    "WHERE {w.window_start} = %(start)s AND {w.event_type} = %(type)s "
    "AND {w.published_revision} < %(revision)s", w=event_windows)


@dataclass(frozen=True)
class WindowsResult:
    after: int
    upto: int
    touched: int
    changed: int
    published: int
    watermark: datetime | None
    phases: Phases = field(default_factory=Phases, compare=False)


Publish = Callable[[list[tuple[bytes, bytes]]], None]


def run(conn: psycopg.Connection, upto: int, publish: Publish,
        grace: timedelta = DEFAULT_GRACE, idle: timedelta = DEFAULT_IDLE,
        now: datetime | None = None) -> WindowsResult:
    """Recompute windows for validated events after this step's watermark, in one transaction:

    1. Lock the step; find the windows touched by notifications in (watermark, upto].
    2. Recompute and upsert them; a window whose numbers change gets revision + 1.
    3. Publish closed windows (``closed_before``: grace, or idle for ``idle`` by ``now``, the
       database's clock unless given) with an unpublished revision to Kafka and flush.
    4. Mark them published, advance the watermark, commit.
    """
    phase = Phases()
    with conn.transaction():
        with phase("lock"):
            batches.lock(conn, STEP)
            after = batches.watermark(conn, STEP)
            upto = max(after, min(upto, _validated_upto(conn)))
        with phase("touched"):
            starts = [r[0] for r in conn.execute(_TOUCHED, {"w": WINDOW_SECONDS,
                                                             "after": after, "upto": upto})]
        with phase("recompute"):
            changed = len(recompute(conn, starts, (after, upto)))
        with phase("publish"):
            closed = closed_now(conn, grace, idle, now)
            published = publish_closed(conn, publish, closed)
        batches.advance(conn, STEP, upto)
    return WindowsResult(after, upto, len(starts), changed, published, closed, phase)


def recompute(conn: psycopg.Connection, starts: list[datetime],
              batch: tuple[int, int] | None = None) -> list[WindowChange]:
    """Recompute the windows starting at ``starts`` (every event type) from the validated
    events in them, in the caller's transaction; returns those whose numbers changed, each
    with its new revision (a window whose numbers stay keeps its revision).

    A window whose events may not all be in PostgreSQL any more (older than its table's hot
    horizon: ``recountable``) is not recounted: given ``batch``, the (after, upto] ingest range
    the windows step is working on, that batch's events are added to it (``_AMEND``); without
    one (a reprocess), it is left as it is: restore its periods first (`streamflow archive
    restore`)."""
    if not starts:
        return []
    since = recountable(conn)
    recount = [s for s in starts if since is None or s >= since]
    old = [s for s in starts if since is not None and s < since]
    rows = conn.execute(_RECOMPUTE, {"width": WINDOW, "starts": recount}).fetchall() if (
        recount) else []
    if old and batch is not None:
        rows += conn.execute(_AMEND, {"width": WINDOW, "starts": old, "after": batch[0],
                                      "upto": batch[1]}).fetchall()
    return [WindowChange(*row) for row in rows]


def recountable(conn: psycopg.Connection) -> datetime | None:
    """The first window start whose events are all still in streamflow.notifications (None:
    no period of it was ever dropped). An event is validated at most ``FUTURE_SKEW`` before
    its own time (the contract refuses those further ahead), so a window starting that long
    after the end of the last dropped period has every event still in PostgreSQL."""
    (dropped,) = conn.execute(_LAST_DROPPED, (notifications.fullname,)).fetchone()
    return None if dropped is None else dropped + FUTURE_SKEW


def closed_now(conn: psycopg.Connection, grace: timedelta = DEFAULT_GRACE,
               idle: timedelta = DEFAULT_IDLE, now: datetime | None = None) -> datetime | None:
    """``closed_before`` for the validated events so far (``now``: the database's clock)."""
    max_time, last_arrival, db_now = conn.execute(_FRONTIER).fetchone()
    return closed_before(max_time, grace, last_arrival, now or db_now, idle)


def publish_closed(conn: psycopg.Connection, publish: Publish, closed: datetime | None,
                   only: list[WindowChange] | None = None) -> int:
    """Publish the closed windows (of ``only``, when given) whose revision is not published
    yet, then mark them published, in the caller's transaction; returns how many."""
    return publish_rows(conn, publish, closed_rows(conn, closed, only))


def closed_rows(conn: psycopg.Connection, closed: datetime | None,
                only: list[WindowChange] | None = None) -> list[WindowRow]:
    """The closed windows (of ``only``, when given) whose revision is not published yet."""
    if closed is None or only == []:
        return []
    with conn.cursor(row_factory=class_row(WindowRow)) as cur:
        if only is None:
            return cur.execute(_TO_PUBLISH_ALL, {"closed": closed}).fetchall()
        return cur.execute(_TO_PUBLISH_ONLY, {
            "closed": closed, "starts": [w.window_start for w in only],
            "types": [w.event_type for w in only]}).fetchall()


def publish_rows(conn: psycopg.Connection, publish: Publish, rows: list[WindowRow]) -> int:
    """Publish these windows and flush, then mark their revisions published (a newer one
    already marked stays); returns how many."""
    if not rows:
        return 0
    publish([(w.key, w.message()) for w in rows])
    with conn.cursor() as cur:
        cur.executemany(_MARK_PUBLISHED, [
            {"revision": w.revision, "start": w.window_start, "type": w.event_type}
            for w in rows])
    return len(rows)


def idle_close_in(conn: psycopg.Connection, idle: timedelta = DEFAULT_IDLE) -> timedelta | None:
    """For the sensor: None while no window waits to be published; otherwise the processing
    time until the idle rule closes them all (zero or less: a run now publishes them)."""
    first_end, last_arrival, now = conn.execute(_WAITING).fetchone()
    return None if first_end is None else idle_wait(last_arrival, now, idle)


def _validated_upto(conn: psycopg.Connection) -> int:
    """Windows never run ahead of the contract check (they read its output)."""
    return batches.watermark(conn, "notifications")

