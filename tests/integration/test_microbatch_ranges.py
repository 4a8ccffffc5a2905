"""A range bigger than one batch, processed in many small runs, gives what one run gives; the
incremental dlq_report always equals a full recount."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from resources import KafkaResource
from streamflow import topics
from streamflow.db.dead_letters import insert_dead_letters
from streamflow.db.engine import connect_admin
from streamflow.dlq import DeadLetter, Reason, Stage
from streamflow.microbatch import batch, windows
from streamflow.microbatch import notifications as contract_step
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import Scenario, catch_up, land

TYPES = ("login", "logout", "signup", "purchase", "page_view")


def events_in(s: Scenario, rng: random.Random, shift: timedelta = timedelta(0)) -> list[dict]:
    """~300 events over 6 windows, with late ones and contract rejects, from a seeded rng."""
    out = []
    for _ in range(300):
        kind = rng.choice(TYPES)
        at = s.w0 + shift + timedelta(milliseconds=rng.randrange(60_000))
        extra = {"success": rng.random() < 0.8} if kind == "login" else {}
        if kind == "purchase":
            extra = {"amount_cents": rng.choice([-5, 100, 2500])}  # -5: a reject
        out.append(s.event(kind, rng.randrange(40), at, **extra))
    return out


def window_numbers(engine, start: datetime, shift: timedelta = timedelta(0)) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT window_start, event_type, events, distinct_users, login_successes, "
            "login_failures, purchase_cents FROM streamflow.event_windows "
            "WHERE window_start >= :a AND window_start < :b ORDER BY 1, 2"),
            {"a": start + shift, "b": start + shift + timedelta(seconds=60)}).all()
    return {(r[0] - shift, r[1]): tuple(r[2:]) for r in rows}


def test_many_small_runs_give_the_windows_and_notifications_of_one(platform, resources,
                                                                   engine, unique_name):
    topic = create_topic(platform, unique_name)
    one, many = Scenario(), Scenario()
    # The same events twice (same seed), in two time slots: `one` catches up in single runs,
    # `many` in runs of 3 chunks of 17 events each.
    shift = many.w0 - one.w0
    land(platform, topic, events_in(one, random.Random(7)))
    catch_up(resources, engine)
    land(platform, topic, events_in(many, random.Random(7)))
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    conn = connect_admin(platform.database_url)
    try:
        landed = batch.landed_max_seq(conn)
        runs = 0
        while min(batch.watermarks(conn, [contract_step.STEP, windows.STEP]).values()) < landed:
            upto = min(batch.watermark(conn, contract_step.STEP) + 3 * 17, landed)
            result = contract_step.run(conn, upto, lambda m: kafka.publish(topics.NOTIFICATIONS,
                                                                           m),
                                       kafka.publish_dead_letters, limit=17)
            assert result.chunks <= 3
            windows.run(conn, upto, lambda m: kafka.publish(topics.ANALYTICS, m))
            runs += 1
        assert runs >= 5
    finally:
        conn.close()

    assert window_numbers(engine, one.w0, shift) == window_numbers(engine, one.w0)
    assert window_numbers(engine, one.w0)  # not two empty results
    with engine.connect() as conn:
        def outcome(ids):
            valid = conn.execute(text("SELECT count(*) FROM streamflow.notifications "
                                      "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                                 {"ids": ids}).scalar_one()
            reasons = conn.execute(text("SELECT reason FROM raw.dead_letters WHERE stage = "
                                        "'contract' AND event_id = ANY(:ids) ORDER BY reason"),
                                   {"ids": ids}).scalars().all()
            return valid, reasons
        assert outcome(many.ids) == outcome(one.ids)
        assert outcome(one.ids)[1]  # the rejects are there, with their reasons


def recount(engine) -> dict:
    with engine.connect() as conn:
        kept = dict(((h, s, r), n) for h, s, r, n in conn.execute(text(
            "SELECT hour, stage, reason_code, dead_letters FROM streamflow.dlq_report "
            "WHERE dead_letters > 0")).all())
        full = dict(((h, s, r), n) for h, s, r, n in conn.execute(text(
            "SELECT date_trunc('hour', created_at, 'UTC'), stage, reason_code, count(*) "
            "FROM raw.dead_letters GROUP BY 1, 2, 3")).all())
    return kept, full


def test_incremental_dlq_report_equals_a_full_recount(platform, engine):
    rng = random.Random(11)
    source = f"t-{uuid.uuid4().hex[:8]}"
    conn = connect_admin(platform.database_url)
    try:
        for _ in range(30):  # 30 transactions, some with duplicates, across many hours
            letters = [DeadLetter(stage=rng.choice(list(Stage)),
                                  reason_code=rng.choice(list(Reason)), reason="why",
                                  payload=b"x", key=None, headers={}, source_topic=source,
                                  source_partition=rng.randrange(3),
                                  source_offset=rng.randrange(400))
                       for _ in range(rng.randrange(1, 40))]
            with conn.transaction():
                insert_dead_letters(conn, letters)
                conn.execute("UPDATE raw.dead_letters SET created_at = %s WHERE "
                             "source_topic = %s AND created_at > now() - interval '1 minute'",
                             (datetime.now(UTC) - timedelta(hours=rng.randrange(72)), source))
        with conn.transaction():
            conn.execute("DELETE FROM raw.dead_letters WHERE source_topic = %s "
                         "AND source_offset %% 5 = 0", (source,))
    finally:
        conn.close()
    kept, full = recount(engine)
    assert kept == full
    assert sum(n for (_, _, _), n in full.items()) > 0
