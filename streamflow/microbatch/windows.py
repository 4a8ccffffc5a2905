"""10-second event-time tumbling windows over validated events.

Every window a batch touched is recomputed from streamflow.notifications, so a late event
amends its window; a window whose numbers change gets its revision bumped. A window is closed
once the event-time watermark (latest event time minus a grace period) has passed its end;
closed windows with a revision not yet published go to the `analytics` topic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
import psycopg

from streamflow import contract
from streamflow.microbatch import batch as batches
from streamflow.microbatch.phases import Phases

STEP = "event_windows"
WINDOW = timedelta(seconds=10)
WINDOW_SECONDS = int(WINDOW.total_seconds())
# How long after a window's end late events are still expected before it is published.
DEFAULT_GRACE = timedelta(seconds=10)


def closed_before(max_event_time: datetime | None, grace: timedelta) -> datetime | None:
    """Windows ending at or before this instant are closed."""
    return None if max_event_time is None else max_event_time - grace


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
"""

_TO_PUBLISH = """
    SELECT window_start, window_end, event_type, events, distinct_users, login_successes,
           login_failures, purchase_cents, revision
    FROM streamflow.event_windows
    WHERE window_end <= %(closed)s AND published_revision < revision
    ORDER BY window_start, event_type
"""


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
        grace: timedelta = DEFAULT_GRACE) -> WindowsResult:
    """Recompute windows for validated events after this step's watermark, in one transaction:

    1. Lock the step; find the windows touched by notifications in (watermark, upto].
    2. Recompute and upsert them; a window whose numbers change gets revision + 1.
    3. Publish closed windows with an unpublished revision to Kafka and flush.
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
        changed = 0
        with phase("recompute"):
            if starts:
                changed = conn.execute(_UPSERT, {"width": WINDOW, "starts": starts}).rowcount
        with phase("publish"):
            max_time = conn.execute(
                "SELECT max(occurred_at) FROM streamflow.notifications").fetchone()[0]
            closed = closed_before(max_time, grace)
            rows = conn.execute(_TO_PUBLISH, {"closed": closed}).fetchall() if closed else []
            publish([(f"{r[0].isoformat()}|{r[2]}".encode(), orjson.dumps(_message(r)))
                     for r in rows])
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "UPDATE streamflow.event_windows SET published_revision = %s "
                        "WHERE window_start = %s AND event_type = %s",
                        [(r[8], r[0], r[2]) for r in rows])
        batches.advance(conn, STEP, upto)
    return WindowsResult(after, upto, len(starts), changed, len(rows), closed, phase)


def _validated_upto(conn: psycopg.Connection) -> int:
    """Windows never run ahead of the contract check (they read its output)."""
    return batches.watermark(conn, "notifications")


def _message(r: tuple) -> dict:
    (start, end, event_type, events, users, ok, failed, cents, revision) = r
    return {"window_start": contract.format_time(start), "window_end": contract.format_time(end),
            "event_type": event_type, "events": events, "distinct_users": users,
            "login_successes": ok, "login_failures": failed, "purchase_cents": cents,
            "revision": revision}
