"""Time partitions of the tables that grow with every event (docs/ARCHITECTURE.md, "Storage
over time").

raw.events, raw.dead_letters and streamflow.notifications are partitioned by range on the
time a row was written (``Partitioned.key``), one partition per period of
STREAMFLOW_PARTITION_INTERVAL, aligned on the Unix epoch in UTC. Each also has a DEFAULT
partition, so a row never fails to land for want of a period's partition (migration 0011 made
the old table that default). ``ensure`` creates the periods ahead of time and moves any row the
default partition caught into its own period's partition (rows there raise an alert: see
``default_rows``). A table's unique keys are per partition (PostgreSQL allows no other without
the partition key): uniqueness across the hot horizon is the writers' NOT EXISTS (their
statements say so), under their locks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql
from sqlalchemy import Table

from streamflow.db import tables
from streamflow.db.compose import columns, table_name
from streamflow.errors import SettingsError

log = logging.getLogger("streamflow.partitions")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": _DAY}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
# How far ahead of now partitions exist: at least 3 periods and 2 hours (the lifecycle pass
# runs every period or hour, assets/lifecycle.py, so the default partition only catches rows
# once it has stopped for that long), but at most 12 periods: every partition is one more
# index the sink looks into for each event (streamflow.db.landing).
AHEAD_PERIODS = 3
AHEAD_AT_LEAST = timedelta(hours=2)
AHEAD_AT_MOST = 12


def ahead(interval: timedelta) -> timedelta:
    return min(max(AHEAD_PERIODS * interval, AHEAD_AT_LEAST), AHEAD_AT_MOST * interval)


def parse_duration(text: str, name: str) -> timedelta:
    """``5m``, ``1h``, ``7d``: minutes, hours or days (a clear error names the setting)."""
    match = _DURATION.match(str(text))
    if not match or int(match[1]) == 0:
        raise SettingsError(f"{name}={text!r}: expected a positive number of minutes, hours "
                            "or days, such as 5m, 1h or 7d")
    return int(match[1]) * _UNITS[match[2]]


def parse_interval(text: str, name: str = "STREAMFLOW_PARTITION_INTERVAL") -> timedelta:
    """A partition interval: minutes that divide an hour, hours that divide a day, or 1d, so
    that periods line up with hours and days and with a cron schedule (assets/lifecycle.py)."""
    interval = parse_duration(text, name)
    hour = timedelta(hours=1)
    tiles = (_DAY % interval == timedelta(0) and (
        hour % interval == timedelta(0) if interval < hour else interval % hour == timedelta(0)))
    if not tiles:
        raise SettingsError(f"{name}={text!r}: a partition interval is minutes that divide an "
                            "hour (5m, 15m, 30m), hours that divide a day (1h, 6h, 12h), or 1d")
    return interval


@dataclass(frozen=True)
class Period:
    """One partition's time range [start, end), UTC."""

    start: datetime
    end: datetime

    @classmethod
    def holding(cls, at: datetime, interval: timedelta) -> Period:
        start = at - (at - _EPOCH) % interval
        return cls(start, start + interval)

    @property
    def key(self) -> str:
        """The period's name: in partition names, archive folders and Dagster's partition
        keys alike (``2026-12-07`` for a day, ``2026-12-07T14-05`` within one)."""
        if self.end - self.start >= _DAY and self.start.time() == datetime.min.time():
            return self.start.strftime("%Y-%m-%d")
        return self.start.strftime("%Y-%m-%dT%H-%M")

    @classmethod
    def from_key(cls, key: str, interval: timedelta) -> Period:
        fmt = "%Y-%m-%d" if len(key) == 10 else "%Y-%m-%dT%H-%M"
        start = datetime.strptime(key, fmt).replace(tzinfo=UTC)
        return cls(start, start + interval)

    def __str__(self) -> str:
        return self.key


def periods(start: datetime, end: datetime, interval: timedelta) -> Iterator[Period]:
    """The periods from the one holding ``start`` up to the one holding ``end``."""
    period = Period.holding(start, interval)
    while period.start <= end:
        yield period
        period = Period(period.end, period.end + interval)


@dataclass(frozen=True)
class Partitioned:
    """A time-partitioned table: its time column, and the unique keys each partition keeps
    (the table-wide ones it had before partitioning)."""

    table: Table
    key: str
    unique: tuple[tuple[str, ...], ...]
    # The short name DuckDB's archive views and `streamflow archive` use.
    short: str
    # The column naming a row, whose checksum verifies an archived period (streamflow.archive).
    ids: str

    @property
    def name(self) -> str:
        return self.table.fullname  # schema.table: the archive's folder too

    @property
    def default_name(self) -> str:
        return f"{self.table.name}_default"

    def partition_name(self, period: Period) -> str:
        return f"{self.table.name}_p{period.key.replace('-', '')}".lower()

    def period_of(self, name: str, interval: timedelta) -> Period | None:
        """The period a partition's name stands for (None: not one of this table's)."""
        match = re.fullmatch(rf"{self.table.name}_p(\d{{8}})(?:t(\d{{4}}))?", name)
        if not match:
            return None
        start = datetime.strptime(match[1] + (match[2] or "0000"), "%Y%m%d%H%M")
        return Period(start.replace(tzinfo=UTC), start.replace(tzinfo=UTC) + interval)


EVENTS = Partitioned(tables.events, "ingested_at", (("event_id",),), "events", "event_id")
DEAD_LETTERS = Partitioned(tables.dead_letters, "created_at",
                           (("id",), tables.DEAD_LETTER_SOURCE), "dead_letters", "id")
NOTIFICATIONS = Partitioned(tables.notifications, "validated_at", (("event_id",),),
                            "notifications", "event_id")
# dbt builds it (partitioned by its post-hook): skipped until it exists (``is_partitioned``).
FCT_EVENTS = Partitioned(tables.fct_events, "validated_at", (("event_id",),), "fct_events",
                         "event_id")
# The mart before the notifications it is loaded from: a pass that drops one period of both
# never leaves a mart row whose notification is gone.
TABLES = (EVENTS, DEAD_LETTERS, FCT_EVENTS, NOTIFICATIONS)


def by_name(name: str) -> Partitioned:
    for spec in TABLES:
        if name in (spec.name, spec.short):
            return spec
    raise KeyError(f"not a partitioned table: {name!r} (one of "
                   f"{', '.join(s.name for s in TABLES)})")


@dataclass(frozen=True)
class Partition:
    name: str
    period: Period


_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
_PARTITIONS = """
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = %s::regclass
"""


def partitions(conn: psycopg.Connection, spec: Partitioned) -> list[Partition]:
    """The table's period partitions (not the default one), oldest first."""
    found = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")  # the bounds' text, parsed below
        for name, bound in cur.execute(_PARTITIONS, (spec.name,)).fetchall():
            match = _BOUND.search(bound)
            if match:
                start, end = (datetime.fromisoformat(b).astimezone(UTC) for b in match.groups())
                found.append(Partition(name, Period(start, end)))
    return sorted(found, key=lambda p: p.period.start)


_DETACHED = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relkind = 'r' AND NOT c.relispartition AND c.relname LIKE %s
"""


def detached(conn: psycopg.Connection, spec: Partitioned) -> list[str]:
    """Period tables of ``spec`` not attached: a lifecycle pass stopped between its detach
    and its drop (streamflow.lifecycle) left them; their rows are not lost."""
    pattern = spec.table.name.replace("_", r"\_") + r"\_p%"
    return [name for (name,) in conn.execute(_DETACHED, (spec.table.schema, pattern))]


def is_partitioned(conn: psycopg.Connection, spec: Partitioned) -> bool:
    """Is the table there, partitioned? (dbt makes marts.fct_events on its first build.)"""
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                       (spec.name,)).fetchone()
    return row is not None and row[0] == "p"


def default_rows(conn: psycopg.Connection, spec: Partitioned) -> int:
    """Rows the default partition caught: each is an alert (no period's partition was there
    for it; the next ``ensure`` moves it to one)."""
    query = sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(spec.table.schema, spec.default_name))
    return conn.execute(query).fetchone()[0]


@dataclass(frozen=True)
class Ensured:
    created: list[str]
    moved: int  # rows taken out of the default partition into their period's


def ensure_all(url: str, interval: timedelta, now: datetime | None = None) -> dict[str, Ensured]:
    """``ensure`` every partitioned table (after each migration and each lifecycle pass)."""
    from streamflow.db.engine import connect_admin

    now = now or datetime.now(UTC)
    with connect_admin(url, "streamflow-partitions") as conn:
        return {spec.name: ensure(conn, spec, interval, now) for spec in TABLES}


def ensure(conn: psycopg.Connection, spec: Partitioned, interval: timedelta,
           now: datetime, *, periods_wanted: Iterable[Period] = ()) -> Ensured:
    """Create the partitions from the current period to ``AHEAD`` past ``now``, those of
    ``periods_wanted``, and those of any row in the default partition (moved there). Each
    partition is created in its own transaction, so a landing waits at most for one
    (``conn`` in autocommit mode)."""
    if not is_partitioned(conn, spec):
        return Ensured([], 0)
    wanted = {*periods(now, now + ahead(interval), interval), *periods_wanted}
    for start in _default_periods(conn, spec, interval):
        wanted.add(Period.holding(start, interval))
    have = partitions(conn, spec)
    created, moved = [], 0
    for period in sorted(wanted, key=lambda p: p.start):
        if any(p.period.start < period.end and period.start < p.period.end for p in have):
            continue  # an existing partition covers it (the interval may have changed)
        moved += _create(conn, spec, period)
        created.append(spec.partition_name(period))
    if moved:
        log.warning("%s: moved %d rows from its default partition into their periods' "
                    "partitions", spec.name, moved)
    return Ensured(created, moved)


def _default_periods(conn: psycopg.Connection, spec: Partitioned,
                     interval: timedelta) -> list[datetime]:
    """The start of each period some row in the default partition falls in."""
    query = sql.SQL(
        "SELECT DISTINCT to_timestamp(floor(extract(epoch FROM {key}) / %s) * %s) "
        "FROM {default}").format(key=sql.Identifier(spec.key),
                                 default=sql.Identifier(spec.table.schema, spec.default_name))
    seconds = interval.total_seconds()
    return [row[0] for row in conn.execute(query, (seconds, seconds)).fetchall()]


def _create(conn: psycopg.Connection, spec: Partitioned, period: Period) -> int:
    """Create one period's partition: a plain table first (its unique keys, any rows of its
    period taken out of the default partition), then attached, all in one transaction, so
    the default partition never holds a row the new partition's range covers."""
    schema, parent = spec.table.schema, table_name(spec.table)
    part = sql.Identifier(schema, spec.partition_name(period))
    default = sql.Identifier(schema, spec.default_name)
    cols = columns(spec.table)
    in_period = sql.SQL("{key} >= %(start)s AND {key} < %(end)s").format(
        key=sql.Identifier(spec.key))
    bounds = {"start": period.start, "end": period.end}
    with conn.transaction():
        conn.execute(sql.SQL("CREATE TABLE {part} (LIKE {parent} INCLUDING DEFAULTS)").format(
            part=part, parent=parent))
        moved = conn.execute(sql.SQL(
            "WITH moved AS (DELETE FROM {default} WHERE {in_period} RETURNING {cols}) "
            "INSERT INTO {part} ({cols}) SELECT {cols} FROM moved").format(
                default=default, in_period=in_period, cols=cols, part=part), bounds).rowcount
        for key in spec.unique:
            conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {part} ({cols})").format(
                part=part, cols=columns(spec.table, key)))
        conn.execute(sql.SQL(
            "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ({start}) TO ({end})"
        ).format(parent=parent, part=part, start=sql.Literal(period.start),
                 end=sql.Literal(period.end)))
    return moved
