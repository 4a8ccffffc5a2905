"""Asset checks: contract pass rate, DLQ rate, source freshness, no missing windows, nothing
quarantined, every partition of the pipeline's topics replicated."""

from datetime import timedelta

import dagster as dg
from psycopg import sql

from assets.dbt import SOURCE_FRESHNESS, SourceFreshness
from assets.lineage import topic_key
from assets.microbatch import dlq_report, event_windows, notifications
from resources import KafkaResource, PostgresResource
from streamflow import cluster, cluster_health, topics
from streamflow.db import quarantine, tables
from streamflow.db.compose import statement
from streamflow.dlq import Stage
from streamflow.errors import KafkaUnavailable, StreamFlowError
from streamflow.microbatch import windows
from streamflow.microbatch.windows import WINDOW_SECONDS

# Thresholds (shares of the last hour's events): a pipeline under normal traffic sits far
# from both; crossing one means a producer or the schema changed.
MIN_PASS_RATE = 0.90
MAX_DLQ_RATE = 0.05


def _one(postgres: PostgresResource, query: str | sql.Composed, params: tuple = ()) -> tuple:
    with postgres.connect() as conn:
        return conn.execute(query, params).fetchone()


# Each check reads bounded work whatever the history: an hour of per-minute counters
# (streamflow.contract_counts), the last hour of dead letters by their created_at index, or
# the newest processed events by ingest sequence. `make bench` times them at 0, 1M and 10M rows.
_LAST_HOUR_CHECKED = statement("""
    SELECT coalesce(sum({c.checked}), 0)::bigint, coalesce(sum({c.valid}), 0)::bigint,
           coalesce(sum({c.rejected}), 0)::bigint
    FROM {c} WHERE {c.minute} > now() - interval '1 hour'
""", c=tables.contract_counts)
_LAST_HOUR_DEAD_LETTERS = statement(
    "SELECT count(*) FROM {d} WHERE {d.stage} = %s AND {d.created_at} > now() - interval '1 hour'",
    d=tables.dead_letters)


@dg.asset_check(asset=notifications, description=f"Contract pass rate over the last hour >= "
                                                  f"{MIN_PASS_RATE:.0%}.")
def contract_pass_rate(postgres: PostgresResource) -> dg.AssetCheckResult:
    checked, valid, _ = _one(postgres, _LAST_HOUR_CHECKED)
    rate = valid / checked if checked else 1.0
    return dg.AssetCheckResult(passed=rate >= MIN_PASS_RATE, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"pass_rate": rate, "checked": checked})


@dg.asset_check(asset=dlq_report, description=f"Dead letters over the last hour <= "
                                              f"{MAX_DLQ_RATE:.0%} of what arrived.")
def dlq_rate(postgres: PostgresResource) -> dg.AssetCheckResult:
    # Landed = what the contract step checked (minutes behind landing at most); the ingest
    # dead letters never landed, so they count on top.
    checked, _, rejected = _one(postgres, _LAST_HOUR_CHECKED)
    (ingest,) = _one(postgres, _LAST_HOUR_DEAD_LETTERS, (Stage.INGEST.value,))
    arrived, dead = checked + ingest, rejected + ingest
    rate = dead / arrived if arrived else 0.0
    return dg.AssetCheckResult(passed=rate <= MAX_DLQ_RATE, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"dlq_rate": rate, "dead_letters": dead,
                                         "arrived": arrived})


def stale(age: timedelta | None, source: SourceFreshness) -> dg.AssetCheckSeverity | None:
    """dbt's source freshness rule: older than error_after is an error, older than warn_after
    a warning (None: fresh). A table with nothing loaded yet is as stale as it gets."""
    if source.error_after is not None and (age is None or age > source.error_after):
        return dg.AssetCheckSeverity.ERROR
    if source.warn_after is not None and (age is None or age > source.warn_after):
        return dg.AssetCheckSeverity.WARN
    return None


def _limits(source: SourceFreshness) -> str:
    return ", ".join(f"{what} after {int(limit.total_seconds() // 60)} min" for what, limit in (
        ("warn", source.warn_after), ("error", source.error_after)) if limit is not None)


def freshness_check(source: SourceFreshness) -> dg.AssetChecksDefinition:
    """The source's dbt freshness as a Dagster check: the same loaded_at_query (an index
    lookup, see dbt_project/models/staging/__sources.yml) and the same limits."""

    @dg.asset_check(asset=source.key, name=f"{source.name}_fresh",
                    description=f"dbt source freshness of {source.name}: {_limits(source)}.")
    def _fresh(postgres: PostgresResource) -> dg.AssetCheckResult:
        (age_s,) = _one(postgres, sql.SQL("SELECT extract(epoch FROM now() - ({}))").format(
            sql.SQL(source.loaded_at_query)))
        age = None if age_s is None else timedelta(seconds=float(age_s))
        severity = stale(age, source)
        return dg.AssetCheckResult(
            passed=severity is None, severity=severity or dg.AssetCheckSeverity.WARN,
            metadata={"newest_row_age_s": -1.0 if age is None else round(age.total_seconds(), 1),
                      "limits": _limits(source)})

    return _fresh


SOURCE_FRESHNESS_CHECKS = [freshness_check(source) for source in SOURCE_FRESHNESS]
# raw.events' freshness, which the benchmarks and tests name.
raw_events_fresh = next((c for c in SOURCE_FRESHNESS_CHECKS
                         if c.check_key.name == "raw_events_fresh"), None)
if raw_events_fresh is None:
    raise StreamFlowError("dbt_project declares no freshness (with a loaded_at_query) for the "
                          f"source {tables.events.fullname}: its Dagster check raw_events_fresh "
                          "has no limits")


# The newest processed events whose windows are checked: bounded work at any rate or age.
RECENT_EVENTS = 100_000
# The lower bound on window_start lets the anti-join probe the primary key instead of hashing
# all of event_windows (a seq scan that grew with history: `benchmarks/history`). `n` is the
# CTE of the recent notifications' windows, `w` an event_windows row.
_MISSING_WINDOWS = statement("""
    WITH done AS (SELECT coalesce(max({wm.last_seq}), 0) AS upto FROM {wm}
                  WHERE {wm.name} = %s),
    n AS (
        SELECT DISTINCT to_timestamp(floor(extract(epoch FROM {nt.occurred_at}) / %s) * %s) AS ws,
               {nt.event_type}
        FROM {nt}, done
        WHERE {nt.ingest_seq} > done.upto - %s AND {nt.ingest_seq} <= done.upto
    )
    SELECT count(*) FROM n
    WHERE NOT EXISTS (SELECT 1 FROM {ew} w
                      WHERE w.{ew.window_start} = n.ws AND w.{ew.event_type} = n.{nt.event_type}
                        AND w.{ew.window_start} >= (SELECT min(ws) FROM n))""",
    wm=tables.watermarks, nt=tables.notifications, ew=tables.event_windows)


@dg.asset_check(asset=event_windows, description=f"Every 10 s window holding one of the "
                                                 f"newest {RECENT_EVENTS:,} processed events "
                                                 f"has its window row.")
def no_missing_windows(postgres: PostgresResource) -> dg.AssetCheckResult:
    (missing,) = _one(postgres, _MISSING_WINDOWS,
                      (windows.STEP, WINDOW_SECONDS, WINDOW_SECONDS, RECENT_EVENTS))
    return dg.AssetCheckResult(passed=missing == 0, metadata={"missing_windows": missing})


@dg.asset_check(asset=notifications, description="Nothing is quarantined unresolved: a dead "
                                                 "letter whose topic copy Kafka refused, or "
                                                 "an event the contract step failed on in "
                                                 "every attempt (`streamflow quarantine`).")
def quarantine_empty(postgres: PostgresResource) -> dg.AssetCheckResult:
    with postgres.connect() as conn:
        count, oldest = quarantine.unresolved(conn)
    return dg.AssetCheckResult(
        passed=count == 0, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"unresolved": count, "oldest": str(oldest) if oldest else "none",
                  "see": "streamflow quarantine list / resolve / retry"})


# Seconds the cluster may take to answer the replication check's metadata request.
REPLICATION_TIMEOUT_S = 10.0


def replication_result(health: cluster_health.ClusterHealth) -> dg.AssetCheckResult:
    """Passed while every judged partition has all its replicas in sync and a leader. A
    failure is an ERROR where the cluster is down (no quorum, a partition offline or refusing
    acks=all writes), a WARN where it is degraded (writes still taken)."""
    short, offline = health.under_replicated, health.offline
    return dg.AssetCheckResult(
        passed=not short and not offline,
        severity=(dg.AssetCheckSeverity.ERROR if health.state == cluster_health.DOWN
                  else dg.AssetCheckSeverity.WARN),
        metadata={"state": health.state, "reasons": "; ".join(health.reasons()) or "none",
                  "partitions": len(health.partitions),
                  "under_replicated": len(short), "offline": len(offline),
                  "brokers_down": ", ".join(map(str, health.down_brokers)) or "none",
                  "not_in_sync": dg.MetadataValue.json([
                      {"partition": f"{p.topic}[{p.partition}]",
                       "leader": None if p.offline else p.leader,
                       "replicas": list(p.replicas), "isr": list(p.isr)}
                      for p in [*offline, *(p for p in short if not p.offline)]])})


def replication_check(topic: str) -> dg.AssetChecksDefinition:
    """The topic's partitions as the cluster's metadata says (cluster_health.judge)."""

    @dg.asset_check(asset=topic_key(topic), name="replicated",
                    description=f"Every partition of {topic} has a leader and all its replicas "
                                "in sync (fails while one is under-replicated or offline).")
    def _replicated(kafka: KafkaResource) -> dg.AssetCheckResult:
        try:
            replication = cluster.replication(kafka.connection, timeout_s=REPLICATION_TIMEOUT_S)
        except KafkaUnavailable as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                       metadata={"state": cluster_health.DOWN,
                                                 "reasons": str(exc)})
        return replication_result(cluster_health.judge(replication, topic_names=[topic]))

    return _replicated


REPLICATION_CHECKS = [replication_check(name) for name in topics.PIPELINE_TOPICS]

CHECKS = [contract_pass_rate, dlq_rate, *SOURCE_FRESHNESS_CHECKS, no_missing_windows,
          quarantine_empty, *REPLICATION_CHECKS]

checks_job = dg.define_asset_job(
    "checks", selection=dg.AssetSelection.checks(*CHECKS), executor_def=dg.in_process_executor,
    description="The asset checks, on their own cadence so micro-batches stay lean.")

checks_schedule = dg.ScheduleDefinition(
    job=checks_job, cron_schedule="* * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
