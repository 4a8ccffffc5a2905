"""After a reprocess changed notifications or windows, rebuild the dbt marts fully once.

The marts load incrementally by ingest sequence; a reprocess rewrites rows at sequences they
have already loaded, which the next incremental build cannot see (and the reconciliation of
the hourly rollup with event_windows would fail until someone rebuilt them). A reprocess that
changed nothing, or a dry run, logs no materialization and asks for nothing.
"""

import dagster as dg

from assets.microbatch import event_windows, notifications
from assets.reprocess import reprocess_job

# fct_events and every mart built from it (the rollups, dim_users) with their tests.
FCT_EVENTS = dg.AssetKey(["dbt", "fct_events"])
dbt_full_refresh_job = dg.define_asset_job(
    "dbt_full_refresh",
    # The dbt models only: the archive downstream of fct_events is partitioned by period.
    selection=dg.AssetSelection.assets(FCT_EVENTS).downstream() & dg.AssetSelection.groups("dbt"),
    config={"ops": {"streamflow_dbt": {"config": {"full_refresh": True}}}},
    description="Rebuild fct_events and the marts built from it from all history "
                "(requested after a reprocess that changed something).")


def changed_outputs(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    """The micro-batch outputs this run materialised (a reprocess logs them only on change)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    keys = {r.event_log_entry.dagster_event.asset_key for r in records}
    return keys & {notifications.key, event_windows.key}


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[reprocess_job],
                      request_job=dbt_full_refresh_job, minimum_interval_seconds=30,
                      default_status=dg.DefaultSensorStatus.RUNNING)
def dbt_refresh_after_reprocess(context: dg.RunStatusSensorContext):
    run = context.dagster_run
    if not changed_outputs(context.instance, run.run_id):
        return dg.SkipReason(f"reprocess {run.run_id} changed nothing")
    return dg.RunRequest(run_key=f"after-{run.run_id}")
