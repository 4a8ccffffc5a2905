"""The lifecycle pass (docs/ARCHITECTURE.md, "Storage over time"): time partitions made
ahead, each closed period archived to Parquet, and each period past its retention detached,
verified against its archive, and only then dropped.

Detaching first takes the period out of every writer's way in one short lock (waited for at
most ``DETACH_LOCK_TIMEOUT``, else tried again at the next pass); the verification and the
drop then work on a table no one writes to. A detached table whose archive does not match is
merged into it, keeping every row the archive held (``archive.merging``); if that fails it is
attached back (or, should
the default partition have caught rows of its period meanwhile, left detached, with its rows)
and the pass reports a failure. A pass stopped between detach and drop leaves a detached
table, which the next pass finishes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from streamflow.archive import archive_period, open_location, verify
from streamflow.archive.merging import merge_into_archive
from streamflow.db import partitions, tables
from streamflow.db.compose import statement
from streamflow.db.engine import connect_admin
from streamflow.db.partitions import Partition, Partitioned, Period
from streamflow.microbatch import batch as batches
from streamflow.microbatch import notifications, windows
from streamflow.settings import Settings

log = logging.getLogger("streamflow.lifecycle")

# A period is archived once it has been closed this long: a transaction that began before its
# end (the time key is the transaction's start) has committed by then. A later straggler is
# caught by the verification before the drop.
GRACE = timedelta(minutes=1)
# How long a detach waits for its lock: it needs the parent table alone for a moment, and
# every landing queued behind it waits as long (the sink's produce-to-row latency).
DETACH_LOCK_TIMEOUT = "500ms"
DETACH_TRIES = 10
DETACH_PAUSE_S = 1.0
# How long a detach waits for the writers it holds off (a micro-batch chunk's transaction,
# a landing) before it tries again later; they queue behind it meanwhile.
QUIESCE_TIMEOUT = "10s"


_RECORD_DROP = statement(
    "INSERT INTO {d} ({d.table_name}, {d.period_start}, {d.period_end}, {d.rows}, {d.checksum}) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT ({d.table_name}, {d.period_start}) DO UPDATE SET "
    "{d.rows} = EXCLUDED.{d.rows}, {d.checksum} = EXCLUDED.{d.checksum}, {d.dropped_at} = now()",
    d=tables.dropped_periods)


@dataclass(frozen=True)
class Step:
    table: str
    period: str
    action: str      # made | archived | dropped | kept | busy | failed
    rows: int = 0
    bytes: int = 0
    detail: str = ""

    def __str__(self) -> str:
        counts = f" ({self.rows} rows, {self.bytes} bytes)" if self.action == "archived" else (
            f" ({self.rows} rows)" if self.rows else "")
        return f"{self.table} {self.period}: {self.action}{counts}" + (
            f": {self.detail}" if self.detail else "")


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)
    # Rows each table's default partition had caught (an alert: no period partition was there
    # for them; this pass moved them into one).
    default_rows: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.action == "failed"]

    def count(self, action: str) -> int:
        return sum(1 for s in self.steps if s.action == action)


def run_configured(settings: Settings, database_url: str, *, now: datetime | None = None,
                   echo: Callable[[str], None] = lambda line: None) -> Report:
    """A pass with the settings' interval, retentions and archive (the CLI's and Dagster's)."""
    return run_pass(database_url, settings.archive_location, settings.partition_period,
                    lambda spec: settings.retention(dead_letters=spec is partitions.DEAD_LETTERS),
                    now=now, echo=echo)


def run_pass(database_url: str, archive_url: str, interval: timedelta,
             retention: Callable[[Partitioned], timedelta], *, now: datetime | None = None,
             tables: Sequence[Partitioned] = partitions.TABLES,
             echo: Callable[[str], None] = lambda line: None) -> Report:
    """One pass over ``tables``: make, archive, verify and drop as due at ``now``."""
    now = now or datetime.now(UTC)
    report = Report()

    def step(s: Step) -> None:
        report.steps.append(s)
        (log.error if s.action == "failed" else log.info)("%s", s)
        echo(str(s))

    with connect_admin(database_url, "streamflow-lifecycle") as conn:
        for spec in tables:
            if not partitions.is_partitioned(conn, spec):
                continue  # marts.fct_events before dbt's first build
            ensured = partitions.ensure(conn, spec, interval, now)
            for name in ensured.created:
                step(Step(spec.name, name, "made"))
            report.default_rows[spec.name] = ensured.moved + partitions.default_rows(conn, spec)
            cutoff = now - retention(spec)
            for name in partitions.detached(conn, spec):
                period = spec.period_of(name, interval)
                if period is not None:
                    step(_finish(conn, spec, name, period, archive_url))
            for part in partitions.partitions(conn, spec):
                if part.period.end <= cutoff:
                    needed = _still_needed(conn, spec, part)
                    step(Step(spec.name, part.period.key, "kept", detail=needed) if needed
                         else _drop(conn, spec, part, archive_url))
                elif part.period.end <= now - GRACE and not _archived(archive_url, spec,
                                                                       part.period):
                    done = archive_period(conn, spec, part.period, archive_url,
                                          relation=_qualified(spec, part.name))
                    step(Step(spec.name, part.period.key, "archived", done.rows, done.bytes))
    return report


# What reads a period's rows after they land: the contract step reads raw.events by
# ingest_seq, the windows step and dbt's fct_events read notifications by ingest_seq, and
# dbt's relationships test wants every hot notification's raw event hot (notifications are
# validated after their events land, often in the next period).
_FIRST_HOT_NOTIFICATION = statement("SELECT min({n.ingest_seq}) FROM {n}", n=tables.notifications)
_LOADED_MART = statement("SELECT coalesce(max({f.ingest_seq}), 0) FROM {f}", f=tables.fct_events)


def _still_needed(conn: psycopg.Connection, spec: Partitioned, part: Partition) -> str:
    """Why a period past its retention must stay hot a while longer ("" if it need not):
    its rows not yet read by the steps that read them, or (raw.events) notifications of its
    events still hot. Index look-ups only (docs/ARCHITECTURE.md, "Storage over time")."""
    if spec not in (partitions.EVENTS, partitions.NOTIFICATIONS):
        return ""
    (last,) = conn.execute(statement("SELECT max({t.ingest_seq}) FROM {part}", t=spec.table,
                                     part=sql.Identifier(spec.table.schema, part.name))
                           ).fetchone()
    if last is None:
        return ""
    step, reader = ((notifications.STEP, "the contract step") if spec is partitions.EVENTS
                    else (windows.STEP, "the windows step"))
    read = batches.watermark(conn, step)
    if read < last:
        return f"{reader} has read up to ingest_seq {read}, the period up to {last}"
    if spec is partitions.EVENTS:
        (first,) = conn.execute(_FIRST_HOT_NOTIFICATION).fetchone()
        if first is not None and first <= last:
            return "notifications of its events are still hot (dropped first)"
    elif partitions.is_partitioned(conn, partitions.FCT_EVENTS):
        (loaded,) = conn.execute(_LOADED_MART).fetchone()
        if loaded < last:
            return f"dbt's fct_events has loaded up to ingest_seq {loaded}, the period up to {last}"
    return ""


def _qualified(spec: Partitioned, name: str) -> str:
    return f"{spec.table.schema}.{name}"


def _archived(archive_url: str, spec: Partitioned, period: Period) -> bool:
    location = open_location(archive_url)
    return location.fs.exists(location.data_path(spec.name, period.key))


def _drop(conn: psycopg.Connection, spec: Partitioned, part: Partition,
          archive_url: str) -> Step:
    if not _detach(conn, spec, part.name):
        return Step(spec.name, part.period.key, "busy",
                    detail="the table was in use; the next pass tries again")
    return _finish(conn, spec, part.name, part.period, archive_url)


def _detach(conn: psycopg.Connection, spec: Partitioned, name: str) -> bool:
    """Detach a period from its table. DETACH needs the table to itself for a moment, and it
    cannot have it while any transaction uses the table (they hold it until they end), nor
    while it waits in line (every newcomer queues behind it). So first the writers are held
    off at their own locks, where they wait holding nothing of the table: the micro-batch's
    transactions (``LIFECYCLE_LOCK``, taken alone: it waits for those running), then the
    sinks' landings (the ingest lock), or the windows step for the tables it reads; then the
    DETACH waits ``DETACH_LOCK_TIMEOUT`` at most for brief readers. Tried again after a
    pause, ``DETACH_TRIES`` times, then left for the next pass."""
    statement = sql.SQL("ALTER TABLE {parent} DETACH PARTITION {part}").format(
        parent=sql.Identifier(spec.table.schema, spec.table.name),
        part=sql.Identifier(spec.table.schema, name))
    for attempt in range(DETACH_TRIES):
        if attempt:
            time.sleep(DETACH_PAUSE_S)
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (QUIESCE_TIMEOUT,))
                _hold_off_writers(conn, spec)
                conn.execute("SELECT set_config('lock_timeout', %s, true)",
                             (DETACH_LOCK_TIMEOUT,))
                conn.execute(statement)
            return True
        except psycopg.errors.LockNotAvailable:
            continue
    return False


def _hold_off_writers(conn: psycopg.Connection, spec: Partitioned) -> None:
    """Take, in this order, the locks that hold off whoever writes (or reads for long)
    ``spec``'s table: the micro-batch's transactions first, then the sinks' landings or the
    windows step. (marts.fct_events: dbt's builds, every few minutes, are waited out.)"""
    if spec in (partitions.EVENTS, partitions.DEAD_LETTERS, partitions.NOTIFICATIONS):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (tables.LIFECYCLE_LOCK,))
    if spec in (partitions.EVENTS, partitions.DEAD_LETTERS):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (tables.INGEST_SEQ_LOCK,))
    elif spec is partitions.NOTIFICATIONS:
        batches.lock(conn, windows.STEP)


def _finish(conn: psycopg.Connection, spec: Partitioned, name: str, period: Period,
            archive_url: str) -> Step:
    """A detached period table: verified against its archive (brought into it if they
    differ, losing nothing the archive held: ``merge_into_archive``), then dropped; kept, and
    attached back, when the archive cannot be made to hold it."""
    relation = _qualified(spec, name)
    try:
        checked = verify(conn, spec, period, archive_url, relation=relation)
        if checked.ok and spec is partitions.DEAD_LETTERS:
            # The same dead letters, but replays since the archive changed their replay
            # counts: the file is written again from the table, which holds every one of them.
            archive_period(conn, spec, period, archive_url, relation=relation)
            checked = verify(conn, spec, period, archive_url, relation=relation)
        problem = "" if checked.ok else merge_into_archive(
            conn, spec, period, archive_url, relation).reason
    except Exception as exc:  # noqa: BLE001 - any archive failure keeps the rows
        problem = f"archive failed: {exc}"
    if problem:
        return Step(spec.name, period.key, "failed", detail=problem + _attach_back(
            conn, spec, name, period))
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(spec.table.schema, name)))
        conn.execute(_RECORD_DROP, (spec.name, period.start, period.end, checked.db.rows,
                                    checked.db.sum))
    return Step(spec.name, period.key, "dropped", checked.db.rows)


def _attach_back(conn: psycopg.Connection, spec: Partitioned, name: str,
                 period: Period) -> str:
    try:
        conn.execute(sql.SQL(
            "ALTER TABLE {parent} ATTACH PARTITION {part} FOR VALUES FROM ({start}) TO ({end})"
        ).format(parent=sql.Identifier(spec.table.schema, spec.table.name),
                 part=sql.Identifier(spec.table.schema, name),
                 start=sql.Literal(period.start), end=sql.Literal(period.end)))
        return "; the partition is kept"
    except psycopg.Error as exc:
        return f"; kept detached as {_qualified(spec, name)} ({exc.diag.message_primary})"
