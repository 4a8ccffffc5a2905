"""The dbt project as Dagster assets, hung under the micro-batch assets in the lineage."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from assets.lineage import RAW_DEAD_LETTERS, RAW_EVENTS
from resources import PostgresResource
from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_env, ensure_manifest

# First load on a fresh checkout: `dbt parse` once (~5 s, no database needed) instead of a
# separate build step before the webserver can start.
ensure_manifest()
project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)

# dbt sources are the tables Dagster already knows: link them, don't duplicate them.
SOURCE_KEYS = {
    ("raw", "events"): RAW_EVENTS,
    ("raw", "dead_letters"): RAW_DEAD_LETTERS,
    ("streamflow", "notifications"): dg.AssetKey("notifications"),
    ("streamflow", "event_windows"): dg.AssetKey("event_windows"),
}
# Historical tables: rebuild every 5 minutes once the micro-batch assets updated. A dbt build
# costs ~20 s of CPU on 2 cores; every minute it delayed the micro-batches (window p95).
AUTOMATION = dg.AutomationCondition.on_cron("*/5 * * * *")


DBT_NICENESS = 10


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
                   postgres: PostgresResource, config: DbtBuildConfig):
    # dbt-postgres has no URL setting: its profile reads DBT_PG_* derived from DATABASE_URL.
    os.environ.update(dbt_env(postgres.database_url))
    # Relationship tests point upstream, so each hangs off a model and what it is built from.
    # When a run builds some models only, dbt's default (eager) would also run the tests of the
    # models downstream that point at them, on tables maybe not built yet; buildable runs a
    # test when its model is built and its other parents are upstream of it. dagster-dbt reads
    # this variable when it selects a subset.
    os.environ.setdefault("DBT_INDIRECT_SELECTION", "buildable")
    # Historical tables can wait; window latency cannot. This run's process (and the dbt it
    # starts) yields the CPU to micro-batch runs (measured: window visibility p95).
    os.nice(max(0, DBT_NICENESS - os.nice(0)))  # to the level, not by it: nice() adds up
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
