"""The dbt project as Dagster assets, hung under the micro-batch assets in the lineage."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from assets.lineage import DROPPED_PERIODS, RAW_DEAD_LETTERS, RAW_EVENTS
from streamflow.dbt_env import DBT_PROJECT_DIR
from streamflow.errors import DbtManifestMissing

# The manifest is prepared before this module is imported: by `streamflow dbt prepare` (run by
# `make install` and `streamflow up` when the project changed) in a checkout, by the wheel
# build in a package (setup.py ships it). Under `dagster dev` only, dagster-dbt re-parses on
# each load (prepare_if_dev); anywhere else importing this module runs nothing.
project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
project.prepare_if_dev()
if not project.manifest_path.exists():
    raise DbtManifestMissing(f"no {project.manifest_path}: run `streamflow dbt prepare`")

# dbt sources are the tables Dagster already knows: link them, don't duplicate them.
SOURCE_KEYS = {
    ("raw", "events"): RAW_EVENTS,
    ("raw", "dead_letters"): RAW_DEAD_LETTERS,
    ("streamflow", "notifications"): dg.AssetKey("notifications"),
    ("streamflow", "event_windows"): dg.AssetKey("event_windows"),
    ("streamflow", "dropped_periods"): DROPPED_PERIODS,
}
# Historical tables: rebuild every 5 minutes once the micro-batch assets updated. A dbt build
# costs ~20 s of CPU on 2 cores; every minute it delayed the micro-batches (window p95).
# The lifecycle's record of dropped periods is read, never waited for (it changes once a
# period, and only as a lifecycle pass drops one).
AUTOMATION = dg.AutomationCondition.on_cron("*/5 * * * *").ignore(
    dg.AssetSelection.assets(DROPPED_PERIODS))


class StreamFlowTranslator(DagsterDbtTranslator):
    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            key = (dbt_resource_props["source_name"], dbt_resource_props["name"])
            if key in SOURCE_KEYS:
                return SOURCE_KEYS[key]
        return dg.AssetKey(["dbt", dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str:
        return "dbt"

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]):
        return AUTOMATION


class DbtBuildConfig(dg.Config):
    full_refresh: bool = Field(
        False, description="Rebuild the incremental models from all history instead of adding "
                           "what is new: after a reprocess rewrote ranges already loaded, or "
                           "after a model's logic changed.")


@dbt_assets(manifest=project.manifest_path, project=project,
            dagster_dbt_translator=StreamFlowTranslator())
def streamflow_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                   config: DbtBuildConfig):
    # The dbt process sets its own priority and environment (connection from DATABASE_URL,
    # indirect selection): the `dbt` resource runs `streamflow-dbt`, see streamflow/dbt_env.py.
    args = ["build", "--full-refresh"] if config.full_refresh else ["build"]
    yield from dbt.cli(args, context=context).stream()


_PERIODS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1),
            "day": timedelta(days=1)}


@dataclass(frozen=True)
class SourceFreshness:
    """A dbt source's freshness as sources.yml declares it, for the Dagster asset of its table:
    ``dbt source freshness`` and the Dagster check (assets/checks.py) share query and limits."""

    key: dg.AssetKey
    name: str  # "<source>_<table>", e.g. raw_events
    loaded_at_query: str  # one value: when the newest row was loaded
    warn_after: timedelta | None
    error_after: timedelta | None


def _after(rule: Mapping[str, Any] | None) -> timedelta | None:
    if not rule or rule.get("count") is None or rule.get("period") is None:
        return None
    return rule["count"] * _PERIODS[rule["period"]]


def source_freshness(manifest: Mapping[str, Any]) -> list[SourceFreshness]:
    """Sources that declare a freshness limit and a loaded_at_query (a loaded_at_field would
    need max() over the whole table: each source here names its cheap query instead)."""
    found = []
    for props in manifest["sources"].values():
        rules = props.get("freshness") or {}
        warn, error = _after(rules.get("warn_after")), _after(rules.get("error_after"))
        if (warn or error) and props.get("loaded_at_query"):
            key = StreamFlowTranslator().get_asset_key(props)
            found.append(SourceFreshness(key, f"{props['source_name']}_{props['name']}",
                                         props["loaded_at_query"].strip(), warn, error))
    return sorted(found, key=lambda f: f.name)


SOURCE_FRESHNESS = source_freshness(json.loads(project.manifest_path.read_bytes()))
