"""Storage over time in Dagster (docs/ARCHITECTURE.md, "Storage over time"): the archive as
time-partitioned assets (one Dagster partition per table partition: the UI shows what is
archived, a backfill archives again any period still in PostgreSQL), the lifecycle job that
verifies and drops periods past retention (streamflow.lifecycle), and a check per table that
it keeps up.

The partitions follow STREAMFLOW_PARTITION_INTERVAL, so they are built from the settings when
the definitions load (``lifecycle_defs``).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.lineage import DROPPED_PERIODS, RAW_DEAD_LETTERS, RAW_EVENTS
from resources import PostgresResource
from streamflow import lifecycle
from streamflow.archive import archive_checksum, archive_period
from streamflow.db import partitions, tables
from streamflow.db.partitions import Partitioned, Period
from streamflow.settings import Settings

GROUP = "archive"
LIFECYCLE_JOB = "lifecycle"
ARCHIVE_JOB = "archive_periods"
LIFECYCLE_CHECKS_JOB = "lifecycle_checks"
_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
# The table each lifecycle check is about, as its own asset.
_TABLE_ASSETS = {partitions.EVENTS.name: RAW_EVENTS, partitions.DEAD_LETTERS.name: RAW_DEAD_LETTERS,
                 partitions.NOTIFICATIONS.name: dg.AssetKey("notifications"),
                 partitions.FCT_EVENTS.name: dg.AssetKey(["dbt", "fct_events"])}


def cron_for(interval: timedelta) -> str:
    """The cron schedule whose ticks are the period boundaries (intervals divide a day)."""
    minutes = int(interval.total_seconds() // 60)
    if interval >= _DAY:
        return "0 0 * * *"
    if minutes % 60 == 0:
        return "0 * * * *" if minutes == 60 else f"0 */{minutes // 60} * * *"
    return f"*/{minutes} * * * *"


def periods_definition(interval: timedelta, oldest: timedelta,
                       now: datetime | None = None) -> dg.TimeWindowPartitionsDefinition:
    """Dagster's partitions for the periods: keys are ``Period.key``; they start a day
    before the oldest period any table still keeps hot."""
    now = now or datetime.now(UTC)
    start = Period.holding(now - oldest - _DAY, _DAY).start
    fmt = "%Y-%m-%d" if interval >= _DAY else "%Y-%m-%dT%H-%M"
    return dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron_for(interval), start=start.strftime(fmt), fmt=fmt, timezone="UTC")


def archive_key(spec: Partitioned) -> dg.AssetKey:
    return dg.AssetKey(["archive", spec.short])


@dataclass(frozen=True)
class LifecycleDefs:
    assets: list  # the archive's assets and the dropped periods' spec
    checks: list[dg.AssetChecksDefinition]
    jobs: list  # job definitions, resolved or not
    schedules: list[dg.ScheduleDefinition]


def lifecycle_defs(settings: Settings) -> LifecycleDefs:
    interval = settings.partition_period
    url = settings.archive_location
    oldest = max(settings.retention(), settings.retention(dead_letters=True))
    periods = periods_definition(interval, oldest)

    @dg.multi_asset(
        specs=[dg.AssetSpec(archive_key(spec), group_name=GROUP, kinds={"parquet"},
                            deps=[_TABLE_ASSETS[spec.name]], partitions_def=periods,
                            description=f"{spec.name}'s periods as Parquet under the archive "
                                        "(STREAMFLOW_ARCHIVE_URL).")
               for spec in partitions.TABLES],
        can_subset=True, partitions_def=periods)
    def archive(context: dg.AssetExecutionContext, postgres: PostgresResource):
        period = Period.from_key(context.partition_key, interval)
        for key in sorted(context.selected_asset_keys):
            spec = partitions.by_name(key.path[-1])
            yield _archive_one(postgres, spec, period, url, key)

    archive_job = dg.define_asset_job(
        ARCHIVE_JOB, selection=dg.AssetSelection.assets(archive), partitions_def=periods,
        executor_def=dg.in_process_executor,
        description="Archive one period of every partitioned table to Parquet.")

    @dg.op(description="Partitions made ahead; closed periods archived; periods past "
                       "retention verified against the archive and dropped.")
    def lifecycle_pass(context: dg.OpExecutionContext, postgres: PostgresResource) -> None:
        report = lifecycle.run_configured(settings, postgres.database_url,
                                          echo=context.log.info)
        for table, rows in report.default_rows.items():
            if rows:
                context.log.warning(f"{table}: the default partition had caught {rows} rows")
        if report.failures:
            raise dg.Failure("; ".join(str(s) for s in report.failures))

    @dg.job(name=LIFECYCLE_JOB, executor_def=dg.in_process_executor,
            description="The lifecycle pass (`streamflow lifecycle run` does the same).")
    def lifecycle_job() -> None:
        lifecycle_pass()

    checks = [_on_time_check(spec, settings) for spec in partitions.TABLES]
    checks_job = dg.define_asset_job(
        LIFECYCLE_CHECKS_JOB, selection=dg.AssetSelection.checks(*checks),
        executor_def=dg.in_process_executor, description="The lifecycle's checks.")
    every = cron_for(min(interval, _HOUR))
    dropped = dg.AssetSpec(
        DROPPED_PERIODS, group_name=GROUP, kinds={"postgres"},
        description=f"The periods the lifecycle job archived, verified and dropped "
                    f"({tables.dropped_periods.fullname}): the marts and windows do not "
                    "recount them.")
    return LifecycleDefs(
        assets=[archive, dropped], checks=checks, jobs=[archive_job, lifecycle_job, checks_job],
        schedules=[
            dg.ScheduleDefinition(job=checks_job, cron_schedule=every,
                                  default_status=dg.DefaultScheduleStatus.RUNNING),
            dg.build_schedule_from_partitioned_job(
                archive_job, default_status=dg.DefaultScheduleStatus.RUNNING),
            dg.ScheduleDefinition(job=lifecycle_job, cron_schedule=every,
                                  default_status=dg.DefaultScheduleStatus.RUNNING),
        ])


def _archive_one(postgres: PostgresResource, spec: Partitioned, period: Period, url: str,
                 key: dg.AssetKey) -> dg.MaterializeResult:
    name = spec.partition_name(period)
    with postgres.connect() as conn:
        hot = partitions.is_partitioned(conn, spec) and any(
            p.name == name for p in partitions.partitions(conn, spec))
        if hot:
            done = archive_period(conn, spec, period, url,
                                  relation=f"{spec.table.schema}.{name}")
            return dg.MaterializeResult(asset_key=key, metadata={
                "rows": done.rows, "bytes": done.bytes,
                "bytes_per_row": round(done.bytes_per_row, 1), "path": done.path})
    kept = archive_checksum(url, spec, period)
    return dg.MaterializeResult(asset_key=key, metadata={
        "rows": kept.rows if kept else 0,
        "note": "dropped from PostgreSQL: its archive stands" if kept
        else "no partition of this period in PostgreSQL, nothing archived"})


def _on_time_check(spec: Partitioned, settings: Settings) -> dg.AssetChecksDefinition:
    retention = settings.retention(dead_letters=spec is partitions.DEAD_LETTERS)
    # One lifecycle pass may be due and one busy: past that, drops are not keeping up.
    slack = 2 * min(settings.partition_period, _HOUR) + settings.partition_period

    @dg.asset_check(asset=_TABLE_ASSETS[spec.name], name="kept_within_retention",
                    description=f"{spec.name}: no period older than its retention still in "
                                "PostgreSQL, none left detached, none caught by the default "
                                "partition.")
    def kept_within_retention(postgres: PostgresResource) -> dg.AssetCheckResult:
        now = datetime.now(UTC)
        with postgres.connect() as conn:
            if not partitions.is_partitioned(conn, spec):
                return dg.AssetCheckResult(passed=True, metadata={"partitioned": False})
            hot = partitions.partitions(conn, spec)
            detached = partitions.detached(conn, spec)
            caught = partitions.default_rows(conn, spec)
        overdue = [p.period.key for p in hot if p.period.end <= now - retention - slack]
        return dg.AssetCheckResult(
            passed=not overdue and not detached and not caught,
            metadata={"overdue": ", ".join(overdue) or "none",
                      "detached": ", ".join(detached) or "none", "default_rows": caught,
                      "oldest_hot": hot[0].period.key if hot else "none"})

    return kept_within_retention
