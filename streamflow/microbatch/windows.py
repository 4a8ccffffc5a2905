"""10-second event-time tumbling windows over validated events.

Every window a batch touched is recomputed from streamflow.notifications, so a late event
amends its window; a window whose numbers change gets its revision bumped. A window is closed
once the event-time watermark (latest event time minus a grace period) has passed its end;
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

from streamflow import contract
from streamflow.microbatch import batch as batches
from streamflow.microbatch.phases import Phases

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
    A late event after that still amends its window, which is published again."""
    if max_event_time is None:
        return None
    if now is not None and idle_wait(last_arrival, now, idle) <= timedelta(0):
        return window_start(max_event_time) + WINDOW
    return max_event_time - grace


_TOUCHED = """
    SELECT DISTINCT to_timestamp(floor(extract(epoch FROM occurred_at) / %(w)s) * %(w)s)
    FROM streamflow.notifications WHERE ingest_seq > %(after)s AND ingest_seq <= %(upto)s
"""

# Recompute the touched windows from all validated events in them (late ones included).
# Each touched window reads only its own 10 s (event-time index): an old late event must not
# make the step scan everything between it and now.
_UPSERT = """
    WITH agg AS (
        SELECT s.window_start,
               event_type,
               count(*) AS events,
               count(DISTINCT user_id) AS distinct_users,
               count(*) FILTER (WHERE event_type = 'login' AND success) AS login_successes,
               count(*) FILTER (WHERE event_type = 'login' AND NOT success) AS login_failures,
               coalesce(sum(amount_cents) FILTER (WHERE event_type = 'purchase'), 0)
                   AS purchase_cents
        FROM unnest(%(starts)s::timestamptz[]) AS s(window_start)
        JOIN streamflow.notifications
          ON occurred_at >= s.window_start AND occurred_at < s.window_start + %(width)s
        GROUP BY 1, 2
    )
    INSERT INTO streamflow.event_windows AS w (window_start, window_end, event_type, events,
        distinct_users, login_successes, login_failures, purchase_cents)
    SELECT window_start, window_start + %(width)s, event_type, events, distinct_users,
           login_successes, login_failures, purchase_cents
    FROM agg
    ON CONFLICT (window_start, event_type) DO UPDATE SET
        events = EXCLUDED.events, distinct_users = EXCLUDED.distinct_users,
        login_successes = EXCLUDED.login_successes, login_failures = EXCLUDED.login_failures,
        purchase_cents = EXCLUDED.purchase_cents, revision = w.revision + 1, updated_at = now()
    WHERE (w.events, w.distinct_users, w.login_successes, w.login_failures, w.purchase_cents)
          IS DISTINCT FROM (EXCLUDED.events, EXCLUDED.distinct_users, EXCLUDED.login_successes,
                            EXCLUDED.login_failures, EXCLUDED.purchase_cents)
    RETURNING window_start, event_type, revision
"""
# A window of the recomputed ones left without a validated event of its type: only a
# reprocess removes validated events (streamflow.microbatch.reprocess). The row stays, with
# zero counts and a new revision, so that the consumers of `analytics` learn it emptied.
_EMPTIED = """
    UPDATE streamflow.event_windows AS w SET events = 0, distinct_users = 0,
        login_successes = 0, login_failures = 0, purchase_cents = 0,
        revision = w.revision + 1, updated_at = now()
    WHERE w.window_start = ANY(%(starts)s) AND w.events > 0
      AND NOT EXISTS (SELECT 1 FROM streamflow.notifications n
                      WHERE n.occurred_at >= w.window_start AND n.occurred_at < w.window_end
                        AND n.event_type = w.event_type)
    RETURNING window_start, event_type, revision
"""

_TO_PUBLISH = sql.SQL("""
    SELECT window_start, window_end, event_type, events, distinct_users, login_successes,
           login_failures, purchase_cents, revision
    FROM streamflow.event_windows
    WHERE window_end <= %(closed)s AND published_revision < revision {only}
    ORDER BY window_start, event_type
""")
_TO_PUBLISH_ALL = _TO_PUBLISH.format(only=sql.SQL(""))
_TO_PUBLISH_ONLY = _TO_PUBLISH.format(only=sql.SQL(
    "AND (window_start, event_type) IN "
    "(SELECT * FROM unnest(%(starts)s::timestamptz[], %(types)s::text[]))"))

# When the newest validated event arrived (processing time), and the clock that wrote it: its
# validated_at (the contract step's insert time, so a backlog being worked off is fresh and
# never looks idle), found through the ingest_seq index, so the cost stays flat with history.
_LAST_ARRIVAL_AND_NOW = sql.SQL(
    "(SELECT validated_at FROM streamflow.notifications ORDER BY ingest_seq DESC LIMIT 1), now()")
# The last event time (the event-time index) with the above.
_FRONTIER = sql.SQL("SELECT (SELECT max(occurred_at) FROM streamflow.notifications), {}").format(
    _LAST_ARRIVAL_AND_NOW)
# For the sensor: the first window waiting to be published, with the above. min() reads one
# entry of the partial index of migration 0004; EXISTS was planned as a sequential scan that
# passed every published window first (26k rows at 3 days of history, growing with it).
_WAITING = sql.SQL("SELECT (SELECT min(window_end) FROM streamflow.event_windows "
                   "WHERE published_revision < revision), {}").format(_LAST_ARRIVAL_AND_NOW)


@dataclass(frozen=True)
class WindowChange:
    """A window whose numbers a recompute changed."""

    window_start: datetime
    event_type: str
    revision: int  # 1: a new window; more: an amended one


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
            changed = len(recompute(conn, starts))
        with phase("publish"):
            closed = closed_now(conn, grace, idle, now)
            published = publish_closed(conn, publish, closed)
        batches.advance(conn, STEP, upto)
    return WindowsResult(after, upto, len(starts), changed, published, closed, phase)


def recompute(conn: psycopg.Connection, starts: list[datetime]) -> list[WindowChange]:
    """Recompute the windows starting at ``starts`` (every event type) from the validated
    events in them, in the caller's transaction; returns those whose numbers changed, each
    with its new revision (a window whose numbers stay keeps its revision)."""
    if not starts:
        return []
    params = {"width": WINDOW, "starts": starts}
    rows = [*conn.execute(_UPSERT, params), *conn.execute(_EMPTIED, params)]
    return [WindowChange(*row) for row in rows]


def closed_now(conn: psycopg.Connection, grace: timedelta = DEFAULT_GRACE,
               idle: timedelta = DEFAULT_IDLE, now: datetime | None = None) -> datetime | None:
    """``closed_before`` for the validated events so far (``now``: the database's clock)."""
    max_time, last_arrival, db_now = conn.execute(_FRONTIER).fetchone()
    return closed_before(max_time, grace, last_arrival, now or db_now, idle)


def publish_closed(conn: psycopg.Connection, publish: Publish, closed: datetime | None,
                   only: list[WindowChange] | None = None) -> int:
    """Publish the closed windows (of ``only``, when given) whose revision is not published
    yet, then mark them published, in the caller's transaction; returns how many."""
    if closed is None or only == []:
        return 0
    if only is None:
        rows = conn.execute(_TO_PUBLISH_ALL, {"closed": closed}).fetchall()
    else:
        rows = conn.execute(_TO_PUBLISH_ONLY, {
            "closed": closed, "starts": [w.window_start for w in only],
            "types": [w.event_type for w in only]}).fetchall()
    publish([(f"{r[0].isoformat()}|{r[2]}".encode(), orjson.dumps(_message(r))) for r in rows])
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE streamflow.event_windows SET published_revision = %s "
                "WHERE window_start = %s AND event_type = %s",
                [(r[8], r[0], r[2]) for r in rows])
    return len(rows)


def idle_close_in(conn: psycopg.Connection, idle: timedelta = DEFAULT_IDLE) -> timedelta | None:
    """For the sensor: None while no window waits to be published; otherwise the processing
    time until the idle rule closes them all (zero or less: a run now publishes them)."""
    first_end, last_arrival, now = conn.execute(_WAITING).fetchone()
    return None if first_end is None else idle_wait(last_arrival, now, idle)


def _validated_upto(conn: psycopg.Connection) -> int:
    """Windows never run ahead of the contract check (they read its output)."""
    return batches.watermark(conn, "notifications")


def _message(r: tuple) -> dict:
    (start, end, event_type, events, users, ok, failed, cents, revision) = r
    return {"window_start": contract.format_time(start), "window_end": contract.format_time(end),
            "event_type": event_type, "events": events, "distinct_users": users,
            "login_successes": ok, "login_failures": failed, "purchase_cents": cents,
            "revision": revision}
