"""Asset checks: contract pass rate, DLQ rate, freshness of raw.events, no missing windows."""

import dagster as dg

from assets.lineage import RAW_EVENTS
from assets.microbatch import dlq_report, event_windows, notifications
from resources import PostgresResource
from streamflow.dlq import Stage
from streamflow.microbatch import windows
from streamflow.microbatch.windows import WINDOW_SECONDS

# Thresholds (shares of the last hour's events): a pipeline under normal traffic sits far
# from both; crossing one means a producer or the schema changed.
MIN_PASS_RATE = 0.90
MAX_DLQ_RATE = 0.05
# raw.events is stale when nothing landed for this long while the stack runs.
FRESHNESS_MINUTES = 5


def _one(postgres: PostgresResource, query: str, params: tuple = ()) -> tuple:
    with postgres.connect() as conn:
        return conn.execute(query, params).fetchone()


# Each check reads bounded work whatever the history: an hour of per-minute counters
# (streamflow.contract_counts), the last hour of dead letters by their created_at index, or
# the newest processed events by ingest sequence. `make bench` times them at 0, 1M and 10M rows.
_LAST_HOUR_CHECKED = """
    SELECT coalesce(sum(checked), 0)::bigint, coalesce(sum(valid), 0)::bigint,
           coalesce(sum(rejected), 0)::bigint
    FROM streamflow.contract_counts WHERE minute > now() - interval '1 hour'
"""


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
    (ingest,) = _one(postgres, "SELECT count(*) FROM raw.dead_letters WHERE stage = %s "
                               "AND created_at > now() - interval '1 hour'",
                     (Stage.INGEST.value,))
    arrived, dead = checked + ingest, rejected + ingest
    rate = dead / arrived if arrived else 0.0
    return dg.AssetCheckResult(passed=rate <= MAX_DLQ_RATE, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"dlq_rate": rate, "dead_letters": dead,
                                         "arrived": arrived})


@dg.asset_check(asset=RAW_EVENTS, description=f"An event landed in the last "
                                              f"{FRESHNESS_MINUTES} minutes.")
def raw_events_fresh(postgres: PostgresResource) -> dg.AssetCheckResult:
    # The newest row by ingest sequence (its unique index): max(ingested_at) would scan it all.
    row = _one(postgres, "SELECT extract(epoch FROM now() - ingested_at) FROM raw.events "
                         "ORDER BY ingest_seq DESC LIMIT 1")
    age_s = row[0] if row else None
    passed = age_s is not None and age_s <= FRESHNESS_MINUTES * 60
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"newest_event_age_s": float(age_s or -1)})


# The newest processed events whose windows are checked: bounded work at any rate or age.
RECENT_EVENTS = 100_000


@dg.asset_check(asset=event_windows, description=f"Every 10 s window holding one of the "
                                                 f"newest {RECENT_EVENTS:,} processed events "
                                                 f"has its window row.")
def no_missing_windows(postgres: PostgresResource) -> dg.AssetCheckResult:
    # The lower bound on window_start lets the anti-join probe the primary key instead of
    # hashing all of event_windows (a seq scan that grew with history: `benchmarks/history`).
    (missing,) = _one(postgres, """
        WITH done AS (SELECT coalesce(max(last_seq), 0) AS upto FROM streamflow.watermarks
                      WHERE name = %s),
        n AS (
            SELECT DISTINCT to_timestamp(floor(extract(epoch FROM occurred_at) / %s) * %s) AS ws,
                   event_type
            FROM streamflow.notifications, done
            WHERE ingest_seq > done.upto - %s AND ingest_seq <= done.upto
        )
        SELECT count(*) FROM n
        WHERE NOT EXISTS (SELECT 1 FROM streamflow.event_windows w
                          WHERE w.window_start = n.ws AND w.event_type = n.event_type
                            AND w.window_start >= (SELECT min(ws) FROM n))""",
        (windows.STEP, WINDOW_SECONDS, WINDOW_SECONDS, RECENT_EVENTS))
    return dg.AssetCheckResult(passed=missing == 0, metadata={"missing_windows": missing})


CHECKS = [contract_pass_rate, dlq_rate, raw_events_fresh, no_missing_windows]

checks_job = dg.define_asset_job(
    "checks", selection=dg.AssetSelection.checks(*CHECKS), executor_def=dg.in_process_executor,
    description="The asset checks, on their own cadence so micro-batches stay lean.")

checks_schedule = dg.ScheduleDefinition(
    job=checks_job, cron_schedule="* * * * *", default_status=dg.DefaultScheduleStatus.RUNNING)
