"""Event retention (assets/event_retention.py) on a real SQLite Dagster instance in a temp
directory: the runless events and check executions no run deletion reaches go by age, and what
the UI shows stays (each asset's newest observation and materialization, each check's newest
and newest completed execution). The same on PostgreSQL storage: test_dagster_postgres.py."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as db
from dagster._core.test_utils import freeze_time, instance_for_test

from assets import event_retention
from assets.event_retention import purge_automation_evaluations, purge_events, purge_ticks
from tests.helpers.dagster_events import check_history, materialized, observed, seed

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGE = timedelta(minutes=90)


@pytest.fixture
def instance(tmp_path):
    with instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance


def _runless_rows(instance) -> dict[str, int]:
    """Runless event_logs rows in every file that holds them (SQLite: index.db and .db)."""
    storage = instance.event_log_storage
    connections = {"index": storage.index_connection}
    if storage.is_run_sharded:
        connections["shard"] = lambda: storage.run_connection(event_retention.RUNLESS_RUN_ID)
    counts = {}
    for name, connect in connections.items():
        with connect() as conn:
            counts[name] = conn.execute(db.select(db.func.count()).select_from(
                event_retention.EVENTS).where(
                event_retention.EVENTS.c.run_id == event_retention.RUNLESS_RUN_ID)).scalar()
    return counts


def test_old_runless_events_go_and_the_newest_of_each_stays(instance):
    seeded = seed(instance, NOW)
    before = _runless_rows(instance)
    result = purge_events(instance, NOW, AGE)
    # Observations within 90 min (60, 30, 1 min ago) stay; the four older ones of each go.
    for key in seeded.topics:
        assert observed(instance, key) == [999, 970, 940]
    # Both materializations are older: the newest one stays, the UI's last one.
    assert materialized(instance, seeded.landed) == [200]
    assert result.check_executions == 4 and result.tags == 8
    after = _runless_rows(instance)
    assert set(before) == {"index", "shard"}
    assert all(after[name] < before[name] for name in before)  # both SQLite files purged
    assert check_history(instance, seeded.check) == ["SUCCEEDED"] * 3


def test_a_second_pass_deletes_nothing_and_new_events_still_land(instance):
    seeded = seed(instance, NOW)
    purge_events(instance, NOW, AGE)
    again = purge_events(instance, NOW, AGE)
    assert again.total_events == 0 and again.check_executions == 0
    with freeze_time(NOW):
        instance.report_runless_asset_event(dg.AssetObservation(
            asset_key=seeded.topics[0], metadata={"messages": 2000}))
    assert observed(instance, seeded.topics[0])[0] == 2000


def test_everything_old_leaves_the_newest_of_each(instance):
    """An age shorter than every tick: one observation per topic, the newest materialization,
    the newest check execution (a pass; the failure 180 min ago is gone) stay."""
    seeded = seed(instance, NOW)
    purge_events(instance, NOW, timedelta(seconds=1))
    assert [observed(instance, key) for key in seeded.topics] == [[999], [999]]
    assert materialized(instance, seeded.landed) == [200]
    assert check_history(instance, seeded.check) == ["SUCCEEDED"]


def _sensor_with_ticks(instance, name: str, minutes_ago: list[int]):
    """A sensor's state and a skipped tick at each of ``minutes_ago`` before NOW, as the
    daemon records them."""
    from dagster._core.remote_origin import (
        GrpcServerCodeLocationOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        TickData,
        TickStatus,
    )

    location = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000,
                                            location_name="streamflow_defs.definitions")
    origin = RemoteRepositoryOrigin(location, "__repository__").get_instigator_origin(name)
    state = InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    instance.add_instigator_state(state)
    for minutes in minutes_ago:
        instance.create_tick(TickData(
            instigator_origin_id=state.instigator_origin_id, instigator_name=name,
            instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
            timestamp=(NOW - timedelta(minutes=minutes)).timestamp(),
            selector_id=state.selector_id))
    return state


def _tick_ages(instance, state) -> list[int]:
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    return [round((NOW.timestamp() - tick.timestamp) / 60) for tick in ticks]


def test_old_ticks_go_and_each_sensors_newest_stays(instance):
    """The instance's own tick retention counts in whole days: at a retention of minutes
    (the lifecycle soak) the micro-batch sensor's ticks grew all hour. A sensor stopped
    long ago keeps its last tick, the UI's "last tick"."""
    ticking = _sensor_with_ticks(instance, "new_events", [200, 120, 60, 30, 1])
    stopped = _sensor_with_ticks(instance, "kafka_topics", [500, 400])

    assert purge_ticks(instance, NOW, AGE) == 2

    assert _tick_ages(instance, ticking) == [1, 30, 60]
    assert _tick_ages(instance, stopped) == [400]


def test_old_automation_evaluations_go_and_each_assets_newest_stays(instance):
    """Dagster keeps the automation sensor's evaluations 30 days (~8 MB an hour with the dbt
    models in the lifecycle soak); past the age they go, each asset's newest kept."""
    table = event_retention.EVALUATIONS
    rows = [("a", 200), ("a", 60), ("a", 1), ("b", 300), ("b", 200)]
    with instance.schedule_storage.connect() as conn:
        for n, (asset, minutes) in enumerate(rows):
            conn.execute(table.insert().values(
                evaluation_id=n, asset_key=asset, asset_evaluation_body="{}", num_requested=0,
                num_skipped=0, num_discarded=0,
                create_timestamp=event_retention.naive_utc(NOW - timedelta(minutes=minutes))))

    assert purge_automation_evaluations(instance, NOW, AGE) == 2

    with instance.schedule_storage.connect() as conn:
        left = conn.execute(db.select(table.c.asset_key, table.c.evaluation_id)
                            .order_by(table.c.id)).fetchall()
    assert [tuple(row) for row in left] == [("a", 1), ("a", 2), ("b", 4)]
