"""When the stream stops, its last windows close after the idle time (processing time) and are
published; a late event after that amends its window, which is published again. Real Kafka
and PostgreSQL; each test in a database of its own, so its events are the newest in event
time there and nothing but the idle rule can close its last window."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import text

from assets import MICROBATCH_ASSETS
from assets.microbatch import run_config
from resources import KafkaResource, PostgresResource
from sensors import microbatch as sensor_module
from streamflow import contract, topics
from streamflow.db import migrate
from streamflow.db.engine import make_engine
from streamflow.microbatch import windows
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import (
    Scenario,
    catch_up,
    evaluate_sensor,
    land,
    read_all,
)

# A short quiet time for these tests (it must exceed the grace period, so that shrinks too).
IDLE = timedelta(seconds=1)
QUIET = {"grace_seconds": 0.5, "idle_seconds": IDLE.total_seconds()}


@pytest.fixture
def database(fresh_database) -> str:
    """The test's own migrated database (the session's holds other tests' newer events)."""
    migrate.upgrade(fresh_database)
    return fresh_database


@pytest.fixture
def resources(platform, database):
    return {"postgres": PostgresResource(database_url=database),
            "kafka": KafkaResource(bootstrap_servers=platform.bootstrap)}


@pytest.fixture
def engine(database):
    eng = make_engine(database)
    yield eng
    eng.dispose()


def states(engine, *starts) -> dict:
    """(window_start, event_type) -> (events, revision, published_revision)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT window_start, event_type, events, revision, published_revision "
            "FROM streamflow.event_windows WHERE window_start = ANY(:s)"),
            {"s": list(starts)}).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def run_when_quiet(resources, config: dict | None = None) -> None:
    """No new events; the idle time passes; one micro-batch run with the short idle time."""
    time.sleep(IDLE.total_seconds() + 0.2)
    config = config or run_config(0)
    config["ops"]["event_windows"]["config"].update(QUIET)
    assert dg.materialize(MICROBATCH_ASSETS, resources=resources, run_config=config).success


def published(platform, start: datetime, event_type: str, revision: int) -> list[dict]:
    return read_all(platform, topics.ANALYTICS,
                    lambda v: v.get("window_start") == contract.format_time(start)
                    and v.get("event_type") == event_type and v.get("revision") == revision,
                    want=1)


def test_an_idle_stream_publishes_its_last_window_and_a_late_event_amends_it(
        platform, resources, engine, database, unique_name):
    s = Scenario()
    w0 = s.w0
    w2 = w0 + 2 * windows.WINDOW
    topic = create_topic(platform, unique_name)
    land(platform, topic, [s.event("login", 1, w0 + timedelta(seconds=1), success=True),
                           s.event("signup", 2, w2 + timedelta(seconds=1)),
                           s.event("signup", 3, w2 + timedelta(seconds=2))],
         database_url=database)
    catch_up(resources, engine)
    # Event time (last event - 10 s grace) closed w0; w2 waits, the stream is not quiet yet.
    assert states(engine, w0, w2) == {(w0, "login"): (1, 1, 1), (w2, "signup"): (2, 1, 0)}

    run_when_quiet(resources)
    assert states(engine, w2) == {(w2, "signup"): (2, 1, 1)}
    assert published(platform, w2, "signup", 1)[0]["events"] == 2

    # A late event (earlier than the last one) for that window: revision 2, held while the
    # stream is active again, published once it is quiet again.
    land(platform, topic, [s.event("signup", 4, w2 + timedelta(milliseconds=500))],
         database_url=database)
    catch_up(resources, engine)
    assert states(engine, w2) == {(w2, "signup"): (3, 2, 1)}
    run_when_quiet(resources)
    assert states(engine, w2) == {(w2, "signup"): (3, 2, 2)}
    assert published(platform, w2, "signup", 2)[0]["events"] == 3


def test_the_sensor_asks_once_for_a_run_when_only_idle_windows_wait(
        platform, resources, engine, database, unique_name, monkeypatch):
    s = Scenario()
    w0 = s.w0
    land(platform, create_topic(platform, unique_name),
         [s.event("page_view", 1, w0 + timedelta(seconds=1))], database_url=database)
    catch_up(resources, engine)
    assert states(engine, w0) == {(w0, "page_view"): (1, 1, 0)}
    instance = dg.DagsterInstance.ephemeral()
    waiting = evaluate_sensor(instance, resources)  # the default idle time has not passed
    assert isinstance(waiting, dg.SkipReason)
    assert "no new events" in waiting.skip_message
    assert "windows wait to be published" in waiting.skip_message

    monkeypatch.setattr(sensor_module, "IDLE", IDLE)
    time.sleep(IDLE.total_seconds() + 0.2)
    # Its speed (the idle rule's query included) is `make bench`'s: benchmarks/history.py.
    request = evaluate_sensor(instance, resources)
    with engine.connect() as conn:
        processed = conn.execute(text("SELECT min(last_seq) FROM streamflow.watermarks WHERE "
                                      "name IN ('notifications', 'event_windows')")).scalar_one()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"idle-{processed}"

    run_when_quiet(resources, request.run_config)
    assert states(engine, w0) == {(w0, "page_view"): (1, 1, 1)}
    done = evaluate_sensor(instance, resources)  # published: nothing more to ask for
    assert isinstance(done, dg.SkipReason)
    assert "windows wait" not in done.skip_message
