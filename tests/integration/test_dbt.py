"""dbt build (through dagster-dbt) on fixture data in the real PostgreSQL, with its tests."""

from datetime import timedelta

import dagster as dg
from dagster_dbt import DbtCliResource
from sqlalchemy import text

from assets.dbt import streamflow_dbt
from resources import PostgresResource
from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_executable
from tests.conftest import create_topic
from tests.integration import lanes, microbatch_helpers
from tests.integration.microbatch_helpers import Scenario, catch_up, land

engine, resources = lanes.engine, microbatch_helpers.resources  # fixtures


def build(platform) -> dg.ExecuteInProcessResult:
    return dg.materialize([streamflow_dbt], resources={
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR),
                              profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()),
        "postgres": PostgresResource(database_url=platform.database_url)})


def test_dbt_build_passes_with_its_tests(platform, engine, resources, unique_name):
    s = Scenario()
    t = s.w0 + timedelta(seconds=3)
    events = [s.event("login", 1, t, success=True), s.event("login", 1, t, success=False),
              s.event("purchase", 2, t, amount_cents=250), s.event("page_view", 3, t),
              s.event("teleport", 4, t)]
    land(platform, create_topic(platform, unique_name), events)
    catch_up(resources, engine)

    result = build(platform)
    assert result.success
    tests = [e for e in result.get_asset_check_evaluations()]
    assert tests and all(e.passed for e in tests), [e.check_name for e in tests if not e.passed]

    with engine.connect() as conn:
        facts = conn.execute(text("SELECT count(*) FROM marts.fct_events WHERE user_id LIKE :u"),
                             {"u": f"user-{s.tag}-%"}).scalar_one()
        user = conn.execute(text("SELECT logins, failed_logins, events FROM marts.dim_users "
                                 "WHERE user_id = :u"), {"u": s.user(1)}).one()
        dead = conn.execute(text("SELECT sum(dead_letters) FROM marts.fct_dead_letters_daily "
                                 "WHERE stage = 'contract'")).scalar_one()
    assert facts == 4  # the teleport event failed the contract
    assert tuple(user) == (2, 1, 2)
    assert dead >= 1

    again = build(platform)  # incremental: a second build adds nothing
    assert again.success
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM marts.fct_events WHERE user_id LIKE :u"),
                            {"u": f"user-{s.tag}-%"}).scalar_one() == 4
