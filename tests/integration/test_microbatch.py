"""The micro-batch assets and sensor against the real Kafka and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from sqlalchemy import text

from assets import MICROBATCH_ASSETS
from assets.checks import CHECKS, raw_events_fresh
from resources import PostgresResource
from streamflow import contract, topics
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import (
    Scenario,
    catch_up,
    evaluate_sensor,
    land,
    materialize,
    read_all,
)


def windows_of(engine, *starts) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT window_start, event_type, events, distinct_users, login_successes, "
            "login_failures, purchase_cents, revision FROM streamflow.event_windows "
            "WHERE window_start = ANY(:s) ORDER BY 1, 2"), {"s": list(starts)}).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def test_a_known_batch_gives_exact_windows_reasons_and_topics(platform, resources, engine,
                                                              unique_name):
    s = Scenario()
    t0, t1 = s.w0 + timedelta(seconds=1), s.w1 + timedelta(seconds=2)
    good = [
        s.event("login", 1, t0, success=True), s.event("login", 1, t0, success=False),
        s.event("login", 2, t0, success=True),
        s.event("purchase", 3, t0, amount_cents=1000), s.event("purchase", 3, t0, amount_cents=500),
        s.event("page_view", 1, t0), s.event("logout", 2, t1), s.event("signup", 4, t1),
    ]
    bad = [s.event("teleport", 5, t0), s.event("purchase", 6, t0, amount_cents=-5)]
    # A later event moves event time on, so both windows close (grace 10 s) and publish.
    clock = [s.event("page_view", 8, s.w1 + timedelta(seconds=60))]
    land(platform, create_topic(platform, unique_name), good + bad + clock)
    catch_up(resources, engine)

    expected = {
        (s.w0, "login"): (3, 2, 2, 1, 0, 1),
        (s.w0, "page_view"): (1, 1, 0, 0, 0, 1),
        (s.w0, "purchase"): (2, 1, 0, 0, 1500, 1),
        (s.w1, "logout"): (1, 1, 0, 0, 0, 1),
        (s.w1, "signup"): (1, 1, 0, 0, 0, 1),
    }
    assert windows_of(engine, s.w0, s.w1) == expected

    with engine.connect() as conn:
        letters = dict(conn.execute(text(
            "SELECT event_id, reason FROM raw.dead_letters WHERE stage = 'contract' AND "
            "reason_code = 'contract' AND event_id = ANY(:ids)"),
            {"ids": [e["event_id"] for e in bad]}).all())
        valid = conn.execute(text("SELECT count(*) FROM streamflow.notifications WHERE "
                                  "event_id = ANY(CAST(:ids AS uuid[]))"),
                             {"ids": [e["event_id"] for e in good]}).scalar_one()
    assert valid == len(good)
    assert "event_type: isin" in letters[bad[0]["event_id"]]
    assert "amount_cents: greater_than(0)" in letters[bad[1]["event_id"]]

    good_ids = {e["event_id"] for e in good}
    published = read_all(platform, topics.NOTIFICATIONS, lambda v: v.get("event_id") in good_ids,
                         want=len(good))
    assert {v["event_id"] for v in published} == good_ids
    assert all("email" not in v for v in published)
    on_dlq = read_all(platform, topics.DEAD_LETTER,
                      lambda v: isinstance(v, dict) and v.get("event_id") in
                      {e["event_id"] for e in bad}, want=len(bad))
    assert len(on_dlq) >= len(bad)
    windows = read_all(platform, topics.ANALYTICS,
                       lambda v: v.get("window_start") in {contract.format_time(s.w0),
                                                       contract.format_time(s.w1)}, want=5)
    assert {(w["event_type"], w["events"], w["revision"]) for w in windows} >= {
        ("login", 3, 1), ("purchase", 2, 1), ("page_view", 1, 1), ("logout", 1, 1),
        ("signup", 1, 1)}

    # The same batch again changes nothing.
    materialize(resources)
    assert windows_of(engine, s.w0, s.w1) == expected

    # A late login amends its window: events 4, revision 2, republished.
    land(platform, unique_name, [s.event("login", 7, t0, success=True)])
    catch_up(resources, engine)
    assert windows_of(engine, s.w0)[(s.w0, "login")] == (4, 3, 3, 1, 0, 2)
    assert windows_of(engine, s.w0)[(s.w0, "purchase")] == (2, 1, 0, 0, 1500, 1)
    amended = read_all(platform, topics.ANALYTICS,
                       lambda v: v.get("window_start") == contract.format_time(s.w0)
                       and v["event_type"] == "login" and v["revision"] == 2, want=1)
    assert amended and amended[0]["events"] == 4


def test_sensor_requests_one_stable_run_then_skips(platform, resources, engine, unique_name):
    s = Scenario()
    land(platform, create_topic(platform, unique_name),
         [s.event("login", 1, s.w0, success=True)])
    instance = dg.DagsterInstance.ephemeral()
    first, again = (evaluate_sensor(instance, resources) for _ in range(2))
    assert isinstance(first, dg.RunRequest) and isinstance(again, dg.RunRequest)
    assert first.run_key == again.run_key
    with engine.connect() as conn:
        landed = conn.execute(text("SELECT max(ingest_seq) FROM raw.events")).scalar_one()
    assert first.run_key.endswith(f"-{landed}")
    assert first.run_config["ops"]["notifications"]["config"]["upto_seq"] == landed

    catch_up(resources, engine)
    # How fast it skips or asks is `make bench`'s (benchmarks/history.py: sensor_skip and
    # sensor_request at 0 to 10M rows of history), not a test's: here only what it decides.
    skipped = evaluate_sensor(instance, resources)
    assert isinstance(skipped, dg.SkipReason)
    assert "no new events" in skipped.skip_message


def test_checks_evaluate(platform, resources, engine, unique_name):
    # Its own rows, landed now and in event time: run alone, on an empty database, the
    # freshness and window checks have something to judge (not what other tests left).
    s = Scenario()
    events = [s.event("signup", 1, s.w0), s.event("login", 2, s.w0, success=True),
              s.event("page_view", 2, s.w1)]
    land(platform, create_topic(platform, unique_name), events)
    catch_up(resources, engine)
    result = dg.materialize(
        [*MICROBATCH_ASSETS, *(c for c in CHECKS if c is not raw_events_fresh)],
        resources=resources,
        run_config={"ops": {"notifications": {"config": {"upto_seq": 0}},
                            "event_windows": {"config": {"upto_seq": 0}}}},
    )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {"contract_pass_rate", "dlq_rate", "no_missing_windows"} <= set(evaluations)
    # The pass rate judged at least this test's events (the last hour's counters).
    assert evaluations["contract_pass_rate"].metadata["checked"].value >= len(events)
    assert evaluations["no_missing_windows"].passed
    assert set(windows_of(engine, s.w0, s.w1)) == {
        (s.w0, "signup"), (s.w0, "login"), (s.w1, "page_view")}
    fresh = raw_events_fresh(PostgresResource(database_url=platform.database_url))
    assert fresh.passed  # this test's rows landed moments ago


def test_no_missing_windows_finds_a_missing_window(platform, resources, engine, unique_name):
    from assets.checks import no_missing_windows

    s = Scenario()
    land(platform, create_topic(platform, unique_name), [s.event("signup", 1, s.w0)])
    catch_up(resources, engine)
    check = PostgresResource(database_url=platform.database_url)
    assert no_missing_windows(check).passed
    hide = text("UPDATE streamflow.event_windows SET event_type = :to "
                "WHERE window_start = :w AND event_type = :frm")
    with engine.begin() as conn:  # the window row goes missing (under another name)
        conn.execute(hide, {"w": s.w0, "frm": "signup", "to": "signup-hidden"})
    try:
        result = no_missing_windows(check)
        assert not result.passed
        assert result.metadata["missing_windows"].value == 1
    finally:
        with engine.begin() as conn:
            conn.execute(hide, {"w": s.w0, "frm": "signup-hidden", "to": "signup"})


def test_a_failed_range_is_retried_without_new_events(platform, resources, engine, unique_name,
                                                      monkeypatch):
    from sensors import microbatch as sensor_module

    s = Scenario()
    land(platform, create_topic(platform, unique_name), [s.event("signup", 1, s.w0)])
    instance = dg.DagsterInstance.ephemeral()
    first = evaluate_sensor(instance, resources)
    assert isinstance(first, dg.RunRequest)
    # That run failed (and so did its retries): the same range, no new traffic.
    instance.add_run(dg.DagsterRun(job_name="microbatch", status=dg.DagsterRunStatus.FAILURE,
                                   tags={**first.tags, "dagster/run_key": first.run_key}))
    waiting = evaluate_sensor(instance, resources)
    assert isinstance(waiting, dg.SkipReason)
    assert "failed" in waiting.skip_message and "next attempt in" in waiting.skip_message
    monkeypatch.setattr(sensor_module, "RETRY_AFTER", timedelta(0))
    retry = evaluate_sensor(instance, resources)
    assert isinstance(retry, dg.RunRequest)
    assert retry.run_key == first.run_key + "-attempt-2"
    catch_up(resources, engine)
