"""The one Definitions object the Dagster webserver and daemon load. It only assembles."""

import dagster as dg

from assets import CHECKS, MICROBATCH_ASSETS, landing_specs, microbatch_job, topic_specs
from resources import resource_defs
from sensors import SENSORS

defs = dg.Definitions(
    assets=[*topic_specs(), *landing_specs(), *MICROBATCH_ASSETS],
    asset_checks=CHECKS,
    jobs=[microbatch_job],
    sensors=SENSORS,
    resources=resource_defs(),
)
