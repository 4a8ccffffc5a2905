"""The dbt models under declarative automation, on a stack of real services: every model is
requested and built, the three whose only upstreams are the sink's tables included.

The daemon's part is played in-process over the real Definitions: the landing sensor's events
are recorded as the sensor daemon records them, the automation conditions are evaluated with
`dg.evaluate_automation_conditions` (what the automation sensor runs each tick), and what they
request is materialised. The clock is set for the two evaluations so that a */5 cron tick falls
between them without waiting for one; the data, events and conditions are all real.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_dbt import DbtCliResource
from sqlalchemy import text

from assets import MICROBATCH_ASSETS
from assets.dbt import streamflow_dbt
from assets.lineage import RAW_DEAD_LETTERS, RAW_EVENTS
from resources import KafkaResource, PostgresResource
from sensors.landing import landing_sensor
from streamflow.db import migrate
from streamflow.db.engine import make_engine
from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_executable
from streamflow_defs.definitions import defs
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import Scenario, land

DBT_MODELS = {"stg_events", "stg_notifications", "stg_dead_letters", "stg_event_windows",
              "fct_events", "agg_events_hourly", "agg_events_daily", "dim_users",
              "fct_dead_letters_daily"}
CRON_MINUTES = 5  # assets/dbt.py AUTOMATION: on_cron("*/5 * * * *")


def sensor_tick(instance: dg.DagsterInstance, resources: dict, cursor: str | None):
    """One landing sensor evaluation, its asset events recorded as the sensor daemon does."""
    with dg.build_sensor_context(instance=instance, cursor=cursor,
                                 resources={"postgres": resources["postgres"]}) as context:
        result = landing_sensor(context)
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
    return result


def test_automation_builds_every_dbt_model(platform, fresh_database, unique_name, monkeypatch):
    migrate.upgrade(fresh_database)
    monkeypatch.setenv("DATABASE_URL", fresh_database)  # dbt's (streamflow-dbt's) connection
    resources = {
        "postgres": PostgresResource(database_url=fresh_database),
        "kafka": KafkaResource(bootstrap_servers=platform.bootstrap),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR),
                              profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()),
    }
    instance = dg.DagsterInstance.ephemeral()
    started = datetime.now(UTC)
    cron_tick = started.replace(minute=started.minute - started.minute % CRON_MINUTES,
                                second=0, microsecond=0)

    # A tick just before the cron tick: the conditions start from here, nothing is due.
    before = dg.evaluate_automation_conditions(defs, instance,
                                               evaluation_time=cron_tick - timedelta(seconds=1))
    assert before.total_requested == 0

    # The stack runs: events land (one breaks the contract), the sensors report, a micro-batch.
    s = Scenario()
    t = s.w0 + timedelta(seconds=3)
    land(platform, create_topic(platform, unique_name),
         [s.event("login", 1, t, success=True), s.event("purchase", 2, t, amount_cents=250),
          s.event("teleport", 3, t)], database_url=fresh_database)
    first = sensor_tick(instance, resources, None)
    assert isinstance(first, dg.SensorResult)
    reported = {e.asset_key: e.metadata for e in first.asset_events}
    assert set(reported) == {RAW_EVENTS, RAW_DEAD_LETTERS}  # dead letters: none yet, reported
    assert reported[RAW_EVENTS]["rows"].value == 3
    assert reported[RAW_DEAD_LETTERS]["rows"].value == 0
    assert dg.materialize(MICROBATCH_ASSETS, instance=instance, resources=resources).success
    second = sensor_tick(instance, resources, first.cursor)
    assert isinstance(second, dg.SensorResult)  # the contract step's dead letter landed
    assert [e.asset_key for e in second.asset_events] == [RAW_DEAD_LETTERS]
    assert second.asset_events[0].metadata["rows"].value == 1
    assert isinstance(sensor_tick(instance, resources, second.cursor), dg.SkipReason)

    # The first tick after the cron tick requests every model, then runs what it requested.
    after = dg.evaluate_automation_conditions(defs, instance, cursor=before.cursor,
                                              evaluation_time=started)
    requested = {key for key in defs.resolve_all_asset_keys()
                 if after.get_num_requested(key)}
    assert {key.path[-1] for key in requested} == DBT_MODELS
    assert all(key.path[0] == "dbt" for key in requested)
    run = dg.materialize([streamflow_dbt], selection=list(requested), instance=instance,
                         resources=resources)
    assert run.success  # unit tests, data tests and the reconciliation included
    assert {m.asset_key for m in run.get_asset_materialization_events()
            if m.asset_key} == requested

    engine = make_engine(fresh_database)
    try:
        with engine.connect() as conn:
            built = set(conn.execute(text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('staging', 'marts') AND c.relkind IN ('r', 'p', 'v') "
                "AND NOT c.relispartition")).scalars())
            # Partitioned by time by the model's post-hook (docs/ARCHITECTURE.md).
            kind = conn.execute(text("SELECT relkind FROM pg_class "
                                     "WHERE oid = 'marts.fct_events'::regclass")).scalar_one()
            facts = conn.execute(text("SELECT count(*) FROM marts.fct_events")).scalar_one()
            dead = conn.execute(text("SELECT sum(dead_letters) FROM marts.fct_dead_letters_daily"
                                     )).scalar_one()
    finally:
        engine.dispose()
    assert built == DBT_MODELS
    assert kind == "p"
    assert (facts, dead) == (2, 1)
