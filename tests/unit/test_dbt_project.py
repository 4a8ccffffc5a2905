"""The dbt project's conventions (jaffle-shop's), read from a fresh `dbt parse` (no database),
and the Dagster side that comes from it: source freshness checks."""

import json
import re
import subprocess
import sys
from datetime import timedelta

import dagster as dg
import pytest

from assets.checks import freshness_check, stale
from assets.dbt import SourceFreshness, StreamFlowTranslator, source_freshness
from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_env

# The models whose logic computes: their unit tests cover a first build and an incremental one.
INCREMENTAL = {"fct_events": ["event_id"], "agg_events_hourly": ["occurred_hour", "event_type"],
               "agg_events_daily": ["occurred_date", "event_type"], "dim_users": ["user_id"]}
UNIT_TESTED = {"agg_events_hourly", "agg_events_daily", "dim_users"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    target = tmp_path_factory.mktemp("dbt-target")
    result = subprocess.run(
        [sys.executable, "-m", "dbt.cli.main", "parse", "--no-version-check",
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(target), "--log-path", str(target / "logs")],
        env={**dbt_env("postgresql://postgres:@/streamflow?host=/tmp/nowhere"),
             "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((target / "manifest.json").read_text())


def models(manifest: dict) -> dict[str, dict]:
    return {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}


def checks_named(manifest: dict, model: dict, name: str) -> list[dict]:
    return [n for n in manifest["nodes"].values() if n["resource_type"] == "test"
            and n.get("attached_node") == model["unique_id"]
            and (n.get("test_metadata") or {}).get("name") == name]


def grain(manifest: dict, model: dict) -> list[list[str]]:
    """The column sets a uniqueness test holds the model to."""
    return ([[t["column_name"]] for t in checks_named(manifest, model, "unique")]
            + [t["test_metadata"]["kwargs"]["columns"]
               for t in checks_named(manifest, model, "unique_combination")])


def test_every_model_has_its_own_yaml_stating_and_testing_its_grain(manifest):
    found = models(manifest)
    assert len(found) == 9
    for name, model in found.items():
        assert model["patch_path"] == "streamflow://" + model["original_file_path"].replace(
            ".sql", ".yml"), f"{name}: its YAML is not beside it, named after it"
        stated = re.search(r"One row per ([^.]+)\.", model["description"])
        assert stated, f"{name}: the description does not state the grain"
        tested = grain(manifest, model)
        assert any(all(col in stated.group(1) for col in cols) for cols in tested), (
            f"{name}: no uniqueness test on the stated grain ({stated.group(1)}): {tested}")


def _upstream(manifest: dict, unique_id: str, lineage: dg.Definitions) -> set[dg.AssetKey]:
    """What ``unique_id`` is built from, as Dagster assets: its dbt ancestors, and upstream of
    the sources among them, the micro-batch assets and landing tables they are made from."""
    translator, graph = StreamFlowTranslator(), lineage.resolve_asset_graph()
    found, todo = set(), list(manifest["parent_map"][unique_id])
    while todo:
        parent = todo.pop()
        props = manifest["nodes"].get(parent) or manifest["sources"][parent]
        key = translator.get_asset_key(props)
        if key in found:
            continue
        found.add(key)
        todo += manifest["parent_map"].get(parent, [])
        if props["resource_type"] == "source":
            found |= _ancestors(graph, key)
    return found


def _ancestors(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    found, todo = set(), [key]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in found:
                found.add(parent)
                todo.append(parent)
    return found


def test_relationship_tests_point_upstream(manifest):
    """A relationship test points from a model to what it is built from, never downstream."""
    from streamflow_defs.definitions import defs as lineage  # its non-dbt assets only count
    translator = StreamFlowTranslator()
    relationships = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"
                     and (n.get("test_metadata") or {}).get("name") == "relationships"]
    assert len(relationships) >= 5, [t["name"] for t in relationships]
    for test in relationships:
        model = test["attached_node"]
        [to] = [n for n in test["depends_on"]["nodes"] if n != model]
        target = translator.get_asset_key(manifest["nodes"].get(to) or manifest["sources"][to])
        assert target in _upstream(manifest, model, lineage), (
            f"{test['name']}: {target.to_user_string()} is not upstream of {model}")


def test_rollups_and_dim_users_are_incremental_on_their_grain_and_unit_tested(manifest):
    found = models(manifest)
    for name, key in INCREMENTAL.items():
        config = found[name]["config"]
        assert config["materialized"] == "incremental", name
        assert ([config["unique_key"]] if isinstance(config["unique_key"], str)
                else config["unique_key"]) == key, name
    for name in UNIT_TESTED:
        modes = {t["overrides"]["macros"]["is_incremental"]
                 for t in manifest["unit_tests"].values() if t["model"] == name}
        assert modes == {False, True}, f"{name}: unit tests of a first build and an increment"


def test_every_model_is_named_ctes_then_a_final_select(manifest):
    for name, model in models(manifest).items():
        sql = re.sub(r"\A\{\{\s*config\(.*?\n\}\}", "", model["raw_code"], flags=re.S)
        sql = re.sub(r"\{#.*?#\}|--[^\n]*", "", sql, flags=re.S).strip()
        assert sql.lower().startswith("with"), f"{name}: does not start with its CTEs"
        assert re.search(r"\)\s*(\{%[^%]*%\}\s*)*select \* from \w+$", sql), (
            f"{name}: does not end by selecting everything from its last CTE")
        assert not re.search(r"from\s*\(\s*select", sql, flags=re.I), f"{name}: a subquery"


def test_source_freshness_is_a_dagster_check_with_dbt_limits(manifest):
    sources = {s.name: s for s in source_freshness(manifest)}
    assert set(sources) == {"raw_events", "streamflow_notifications"}  # not dead letters
    events = sources["raw_events"]
    assert (events.warn_after, events.error_after) == (timedelta(minutes=10), timedelta(hours=1))
    assert "order by ingest_seq desc limit 1" in events.loaded_at_query  # an index lookup
    check = freshness_check(events)
    assert check.check_key == dg.AssetCheckKey(dg.AssetKey(["raw", "events"]), "raw_events_fresh")
    notifications = freshness_check(sources["streamflow_notifications"])
    assert notifications.check_key.asset_key == dg.AssetKey("notifications")


@pytest.mark.parametrize(("age_minutes", "expected"), [
    (9, None), (11, dg.AssetCheckSeverity.WARN), (61, dg.AssetCheckSeverity.ERROR),
    (None, dg.AssetCheckSeverity.ERROR)])
def test_freshness_warns_then_errors_as_dbt_does(age_minutes, expected):
    source = SourceFreshness(dg.AssetKey("t"), "t", "select now()", timedelta(minutes=10),
                             timedelta(hours=1))
    age = None if age_minutes is None else timedelta(minutes=age_minutes)
    assert stale(age, source) == expected


def test_freshness_with_a_warning_limit_only_never_errors():
    source = SourceFreshness(dg.AssetKey("t"), "t", "select now()", timedelta(minutes=10), None)
    assert stale(None, source) == dg.AssetCheckSeverity.WARN
    assert stale(timedelta(days=2), source) == dg.AssetCheckSeverity.WARN


def test_the_dbt_future_skew_is_the_contracts():
    """agg_events_hourly's choice between recount and amend (macros/future_skew.sql) rests on
    the contract's bound on event times ahead of the clock (streamflow.validation)."""
    from streamflow.validation import FUTURE_SKEW

    text = (DBT_PROJECT_DIR / "macros" / "future_skew.sql").read_text()
    minutes = int(re.search(r"%\}(\d+) minutes\{%", text)[1])
    assert timedelta(minutes=minutes) == FUTURE_SKEW
