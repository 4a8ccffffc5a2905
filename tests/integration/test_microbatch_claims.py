"""Overlapping runs of the contract step work on disjoint claimed ranges at the same time; the
watermark never passes a range still being worked on; an abandoned claim is taken over."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import text

from resources import KafkaResource
from streamflow import topics
from streamflow.db.engine import connect_admin
from streamflow.microbatch import batch, claims
from streamflow.microbatch import notifications as contract_step
from tests.conftest import create_topic
from tests.integration.microbatch_helpers import Scenario, catch_up, land


def _land_events(platform, resources, engine, topic: str, n: int) -> tuple[Scenario, int, int]:
    """n valid events landed after everything before them was processed: (scenario, the
    watermark before them, the last ingest_seq)."""
    catch_up(resources, engine)  # other tests' rows out of the way
    s = Scenario()
    land(platform, topic, [s.event("page_view", i % 7, s.w0 + timedelta(milliseconds=i))
                           for i in range(n)])
    with engine.connect() as conn:
        before = conn.execute(text("SELECT last_seq FROM streamflow.watermarks "
                                   "WHERE name = 'notifications'")).scalar_one()
        landed = conn.execute(text("SELECT max(ingest_seq) FROM raw.events")).scalar_one()
    return s, before, landed


def _notified(engine, ids: list[str]) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM streamflow.notifications "
                                 "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                            {"ids": ids}).scalar_one()


def _open_claims(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM streamflow.step_claims")).scalar_one()


def test_overlapping_runs_work_on_disjoint_ranges_at_once(platform, resources, engine,
                                                          unique_name):
    s, before, landed = _land_events(platform, resources, engine,
                                     create_topic(platform, unique_name), 60)
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    first_publishing, second_done = threading.Event(), threading.Event()

    def publish(messages) -> None:
        kafka.publish(topics.NOTIFICATIONS, messages)

    def held_open(messages) -> None:
        """Run A's first chunk stays open until run B has finished a chunk of its own."""
        first_publishing.set()
        assert second_done.wait(20), "run B waited for run A instead of working alongside"
        publish(messages)

    conn_a = connect_admin(platform.database_url)
    conn_b = connect_admin(platform.database_url)
    try:
        with ThreadPoolExecutor(1) as pool:
            a = pool.submit(contract_step.run, conn_a, landed, held_open,
                            kafka.publish_dead_letters, limit=30)
            assert first_publishing.wait(30)
            b = contract_step.run(conn_b, landed, publish, kafka.publish_dead_letters, limit=30)
            # B's range is done, A's is not: the watermark must not pass A's range.
            assert batch.watermark(conn_b, contract_step.STEP) == before
            second_done.set()
            result_a = a.result(30)
        assert (result_a.checked, b.checked) == (30, 30)
        assert b.after == result_a.upto  # disjoint and adjacent
        assert batch.watermark(conn_b, contract_step.STEP) == landed
    finally:
        conn_a.close()
        conn_b.close()
    assert _notified(engine, s.ids) == 60
    assert _open_claims(engine) == 0


def test_an_abandoned_claim_is_taken_over(platform, resources, engine, unique_name):
    s, before, landed = _land_events(platform, resources, engine,
                                     create_topic(platform, unique_name), 40)
    crashed = connect_admin(platform.database_url)
    claim = claims.next_claim(crashed, contract_step.STEP, landed, 20)
    assert claim is not None and claim.after == before
    crashed.close()  # the run died: its session, and the claim's lock, are gone
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    with connect_admin(platform.database_url) as conn:
        result = contract_step.run(conn, landed,
                                   lambda m: kafka.publish(topics.NOTIFICATIONS, m),
                                   kafka.publish_dead_letters, limit=20)
        # A taker that died counts as an attempt: its claim is split (10 + 10), then the
        # next 20 are claimed whole.
        assert result.checked == 40 and result.chunks == 3
        assert batch.watermark(conn, contract_step.STEP) == landed
    assert _notified(engine, s.ids) == 40
    assert _open_claims(engine) == 0
