"""Has an event of the batch landed before, in another time partition of raw.events? The
sink asks before its fast COPY, under the ingest lock (docs/ARCHITECTURE.md, "One row per
event across partitions").

The partition the batch lands in (the one holding the transaction's ``now()``) needs no
look-up: its own unique index on event_id refuses a duplicate, and the COPY falls back to the
safe path. For the other partitions the producer's ids are UUIDv7, time-ordered: an id above
the newest id of every other partition cannot be in one, so a live batch usually needs one
index descent per partition in all instead of one per partition and event (and its
planning, which grows with both). Ids at or below it (a replay, a producer's own ids) are
looked for as before.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg

from streamflow.db import partitions
from streamflow.db.compose import statement
from streamflow.db.tables import events

# Every partition, the default one included: no partition holds now() (only the default).
ANY_LANDED = statement(
    "SELECT EXISTS (SELECT 1 FROM {e} WHERE {e.event_id} = ANY(%s::uuid[]))", e=events)
# Is now() still in the period, and the newest event id outside it: the bounds prune the
# period's partition; each other's is one backward index descent.
_NEWEST_ELSEWHERE = statement(
    "SELECT now() >= %(start)s AND now() < %(end)s, "
    "(SELECT x.{e.event_id}::text FROM {e} x "
    " WHERE x.{e.ingested_at} < %(start)s OR x.{e.ingested_at} >= %(end)s "
    " ORDER BY x.{e.event_id} DESC LIMIT 1)", e=events)
_LANDED_ELSEWHERE = statement(
    "SELECT EXISTS (SELECT 1 FROM {e} WHERE {e.event_id} = ANY(%(ids)s::uuid[]) "
    "AND ({e.ingested_at} < %(start)s OR {e.ingested_at} >= %(end)s))", e=events)
# Seconds between looks at the catalogue while no period partition holds now (rows go to the
# default partition until the lifecycle makes one): the full look-up is used meanwhile.
RECHECK_S = 10.0


class LandedBefore:
    """One writer's look-up, with the period partition rows land in now (from the catalogue,
    read outside the landing transaction: ``refresh``)."""

    def __init__(self) -> None:
        self.period: partitions.Period | None = None
        self._looked_at = -RECHECK_S

    def refresh(self, conn: psycopg.Connection, now: datetime | None = None) -> None:
        """Know the period partition holding ``now`` (its own transaction: call outside the
        landing's). Cheap when it is known already."""
        now = now or datetime.now(UTC)
        if self.period is not None and self.period.start <= now < self.period.end:
            return
        if self.period is None and time.monotonic() - self._looked_at < RECHECK_S:
            return
        self._looked_at = time.monotonic()
        self.period = next((p.period for p in partitions.partitions(conn, partitions.EVENTS)
                            if p.period.start <= now < p.period.end), None)

    def any(self, conn: psycopg.Connection, ids: list[str]) -> bool:
        """Has any of ``ids`` (lower-case UUID text, as the sink decodes them) landed in a
        partition other than the one this transaction lands in? A duplicate in that one
        fails the COPY instead. Inside the landing transaction, under the ingest lock."""
        if not ids:
            return False
        period = self.period
        if period is not None:
            bounds = {"start": period.start, "end": period.end}
            inside, newest = conn.execute(_NEWEST_ELSEWHERE, bounds).fetchone()
            if inside:
                # Lower-case canonical UUID text sorts as the uuids do.
                maybe = [] if newest is None else [i for i in ids if i <= newest]
                return bool(maybe) and conn.execute(
                    _LANDED_ELSEWHERE, bounds | {"ids": maybe}).fetchone()[0]
            self.period = None  # the clock moved past it: read the catalogue again
            self._looked_at = -RECHECK_S
        return conn.execute(ANY_LANDED, (ids,)).fetchone()[0]
