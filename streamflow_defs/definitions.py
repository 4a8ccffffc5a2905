"""The one Definitions object the Dagster webserver and daemon load. It only assembles."""

import dagster as dg

from assets import topic_assets
from resources import resource_defs

defs = dg.Definitions(
    assets=topic_assets(),
    resources=resource_defs(),
)
