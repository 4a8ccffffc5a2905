"""dbt build (through dagster-dbt) on fixture data in the real PostgreSQL, with its tests."""

import os
from datetime import timedelta
from unittest import mock

import dagster as dg
from dagster_dbt import DbtCliResource
from sqlalchemy import text

from assets.dbt import streamflow_dbt
from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_executable
from streamflow.microbatch import claims
from streamflow.microbatch import notifications as contract_step
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import Scenario, catch_up, land

RECONCILIATION = "agg_events_hourly_reconciles_with_event_windows"


def dbt_cli() -> DbtCliResource:
    return DbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                          dbt_executable=dbt_executable())


def build(platform, models: list[str] | None = None) -> dg.ExecuteInProcessResult:
    """dbt build through the Dagster assets: every model, or these (with their tests). dbt
    (streamflow-dbt) connects to DATABASE_URL, as in a Dagster run process."""
    with mock.patch.dict(os.environ, {"DATABASE_URL": platform.database_url}):
        return dg.materialize(
            [streamflow_dbt], resources={"dbt": dbt_cli()},
            selection=[dg.AssetKey(["dbt", m]) for m in models] if models else None)


def one(engine, query: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(query), params).one()


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


def test_a_late_event_amends_its_hour_day_and_user_and_rewrites_nothing_else(
        platform, engine, resources, unique_name):
    s = Scenario()
    t = s.w0 + timedelta(seconds=3)
    late_at = t - timedelta(hours=5)
    topic = create_topic(platform, unique_name)
    land(platform, topic, [s.event("login", 1, t, success=True), s.event("page_view", 2, t)])
    catch_up(resources, engine)
    assert build(platform).success
    late_hour = "SELECT coalesce(sum(events), 0), coalesce(sum(login_failures), 0) FROM " \
                "marts.agg_events_hourly WHERE occurred_hour = date_trunc('hour', " \
                ":at, 'UTC') AND event_type = 'login'"
    late_day = "SELECT coalesce(sum(events), 0) FROM marts.agg_events_daily WHERE " \
               "occurred_date = cast(:at AT TIME ZONE 'UTC' AS date) AND event_type = 'login'"
    # Row versions (xmin) of rows the late event does not touch: a rebuild would renew them.
    untouched = "SELECT (SELECT xmin::text FROM marts.agg_events_hourly WHERE occurred_hour " \
                "= date_trunc('hour', :at, 'UTC') AND event_type = 'page_view'), " \
                "(SELECT xmin::text FROM marts.dim_users WHERE user_id = :u)"
    hour_before, day_before = one(engine, late_hour, at=late_at), one(engine, late_day, at=late_at)
    kept = one(engine, untouched, at=t, u=s.user(2))
    assert None not in kept

    land(platform, topic, [s.event("login", 1, late_at, success=False)])  # 5 hours late
    catch_up(resources, engine)
    again = build(platform)
    assert again.success
    failed = [e.check_name for e in again.get_asset_check_evaluations() if not e.passed]
    assert not failed  # the reconciliation with the amended windows included
    assert tuple(one(engine, late_hour, at=late_at)) == (hour_before[0] + 1, hour_before[1] + 1)
    assert one(engine, late_day, at=late_at)[0] == day_before[0] + 1
    user = one(engine, "SELECT events, failed_logins, first_seen_at FROM marts.dim_users "
                       "WHERE user_id = :u", u=s.user(1))
    assert tuple(user) == (2, 1, late_at)
    assert one(engine, untouched, at=t, u=s.user(2)) == kept


def test_fct_events_loads_a_range_that_commits_after_a_later_one(
        platform, engine, resources, unique_name):
    """Two micro-batch runs validate disjoint ranges at once: the later range can commit
    first. A build in between must not move fct_events past the earlier range for good."""
    catch_up(resources, engine)
    s = Scenario()
    land(platform, create_topic(platform, unique_name),
         [s.event("signup", 1, s.w0), s.event("signup", 2, s.w0)])
    landed = one(engine, "SELECT max(ingest_seq) FROM raw.events")[0]
    loaded = ("SELECT count(*) FROM marts.fct_events WHERE user_id LIKE :u")
    postgres = resources["postgres"]

    def none(_messages) -> list:
        return []  # nothing published, nothing refused

    with postgres.connect() as first, postgres.connect() as second:
        earlier = claims.next_claim(first, contract_step.STEP, landed, 1)
        later = claims.next_claim(second, contract_step.STEP, landed, 1)
        assert (earlier.upto, later.upto) == (later.after, landed)
        contract_step.run_chunk(second, later, none, none)
        claims.release(second, later)
        claims.settle(second, contract_step.STEP)
        assert build(platform, ["stg_notifications", "fct_events"]).success
        assert one(engine, loaded, u=f"user-{s.tag}-%")[0] == 0  # waits for the earlier range
        contract_step.run_chunk(first, earlier, none, none)
        claims.release(first, earlier)
        claims.settle(first, contract_step.STEP)
    assert build(platform, ["stg_notifications", "fct_events"]).success
    assert one(engine, loaded, u=f"user-{s.tag}-%")[0] == 2


def test_reconciliation_names_an_hour_where_rollup_and_windows_disagree(
        platform, engine, resources, unique_name, monkeypatch):
    s = Scenario()
    land(platform, create_topic(platform, unique_name),
         [s.event("purchase", 1, s.w0 + timedelta(seconds=1), amount_cents=700)])
    catch_up(resources, engine)
    built = build(platform)
    assert built.success
    checks = {e.check_name: e.passed for e in built.get_asset_check_evaluations()}
    assert checks[RECONCILIATION]  # rollup and windows agree, this hour included

    bump = text("UPDATE streamflow.event_windows SET purchase_cents = purchase_cents + :d "
                "WHERE window_start = :w AND event_type = 'purchase'")
    with engine.begin() as conn:
        assert conn.execute(bump, {"d": 1, "w": s.w0}).rowcount == 1
    monkeypatch.setenv("DATABASE_URL", platform.database_url)
    try:
        test = dbt_cli().cli(["test", "--select", RECONCILIATION], raise_on_error=False).wait()
        assert not test.is_successful()
    finally:
        with engine.begin() as conn:
            conn.execute(bump, {"d": -1, "w": s.w0})
