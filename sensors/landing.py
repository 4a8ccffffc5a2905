"""The landing sensor: what the sink landed, reported as materializations of the external
assets raw/events and raw/dead_letters.

The sink, not Dagster, writes these tables, so Dagster learns of new rows only when something
reports them; Dagster's docs for external assets: a sensor returns the events in its
SensorResult (the daemon records them), or a client calls the REST API. Unreported, the dbt
models built only from them (stg_events, stg_dead_letters, fct_dead_letters_daily) never saw
an upstream update, and their on_cron condition, which waits for every dependency to update
after the cron tick, never fired. Materializations, not observations: these are plain
external AssetSpecs, and declarative automation counts an observation as an update only for
observable source assets.

Per table: the newest row by its sequence (an index lookup) and a count over the range new
since the last report. The cursor holds what was reported; the first evaluation reports what
is there, empty tables included, so a fresh stack builds every model before a dead letter
exists. Like every sensor here it reads PostgreSQL only, never Kafka.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import psycopg
from psycopg import sql
from sqlalchemy import Table

from assets.lineage import RAW_DEAD_LETTERS, RAW_EVENTS
from resources import PostgresResource
from streamflow.db import tables
from streamflow.db.compose import column, statement

# Seconds between evaluations. The dbt models build at most every 5 minutes (on_cron), so a
# cron tick waits at most a minute for the report it needs; faster reports would only grow
# Dagster's event log (two small events a minute while data flows, none while it does not).
INTERVAL_S = 60


@dataclass(frozen=True)
class LandingTable:
    """A table the sink writes, with the column that orders it and the landing time."""

    asset: dg.AssetKey
    table: Table
    seq: str  # commit-ordered for raw.events; allocation-ordered for raw.dead_letters
    landed_at: str


TABLES = (
    LandingTable(RAW_EVENTS, tables.events, "ingest_seq", "ingested_at"),
    LandingTable(RAW_DEAD_LETTERS, tables.dead_letters, "id", "created_at"),
)


def _statements(landing: LandingTable) -> tuple[sql.Composed, sql.Composed]:
    """The newest row by seq, and the count of rows with seq in (%s, %s]."""
    names = {"t": landing.table, "seq": column(landing.table, landing.seq),
             "at": column(landing.table, landing.landed_at)}
    return (statement("SELECT {seq}, {at} FROM {t} ORDER BY {seq} DESC LIMIT 1", **names),
            statement("SELECT count(*) FROM {t} WHERE {seq} > %s AND {seq} <= %s", **names))


# Composed once, at import: a column renamed in streamflow/db/tables.py fails here.
_STATEMENTS = {landing.asset: _statements(landing) for landing in TABLES}


@dataclass(frozen=True)
class Landed:
    """What one table holds past the last report: rows with seq in (after, upto]."""

    table: LandingTable
    after: int | None  # None: never reported
    upto: int
    rows: int
    newest_at: datetime | None

    @property
    def new(self) -> bool:
        return self.after is None or self.upto > self.after

    def materialization(self) -> dg.AssetMaterialization:
        metadata = {f"{self.table.seq}_range": f"({self.after or 0}, {self.upto}]",
                    "rows": self.rows}
        if self.newest_at is not None:
            metadata["newest_landed_at"] = dg.MetadataValue.timestamp(self.newest_at)
        return dg.AssetMaterialization(
            asset_key=self.table.asset, metadata=metadata,
            description=f"Landed by the sink into {self.table.table.fullname}, "
                        f"reported by the landing sensor.")


def landed(conn: psycopg.Connection, table: LandingTable, after: int | None) -> Landed:
    newest_of, count_of = _STATEMENTS[table.asset]
    newest = conn.execute(newest_of).fetchone()
    upto, newest_at = newest if newest else (0, None)
    if after is not None and upto < after:
        after = None  # the table was emptied or made anew: report it as if for the first time
    # raw.dead_letters ids are allocated before their transactions commit, so one committing
    # late under a lower id is in no report's count (the table and dbt still have it).
    (rows,) = conn.execute(count_of, (after or 0, upto)).fetchone()
    return Landed(table, after, upto, rows, newest_at)


def evaluate(cursor: str | None, postgres: PostgresResource) -> dg.SensorResult | dg.SkipReason:
    reported: dict[str, int] = json.loads(cursor) if cursor else {}
    with postgres.connect() as conn:
        found = [landed(conn, t, reported.get(t.asset.to_user_string())) for t in TABLES]
    new = [f for f in found if f.new]
    if not new:
        return dg.SkipReason("nothing new landed: " + ", ".join(
            f"{f.table.asset.to_user_string()} up to {f.table.seq} {f.upto}" for f in found))
    return dg.SensorResult(
        asset_events=[f.materialization() for f in new],
        cursor=json.dumps({f.table.asset.to_user_string(): f.upto for f in found}))


@dg.sensor(minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Reports what the sink landed in {tables.events.fullname} and "
                       f"{tables.dead_letters.fullname} as materializations of those external "
                       "assets (their dbt models wait on them).")
def landing_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    return evaluate(context.cursor, postgres)
