"""The reprocess job against the real Kafka and PostgreSQL: an unchanged range changes and
publishes nothing; raw rows fixed by an operator, then a contract change and its revert, bump
exactly the affected windows and republish exactly them; a second run is idempotent; a
micro-batch running meanwhile processes nothing twice; a bad range is refused."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import orjson
import pandera.pandas as pa
import psycopg
import pytest
from sqlalchemy import text

from assets.reprocess import reprocess_job
from resources import KafkaResource
from streamflow import contract, topics, validation
from streamflow.db.engine import connect_admin
from streamflow.kafka_clients import consumer
from streamflow.microbatch import batch, reprocess, windows
from streamflow.microbatch import notifications as contract_step
from tests.conftest import create_topic, wait_for
from tests.integration.microbatch_helpers import Scenario, catch_up, land, read_all

TOPICS = (topics.NOTIFICATIONS, topics.ANALYTICS, topics.DEAD_LETTER)
CHANGES = ("notifications_added", "notifications_added_former_rejects", "notifications_removed",
           "notifications_corrected", "dead_lettered", "windows_changed", "revisions_bumped",
           "published_notifications", "published_windows", "published_dead_letters")


def topic_ends(platform) -> dict[str, int]:
    """Messages ever written to the topics a reprocess publishes to (nothing else publishes
    while a test runs: the session runs no workers)."""
    probe = consumer(platform.kafka, "reprocess-probe")
    try:
        meta = probe.list_topics(timeout=10).topics
        return {t: sum(topics.end_offsets(probe, t, meta[t].partitions)) for t in TOPICS}
    finally:
        probe.close()


def published_since(platform, before: dict[str, int]) -> dict[str, int]:
    return {t: n - before[t] for t, n in topic_ends(platform).items() if n != before[t]}


def launch(resources, **config) -> dict:
    result = reprocess_job.execute_in_process(
        run_config={"ops": {"reprocess_range": {"config": config}}}, resources=resources)
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def changes(metadata: dict) -> dict:
    return {k: metadata[k] for k in CHANGES if metadata[k]}


def windows_of(engine, *starts) -> dict:
    """(window_start, event_type) -> (events, purchase_cents, revision, published_revision)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT window_start, event_type, events, purchase_cents, revision, "
            "published_revision FROM streamflow.event_windows WHERE window_start = ANY(:s)"),
            {"s": list(starts)}).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def seq_range(engine, ids: list[str]) -> tuple[int, int]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT min(ingest_seq), max(ingest_seq) FROM raw.events "
            "WHERE event_id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids}).one())


def fix_raw(engine, event: dict, **values) -> None:
    """What an operator does to a wrong row: its typed columns and its payload alike."""
    fixed = {**event, **values}
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE raw.events SET country = :country, amount_cents = :amount_cents, "
            "payload = CAST(:payload AS json) WHERE event_id = CAST(:event_id AS uuid)"),
            {"country": fixed["country"], "amount_cents": fixed.get("amount_cents"),
             "payload": orjson.dumps(fixed).decode(), "event_id": fixed["event_id"]})


class LogoutsRetired(validation.EventContract):
    """A contract change: logouts are no longer valid events."""

    @pa.dataframe_check(name="logout_retired")
    def logout_retired(cls, df):
        return df["event_type"] != contract.EventType.LOGOUT.value


def test_a_range_is_recomputed_exactly_where_its_rows_changed(platform, resources, engine,
                                                               unique_name, monkeypatch):
    s = Scenario()
    w0, w1, w2 = s.w0, s.w1, s.w1 + windows.WINDOW
    at = timedelta(seconds=1)
    purchase, rejected, logout = (
        s.event("purchase", 3, w0 + 4 * at, amount_cents=500),
        s.event("page_view", 5, w1 + 4 * at, country="ZZ"),
        s.event("logout", 1, w2 + at))
    viewed = s.event("page_view", 2, w1 + 2 * at)
    land(platform, create_topic(platform, unique_name), [
        s.event("login", 1, w0 + at, success=True), s.event("login", 2, w0 + 2 * at, success=True),
        s.event("purchase", 3, w0 + 3 * at, amount_cents=1000), purchase,
        s.event("page_view", 1, w1 + at), viewed,
        s.event("signup", 4, w1 + 3 * at), rejected, logout,
        # Outside the range; moves event time on, so the range's windows are closed.
        s.event("page_view", 8, w2 + 60 * at)])
    catch_up(resources, engine)
    original = {(w0, "login"): (2, 0, 1, 1), (w0, "purchase"): (2, 1500, 1, 1),
                (w1, "page_view"): (2, 0, 1, 1), (w1, "signup"): (1, 0, 1, 1),
                (w2, "logout"): (1, 0, 1, 1)}
    assert windows_of(engine, w0, w1, w2) == original
    by_time = {"occurred_from": contract.format_time(w0),
               "occurred_to": contract.format_time(w2 + windows.WINDOW)}
    first, last = seq_range(engine, s.ids)

    # Unchanged: rechecked, nothing written, nothing published.
    before = topic_ends(platform)
    unchanged = launch(resources, **by_time)
    assert unchanged["rows_rechecked"] == 9 and changes(unchanged) == {}
    assert unchanged["windows_recomputed"] == 3
    assert launch(resources, ingest_seq_from=first, ingest_seq_to=last)["rows_rechecked"] == 10
    assert published_since(platform, before) == {}
    assert windows_of(engine, w0, w1, w2) == original

    # An operator fixes two rows: the rejected country, a purchase's amount.
    fix_raw(engine, rejected, country="DE")
    fix_raw(engine, purchase, amount_cents=700)
    dry = launch(resources, **by_time, dry_run=True)
    assert changes(dry) == {"notifications_added": 1, "notifications_added_former_rejects": 1,
                            "notifications_corrected": 1, "windows_changed": 2,
                            "revisions_bumped": 2, "published_notifications": 2,
                            "published_windows": 2}
    assert published_since(platform, before) == {}
    assert windows_of(engine, w0, w1, w2) == original

    fixed = launch(resources, **by_time)
    assert changes(fixed) == changes(dry)
    amended = {**original, (w0, "purchase"): (2, 1700, 2, 2), (w1, "page_view"): (3, 0, 2, 2)}
    assert windows_of(engine, w0, w1, w2) == amended
    assert published_since(platform, before) == {topics.NOTIFICATIONS: 2, topics.ANALYTICS: 2}
    republished = read_all(platform, topics.ANALYTICS, lambda v: v.get("revision") == 2 and (
        v["window_start"] in (contract.format_time(w0), contract.format_time(w1))), want=2)
    assert sorted((v["event_type"], v["events"], v["purchase_cents"]) for v in republished) == [
        ("page_view", 3, 0), ("purchase", 2, 1700)]

    # Idempotent: the same reprocess again changes and publishes nothing.
    before = topic_ends(platform)
    assert changes(launch(resources, **by_time)) == {}
    assert published_since(platform, before) == {}

    # A contract change: the logout now fails. Its notification goes, it is dead-lettered,
    # its window empties (revision 2, published with zero events).
    monkeypatch.setattr(validation, "EventContract", LogoutsRetired)
    monkeypatch.setattr(validation, "ROW_CHECKS", (*validation.ROW_CHECKS, "logout_retired"))
    stricter = launch(resources, ingest_seq_from=first, ingest_seq_to=last)
    assert changes(stricter) == {"notifications_removed": 1, "dead_lettered": 1,
                                 "windows_changed": 1, "revisions_bumped": 1,
                                 "published_windows": 1, "published_dead_letters": 1}
    assert "logout_retired: 1" in stricter["top_reasons"]
    assert windows_of(engine, w2) == {(w2, "logout"): (0, 0, 2, 2)}
    with engine.connect() as conn:
        reason = conn.execute(text("SELECT reason FROM raw.dead_letters WHERE stage = 'contract' "
                                   "AND event_id = :id"), {"id": logout["event_id"]}).scalar_one()
    assert reason == "logout_retired"
    assert published_since(platform, before) == {topics.ANALYTICS: 1, topics.DEAD_LETTER: 1}
    assert changes(launch(resources, ingest_seq_from=first, ingest_seq_to=last)) == {}

    # The change reverted (a contract fix): the logout passes again, its window is back.
    monkeypatch.undo()
    before = topic_ends(platform)
    reverted = launch(resources, ingest_seq_from=first, ingest_seq_to=last)
    assert changes(reverted) == {"notifications_added": 1,
                                 "notifications_added_former_rejects": 1, "windows_changed": 1,
                                 "revisions_bumped": 1, "published_notifications": 1,
                                 "published_windows": 1}
    assert windows_of(engine, w0, w1, w2) == {**amended, (w2, "logout"): (1, 0, 3, 3)}
    assert published_since(platform, before) == {topics.NOTIFICATIONS: 1, topics.ANALYTICS: 1}

    # Test traffic deleted from raw.events: its notification goes, its window shrinks. In
    # chunks of three rows, by either kind of range.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM raw.events WHERE event_id = CAST(:id AS uuid)"),
                     {"id": viewed["event_id"]})
    sent: list = []

    def send_dead_letters(letters) -> list:
        sent.extend(letters)
        return []  # none refused

    publishers = reprocess.Publishers(sent.extend, sent.extend, send_dead_letters)
    with connect_admin(platform.database_url) as conn:
        deleted = reprocess.run(conn, reprocess.SeqRange(first, last), publishers, limit=3)
        assert deleted.chunks >= 3 and deleted.counts.rechecked == 9  # 4: the deleted row was last
        assert (deleted.counts.removed, deleted.counts.dead_lettered) == (1, 0)
        assert (deleted.counts.revisions_bumped, deleted.counts.windows_published) == (1, 1)
        assert len(sent) == 1
        again = reprocess.run(conn, reprocess.parse_range(**by_time), publishers, limit=3)
        assert (again.chunks, again.counts.rechecked) == (3, 8)
        assert again.counts == reprocess.Counts(rechecked=8, windows_recomputed=3)
    assert len(sent) == 1
    assert windows_of(engine, w1) == {(w1, "page_view"): (2, 0, 3, 3), (w1, "signup"): (1, 0, 1, 1)}


def test_a_micro_batch_running_meanwhile_processes_nothing_twice(platform, resources, engine,
                                                                 unique_name):
    catch_up(resources, engine)  # other tests' rows out of the way
    s = Scenario()
    land(platform, create_topic(platform, unique_name),
         [s.event("page_view", i % 3, s.w0 + timedelta(milliseconds=300 * i)) for i in range(20)]
         + [s.event("page_view", 9, s.w0 + timedelta(minutes=2))])
    first, last = seq_range(engine, s.ids)
    by_seq = {"ingest_seq_from": first, "ingest_seq_to": last}
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    before = topic_ends(platform)

    # The contract step is working on the rows (its claim open): the reprocess leaves them.
    publishing, go_on = threading.Event(), threading.Event()

    def held(publish):
        def hold(messages) -> None:
            publishing.set()
            assert go_on.wait(60), "the reprocess did not finish while the step was held"
            publish(messages)
        return hold

    conn = connect_admin(platform.database_url)
    try:
        with ThreadPoolExecutor(1) as pool:
            step = pool.submit(contract_step.run, conn, last, held(
                lambda m: kafka.publish(topics.NOTIFICATIONS, m)), kafka.publish_dead_letters)
            assert publishing.wait(60)
            left = launch(resources, **by_seq)
            go_on.set()
            checked = step.result(60)
        assert left["rows_rechecked"] == 0 and left["processed_upto"] < first
        assert changes(left) == {}
        assert (checked.checked, checked.published) == (21, 21)

        # The windows step is in its transaction: the reprocess waits for its lock.
        publishing.clear()
        go_on.clear()

        def release_once_the_reprocess_waits() -> None:
            wait_for(lambda: _waiting_for_a_lock(engine), timeout_s=60,
                     message="the reprocess waiting for the windows step's lock")
            go_on.set()

        with ThreadPoolExecutor(2) as pool:
            step = pool.submit(windows.run, conn, last, held(
                lambda m: kafka.publish(topics.ANALYTICS, m)))
            assert publishing.wait(60)
            watcher = pool.submit(release_once_the_reprocess_waits)
            after = launch(resources, **by_seq)
            watcher.result(60)
            windowed = step.result(60)
        assert batch.watermark(conn, windows.STEP) >= last
    finally:
        conn.close()
    assert after["rows_rechecked"] == 21 and changes(after) == {}
    assert windowed.published >= 1
    assert windows_of(engine, s.w0) == {(s.w0, "page_view"): (20, 0, 1, 1)}
    with engine.connect() as conn:
        notified = conn.execute(text("SELECT count(*) FROM streamflow.notifications "
                                     "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                                {"ids": s.ids}).scalar_one()
    assert notified == 21
    assert published_since(platform, before) == {topics.NOTIFICATIONS: 21,
                                                 topics.ANALYTICS: windowed.published}


def test_a_reprocess_publishes_with_the_windows_lock_released(platform, resources, engine,
                                                               unique_name):
    """The windows step could take its lock at each of the reprocess's Kafka flushes: none
    of them holds up the step (they held it for three flushes a chunk)."""
    s = Scenario()
    at = timedelta(seconds=1)
    rejected = s.event("page_view", 5, s.w0 + 4 * at, country="ZZ")
    land(platform, create_topic(platform, unique_name), [
        s.event("page_view", 1, s.w0 + at), rejected,
        s.event("page_view", 8, s.w0 + 60 * at)])  # moves event time on: w0 is closed
    catch_up(resources, engine)
    fix_raw(engine, rejected, country="DE")  # the reprocess adds it and amends w0
    first, last = seq_range(engine, s.ids)
    kafka = KafkaResource(bootstrap_servers=platform.bootstrap)
    lock_free: dict[str, list[bool]] = {"notifications": [], "dead_letters": [], "windows": []}

    def probed(name: str, publish):
        def probe_then_publish(messages):
            lock_free[name].append(_windows_lock_free(platform))
            return publish(messages)
        return probe_then_publish

    publishers = reprocess.Publishers(
        notifications=probed("notifications", lambda m: kafka.publish(topics.NOTIFICATIONS, m)),
        windows=probed("windows", lambda m: kafka.publish(topics.ANALYTICS, m)),
        dead_letters=probed("dead_letters", kafka.publish_dead_letters))
    with connect_admin(platform.database_url) as conn:
        result = reprocess.run(conn, reprocess.SeqRange(first, last), publishers)
    assert (result.counts.added, result.counts.windows_published) == (1, 1)
    assert lock_free == {"notifications": [True], "dead_letters": [True], "windows": [True]}
    assert windows_of(engine, s.w0) == {(s.w0, "page_view"): (2, 0, 2, 2)}


def _windows_lock_free(platform) -> bool:
    """Whether another session can take the windows step's lock now (it waits 0.2 s for it:
    a lock held across a flush is held all that time)."""
    with connect_admin(platform.database_url, "windows-lock-probe") as conn:
        try:
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                batch.lock(conn, windows.STEP)
            return True
        except psycopg.errors.LockNotAvailable:
            return False


def _waiting_for_a_lock(engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND NOT l.granted "
            "AND a.application_name = 'streamflow-dagster'")).scalar_one() > 0


@pytest.mark.parametrize(("config", "says"), [
    ({}, "no range"),
    ({"occurred_from": "2026-11-27T14:00:00Z", "occurred_to": "2026-11-27T15:00:00Z",
      "ingest_seq_from": 1, "ingest_seq_to": 2}, "not both"),
    ({"occurred_from": "2026-11-27T15:00:00Z", "occurred_to": "2026-11-27T14:00:00Z"},
     "empty time range"),
    ({"ingest_seq_from": 7, "ingest_seq_to": 3}, "empty ingest-sequence range"),
])
def test_a_bad_range_is_refused(platform, resources, config, says):
    result = reprocess_job.execute_in_process(
        run_config={"ops": {"reprocess_range": {"config": config}}}, resources=resources,
        raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert says in str(failure.event_specific_data.error)
