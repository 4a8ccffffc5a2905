"""Event retention: what Dagster never deletes by itself, deleted by age by the
`dagster_retention` job (docs/ARCHITECTURE.md "Dagster's storage").

Dagster 1.13's instance `retention:` covers ticks only, and `delete_run` (assets/retention.py)
leaves everything that has no run: the Kafka-topics sensor's observations (4 every 30 s), the
landing sensor's reported materializations, freshness changes, and the asset-check executions
(the checks job's rows outlive their deleted runs). Here they go by age, keeping what the UI
shows: per asset, type and partition the newest runless event; per check and partition the
newest execution and the newest completed one.

Dagster has no API for this: these are its own tables (``event_logs``, ``asset_event_tags``,
``asset_check_executions``) through its own SQLAlchemy definitions, on SQLite (run-sharded:
runless events live in ``history/runs/.db`` and are mirrored, under other ids, into
``index.db``) and on PostgreSQL (one database). tests/unit/test_event_retention.py fails by name
if an upgrade moves them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as db
from dagster._core.events import DagsterEventType
from dagster._core.instance import RUNLESS_RUN_ID  # == "" (dagster/_core/instance/utils.py)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as CHECKS
from dagster._core.storage.event_log.schema import AssetEventTagsTable as TAGS
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable as EVENTS
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.schedules.schema import AssetDaemonAssetEvaluationsTable as EVALUATIONS
from dagster._core.storage.schedules.sql_schedule_storage import SqlScheduleStorage

ASSET_EVENT_TYPES = (
    DagsterEventType.ASSET_OBSERVATION.value,
    DagsterEventType.ASSET_MATERIALIZATION.value,
    # runless too; get_freshness_state_records reads only the newest one per asset
    DagsterEventType.FRESHNESS_STATE_CHANGE.value,
)
CHECK_EVENT_TYPES = (
    DagsterEventType.ASSET_CHECK_EVALUATION.value,
    DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
)
COMPLETED = (AssetCheckExecutionRecordStatus.SUCCEEDED.value,
             AssetCheckExecutionRecordStatus.FAILED.value)


def naive_utc(when: datetime) -> datetime:
    """The columns hold naive UTC datetimes (SqlEventLogStorage._event_insert_timestamp)."""
    if when.tzinfo is None:
        raise ValueError("cutoff must be timezone-aware")
    return when.astimezone(UTC).replace(tzinfo=None)


# Runless events and check executions older than this go (the newest of each kept): two days
# of the Kafka-topics sensor is ~23,000 observations, enough to look back on yesterday.
EVENT_AGE = timedelta(days=2)
# Rows per delete: one short transaction each, so the sensors writing meanwhile wait little.
BATCH = 1_000


@dataclass
class EventPurge:
    events: dict[str, int] = field(default_factory=dict)  # per connection ("shard"/"index")
    tags: int = 0
    check_executions: int = 0

    @property
    def total_events(self) -> int:
        return sum(self.events.values())


def _keep_asset_events(types: Iterable[str]):
    """Newest runless event id per (asset_key, dagster_event_type, partition): one per asset and
    type here (no partitioned assets); computed once per purge, before the batches."""
    return (db.select(db.func.max(EVENTS.c.id))
            .where(EVENTS.c.run_id == RUNLESS_RUN_ID, EVENTS.c.dagster_event_type.in_(list(types)))
            .group_by(EVENTS.c.asset_key, EVENTS.c.dagster_event_type, EVENTS.c.partition))


def _victim_asset_events(cutoff: datetime, types: Iterable[str], keep: list[int], limit: int):
    # events reported after the keep ids were read are newer than the cutoff: never victims
    return (db.select(EVENTS.c.id)
            .where(EVENTS.c.run_id == RUNLESS_RUN_ID,           # idx_events_by_run_id (run_id, id)
                   EVENTS.c.dagster_event_type.in_(list(types)),
                   EVENTS.c.timestamp < cutoff,
                   EVENTS.c.id.not_in(keep))
            .order_by(EVENTS.c.id).limit(limit))


def _victim_check_events(cutoff: datetime, limit: int):
    # runless check events only: a run's own are deleted with the run (delete_events_for_run)
    still_referenced = db.select(CHECKS.c.evaluation_event_storage_id).where(
        CHECKS.c.evaluation_event_storage_id.is_not(None))
    return (db.select(EVENTS.c.id)
            .where(EVENTS.c.run_id == RUNLESS_RUN_ID,
                   EVENTS.c.dagster_event_type.in_(CHECK_EVENT_TYPES),
                   EVENTS.c.timestamp < cutoff,
                   EVENTS.c.id.not_in(still_referenced))
            .order_by(EVENTS.c.id).limit(limit))


def _delete_events(conn, ids: list[int]) -> int:
    # asset_event_tags.event_id -> event_logs.id (index shard ids on SQLite)
    tags = conn.execute(TAGS.delete().where(TAGS.c.event_id.in_(ids))).rowcount
    conn.execute(EVENTS.delete().where(EVENTS.c.id.in_(ids)))
    return tags


def _purge_events_on(connect, cutoff, types, result: EventPurge, name: str, batch: int,
                     checks: bool) -> None:
    deleted = 0
    keep: list[int] = []
    if not checks:
        with connect() as conn:
            keep = [row[0] for row in conn.execute(_keep_asset_events(types))]
    while True:
        with connect() as conn:  # one short transaction per batch
            query = (_victim_check_events(cutoff, batch) if checks
                     else _victim_asset_events(cutoff, types, keep, batch))
            ids = [row[0] for row in conn.execute(query)]
            if ids:
                result.tags += _delete_events(conn, ids)
                deleted += len(ids)
        if len(ids) < batch:
            break
    result.events[name] = result.events.get(name, 0) + deleted


def purge_runless_asset_events(storage: SqlEventLogStorage, cutoff: datetime,
                               types: Iterable[str] = ASSET_EVENT_TYPES,
                               batch: int = BATCH) -> EventPurge:
    """Delete runless asset events older than ``cutoff``, the newest per key/type/partition kept."""
    result = EventPurge()
    cutoff = naive_utc(cutoff)
    _purge_events_on(storage.index_transaction, cutoff, types, result, "index", batch, False)
    if storage.is_run_sharded:  # SQLite: the run-"" shard file history/runs/.db holds a copy
        _purge_events_on(lambda: storage.run_connection(RUNLESS_RUN_ID), cutoff, types, result,
                         "shard", batch, False)
    return result


def purge_asset_check_executions(storage: SqlEventLogStorage, cutoff: datetime,
                                 batch: int = BATCH) -> EventPurge:
    """Delete asset_check_executions rows older than ``cutoff`` (runless or of any run, incl.
    runs already deleted), keeping per (asset_key, check_name, partition) the newest row and the
    newest completed row; then the runless check events no kept row references."""
    result = EventPurge()
    cutoff = naive_utc(cutoff)
    group = (CHECKS.c.asset_key, CHECKS.c.check_name, CHECKS.c.partition)
    keep_latest = db.select(db.func.max(CHECKS.c.id)).group_by(*group)
    keep_completed = (db.select(db.func.max(CHECKS.c.id))
                      .where(CHECKS.c.execution_status.in_(COMPLETED)).group_by(*group))
    when = db.func.coalesce(CHECKS.c.evaluation_event_timestamp, CHECKS.c.create_timestamp)
    while True:
        with storage.index_transaction() as conn:  # asset_check_executions: index only
            ids = [row[0] for row in conn.execute(
                db.select(CHECKS.c.id)
                .where(when < cutoff, CHECKS.c.id.not_in(keep_latest),
                       CHECKS.c.id.not_in(keep_completed))
                .order_by(CHECKS.c.id).limit(batch))]
            if ids:
                conn.execute(CHECKS.delete().where(CHECKS.c.id.in_(ids)))
                result.check_executions += len(ids)
        if len(ids) < batch:
            break
    _purge_events_on(storage.index_transaction, cutoff, (), result, "index", batch, True)
    if storage.is_run_sharded:
        # the shard's check events carry shard ids, which no asset_check_executions row holds
        # (it lives in index.db): only the age filter applies there
        _purge_events_on(lambda: storage.run_connection(RUNLESS_RUN_ID), cutoff, (), result,
                         "shard", batch, True)
    return result


def purge_ticks(instance, now: datetime, age: timedelta = EVENT_AGE) -> int:
    """Sensor and schedule ticks older than ``age``, each instigator's newest kept (the UI's
    "last tick"): the instance's own `retention:` counts in whole days and keeps a sensor's
    successful ticks (the micro-batch sensor's, one a run) for 7, so at a minute's retention
    (the lifecycle soak) they would grow all day. Returns the instigators purged."""
    cutoff = (now - age).timestamp()
    purged = 0
    for state in instance.all_instigator_state():
        origin, selector = state.instigator_origin_id, state.selector_id
        newest = instance.get_ticks(origin, selector, limit=1)
        if newest:
            instance.purge_ticks(origin, selector, min(cutoff, newest[0].timestamp))
            purged += 1
    return purged


def purge_automation_evaluations(instance, now: datetime, age: timedelta = EVENT_AGE) -> int:
    """The automation sensor's evaluations older than ``age``, each asset's newest kept.
    Dagster keeps them 30 days (its EVALUATIONS_TTL_DAYS): one per dbt model a tick, ~12 KB
    each on SQLite, ~8 MB an hour (the lifecycle soak). Returns the rows deleted."""
    storage = instance.schedule_storage
    if not (isinstance(storage, SqlScheduleStorage)
            and storage.supports_auto_materialize_asset_evaluations):
        return 0
    with storage.connect() as conn:
        keep = [row[0] for row in conn.execute(
            db.select(db.func.max(EVALUATIONS.c.id)).group_by(EVALUATIONS.c.asset_key))]
        return conn.execute(EVALUATIONS.delete().where(
            EVALUATIONS.c.create_timestamp < naive_utc(now - age),
            EVALUATIONS.c.id.not_in(keep))).rowcount


def purge_events(instance, now: datetime, age: timedelta = EVENT_AGE) -> EventPurge:
    """Runless asset events, then check executions and their runless events, older than
    ``age`` (the newest of each kept)."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        raise TypeError(f"event retention needs a SQL event log storage, not {type(storage)}")
    assets = purge_runless_asset_events(storage, now - age)
    checks = purge_asset_check_executions(storage, now - age)
    events = {k: assets.events.get(k, 0) + checks.events.get(k, 0)
              for k in {*assets.events, *checks.events}}
    return EventPurge(events, assets.tags + checks.tags, checks.check_executions)
