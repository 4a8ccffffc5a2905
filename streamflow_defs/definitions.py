"""The one Definitions object the Dagster webserver and daemon load. It only assembles."""

import dagster as dg

from assets import (
    CHECKS,
    MICROBATCH_ASSETS,
    checks_job,
    checks_schedule,
    dlq_replay_job,
    landing_specs,
    microbatch_job,
    reprocess_job,
    retention_job,
    retention_schedule_for,
    streamflow_dbt,
    topic_specs,
)
from assets.lifecycle import lifecycle_defs
from resources import resource_defs
from sensors import SENSORS, dbt_full_refresh_job
from streamflow.settings import load_settings

# The archive's partitions follow STREAMFLOW_PARTITION_INTERVAL, the retention schedule the
# Dagster retention settings: read when Dagster loads this.
settings = load_settings()
lifecycle = lifecycle_defs(settings)

defs = dg.Definitions(
    assets=[*topic_specs(), *landing_specs(), *MICROBATCH_ASSETS, streamflow_dbt,
            *lifecycle.assets],
    asset_checks=[*CHECKS, *lifecycle.checks],
    jobs=[microbatch_job, checks_job, dlq_replay_job, retention_job, reprocess_job,
          dbt_full_refresh_job, *lifecycle.jobs],
    schedules=[checks_schedule, retention_schedule_for(settings), *lifecycle.schedules],
    # Declarative automation (the dbt models' on_cron condition) is off unless enabled here.
    sensors=[*SENSORS, dg.AutomationConditionSensorDefinition(
        "dbt_automation", target=dg.AssetSelection.groups("dbt"),
        default_status=dg.DefaultSensorStatus.RUNNING)],
    resources=resource_defs(),
)
