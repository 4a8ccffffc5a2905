"""The lifecycle pass against the real PostgreSQL (streamflow.lifecycle): a period past its
retention is archived, verified and dropped, with every row in the archive; an archive that
fails keeps its partition, rows and all; a pass stopped after its detach is finished by the
next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streamflow import lifecycle
from streamflow.archive import archive_checksum, db_checksum
from streamflow.db import migrate, partitions
from streamflow.db.engine import connect_admin
from streamflow.db.partitions import EVENTS, Period

HOUR = timedelta(hours=1)
RETENTION = 2 * HOUR


def _old_period(url: str, spec: partitions.Partitioned) -> Period:
    """The database at head with hourly partitions, and one made for ``spec`` four hours ago
    (past RETENTION): that period."""
    migrate.upgrade(url, partition_interval=HOUR)
    now = datetime.now(UTC)
    old = Period.holding(now - 4 * HOUR, HOUR)
    with connect_admin(url) as conn:
        partitions.ensure(conn, spec, HOUR, now, periods_wanted=[old])
    return old


def _dead_letters(url: str, count: int, at: datetime) -> None:
    with connect_admin(url) as conn:
        conn.execute("""
            INSERT INTO raw.dead_letters (stage, reason_code, reason, source_topic,
                                          source_partition, source_offset, created_at)
            SELECT 'ingest', 'not_json', 'x', 't', 0, g, %s FROM generate_series(1, %s) g""",
                     (at, count))


def _steps(report: lifecycle.Report) -> list[tuple[str, str, int]]:
    return [(s.period, s.action, s.rows) for s in report.steps]


@pytest.fixture
def aged(fresh_database):
    """A database with hourly partitions and 500 events landed four hours ago (in the
    partition of that hour): its URL and that period."""
    old = _old_period(fresh_database, EVENTS)
    with connect_admin(fresh_database) as conn:
        conn.execute("""
            INSERT INTO raw.events (event_id, payload, kafka_topic, kafka_partition,
                                    kafka_offset, ingested_at)
            SELECT gen_random_uuid(), '{"n": 1}'::json, 't', 0, g, %s + g * interval '1 second'
            FROM generate_series(1, 500) g""", (old.start,))
    _read_by_the_contract_step(fresh_database)
    return fresh_database, old


def _read_by_the_contract_step(url: str) -> None:
    """The contract step's watermark past every landed event (the lifecycle keeps raw rows
    it has not read)."""
    from streamflow.microbatch import batch, notifications

    with connect_admin(url) as conn, conn.transaction():
        batch.advance(conn, notifications.STEP, batch.landed_max_seq(conn))


def _pass(url: str, archive: str) -> lifecycle.Report:
    return lifecycle.run_pass(url, archive, HOUR, lambda spec: RETENTION,
                              tables=(EVENTS,))


def _names(url: str) -> set[str]:
    with connect_admin(url) as conn:
        return {p.name for p in partitions.partitions(conn, EVENTS)}


def test_a_period_past_retention_is_archived_verified_and_dropped(aged, tmp_path):
    url, old = aged
    with connect_admin(url) as conn:
        landed = db_checksum(conn, EVENTS, old)
    assert landed.rows == 500
    report = _pass(url, str(tmp_path / "archive"))
    assert [step for step in _steps(report) if step[1] == "dropped"] == [
        (old.key, "dropped", 500)]
    assert not report.failures
    assert EVENTS.partition_name(old) not in _names(url)
    with connect_admin(url) as conn:
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 0
        assert partitions.detached(conn, EVENTS) == []
    assert archive_checksum(str(tmp_path / "archive"), EVENTS, old) == landed
    # The next pass finds nothing to do for that period.
    again = _pass(url, str(tmp_path / "archive"))
    assert not [s for s in again.steps if s.period == old.key]


def test_a_failed_archive_keeps_its_partition_and_fails_the_pass(aged, tmp_path):
    url, old = aged
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the archive's folder should be")
    report = _pass(url, str(blocked))
    (failed,) = report.failures
    assert failed.period == old.key and "the partition is kept" in failed.detail
    assert EVENTS.partition_name(old) in _names(url)
    with connect_admin(url) as conn:
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 500


def test_a_pass_stopped_after_its_detach_is_finished_by_the_next(aged, tmp_path):
    url, old = aged
    name = EVENTS.partition_name(old)
    with connect_admin(url) as conn:
        conn.execute(f"ALTER TABLE raw.events DETACH PARTITION raw.{name}")  # noqa: S608 (a test's own name)
        assert partitions.detached(conn, EVENTS) == [name]
    report = _pass(url, str(tmp_path / "archive"))
    assert (old.key, "dropped", 500) in _steps(report)
    with connect_admin(url) as conn:
        assert partitions.detached(conn, EVENTS) == []
    assert archive_checksum(str(tmp_path / "archive"), EVENTS, old).rows == 500


def test_the_archive_asset_and_the_lifecycle_job_in_dagster(aged, tmp_path):
    """The archive asset's partition of a period writes its Parquet (the UI's record of
    it); the lifecycle job then drops the period, the archive standing."""
    import dagster as dg

    from assets.lifecycle import LIFECYCLE_JOB, archive_key, lifecycle_defs
    from resources import PostgresResource
    from streamflow.settings import load_settings

    url, old = aged
    archive = tmp_path / "archive"
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), DATABASE_URL=url,
                             STREAMFLOW_PARTITION_INTERVAL="1h", STREAMFLOW_HOT_RETENTION="2h",
                             STREAMFLOW_ARCHIVE_URL=str(archive))
    defs = lifecycle_defs(settings)
    resources = {"postgres": PostgresResource(database_url=url)}
    result = dg.materialize(defs.assets, partition_key=old.key, resources=resources,
                            selection=[archive_key(EVENTS)])
    assert result.success
    (materialized,) = result.asset_materializations_for_node("archive")
    assert materialized.metadata["rows"].value == 500
    assert archive_checksum(str(archive), EVENTS, old).rows == 500
    (job,) = [j for j in defs.jobs if getattr(j, "name", None) == LIFECYCLE_JOB]
    assert job.execute_in_process(resources=resources).success
    assert EVENTS.partition_name(old) not in _names(url)


def _notify(conn, seq: int, occurred_at: datetime, validated_at: datetime, user: str) -> None:
    conn.execute("""
        INSERT INTO streamflow.notifications (event_id, ingest_seq, schema_version, event_type,
            user_id, email_hash, email_masked, occurred_at, country, device, validated_at)
        VALUES (gen_random_uuid(), %s, 1, 'page_view', %s, 'h', 'm', %s, 'FR', 'web', %s)""",
        (seq, user, occurred_at, validated_at))


def _windows_step(conn, upto: int):
    from streamflow.microbatch import batch, windows

    with conn.transaction():
        batch.advance(conn, "notifications", upto)
    return windows.run(conn, upto, lambda messages: None)


def test_a_late_event_adds_to_a_window_whose_events_were_dropped(fresh_database, tmp_path):
    """Three events of a window validated four hours ago are counted, then their period is
    archived and dropped; an event of the same window arriving now is added to it (4), where
    a recount from what is left in PostgreSQL would have made it 1."""
    from streamflow.db.partitions import NOTIFICATIONS

    url = fresh_database
    old = _old_period(url, NOTIFICATIONS)
    at = old.start + timedelta(minutes=10, seconds=3)
    with connect_admin(url) as conn:
        for seq, user in ((1, "a"), (2, "b"), (3, "a")):
            _notify(conn, seq, at, at + timedelta(seconds=1), user)
        _windows_step(conn, 3)
        counted = "SELECT events, distinct_users, revision FROM streamflow.event_windows"
        assert conn.execute(counted).fetchall() == [(3, 2, 1)]
    report = lifecycle.run_pass(url, str(tmp_path / "archive"), HOUR, lambda spec: RETENTION,
                                tables=(NOTIFICATIONS,))
    assert (old.key, "dropped", 3) in _steps(report)
    with connect_admin(url) as conn:
        _notify(conn, 4, at, datetime.now(UTC), "c")
        _windows_step(conn, 4)
        assert conn.execute(counted).fetchall() == [(4, 3, 2)]


def test_dead_letters_dropped_then_restored_are_counted_once(fresh_database, tmp_path):
    """streamflow.dlq_report counted the dead letters when they came: neither their drop nor
    their restore changes it."""
    from streamflow.archive import restore
    from streamflow.db.partitions import DEAD_LETTERS

    url = fresh_database
    old = _old_period(url, DEAD_LETTERS)
    _dead_letters(url, 40, old.start + timedelta(minutes=5))
    counted = "SELECT sum(dead_letters) FROM streamflow.dlq_report"
    archive = str(tmp_path / "archive")
    report = lifecycle.run_pass(url, archive, HOUR, lambda spec: RETENTION,
                                tables=(DEAD_LETTERS,))
    assert (old.key, "dropped", 40) in _steps(report)
    with connect_admin(url) as conn:
        assert conn.execute("SELECT count(*) FROM raw.dead_letters").fetchone()[0] == 0
        assert conn.execute(counted).fetchone()[0] == 40
    assert restore(url, DEAD_LETTERS, old.start, old.end, archive, HOUR).inserted == 40
    with connect_admin(url) as conn:
        assert conn.execute("SELECT count(*) FROM raw.dead_letters").fetchone()[0] == 40
        assert conn.execute(counted).fetchone()[0] == 40


def test_a_period_is_dropped_while_the_micro_batch_reads_the_table_without_pause(aged, tmp_path):
    """Two micro-batch runs whose transactions on raw.events overlap (each 2 s, one starting
    as the other is half-way) leave a DETACH no moment to take the table alone: held off at
    their own lock, they let the detach through, and the period is dropped in this pass."""
    import threading

    from streamflow.microbatch import batch

    url, old = aged
    stop = threading.Event()
    held: list[int] = []

    def busy_micro_batch(delay: float) -> None:
        stop.wait(delay)
        with connect_admin(url) as conn:
            while not stop.is_set():
                with conn.transaction():
                    batch.hold_off_detach(conn)
                    conn.execute("SELECT count(*) FROM raw.events")
                    held.append(1)
                    stop.wait(2.0)

    runs = [threading.Thread(target=busy_micro_batch, args=(d,)) for d in (0.0, 1.0)]
    for run in runs:
        run.start()
    try:
        while len(held) < 2:
            stop.wait(0.05)
        report = _pass(url, str(tmp_path / "archive"))
    finally:
        stop.set()
        for run in runs:
            run.join()
    assert (old.key, "dropped", 500) in _steps(report)
    assert len(held) >= 3  # the micro-batch went on after the detach


def test_rows_back_in_a_dropped_period_never_shrink_its_archive(aged, tmp_path):
    """After its drop, a period gets 100 of its rows back (a partial restore) and 10 rows it
    never had (a partition made again for late rows). The next pass drops it again with the
    archive holding all 510: writing the file again from the table alone would have kept 110."""
    from streamflow.archive import restore

    url, old = aged
    archive = str(tmp_path / "archive")
    assert (old.key, "dropped", 500) in _steps(_pass(url, archive))
    back = restore(url, EVENTS, old.start, old.start + timedelta(seconds=100, microseconds=1),
                   archive, HOUR)
    assert back.inserted == 100
    with connect_admin(url) as conn:
        conn.execute("""
            INSERT INTO raw.events (event_id, payload, kafka_topic, kafka_partition,
                                    kafka_offset, ingested_at)
            SELECT gen_random_uuid(), '{"n": 2}'::json, 't', 1, g, %s
            FROM generate_series(1, 10) g""", (old.start + timedelta(minutes=30),))
    _read_by_the_contract_step(url)
    report = _pass(url, archive)
    assert (old.key, "dropped", 110) in _steps(report)
    assert not report.failures
    assert archive_checksum(archive, EVENTS, old).rows == 510
    with connect_admin(url) as conn:
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 0


def test_a_dead_letter_replayed_after_its_archive_is_archived_as_replayed(fresh_database,
                                                                         tmp_path):
    """Dead letters are archived when their period closes, replayed later (their replay_count
    changes), then dropped: the archive has them as they were when dropped."""
    from streamflow.archive import query
    from streamflow.db.partitions import DEAD_LETTERS

    url = fresh_database
    old = _old_period(url, DEAD_LETTERS)
    archive = str(tmp_path / "archive")
    _dead_letters(url, 5, old.start + timedelta(minutes=5))
    kept = lifecycle.run_pass(url, archive, HOUR, lambda spec: timedelta(days=1),
                              tables=(DEAD_LETTERS,))
    assert (old.key, "archived", 5) in _steps(kept)
    with connect_admin(url) as conn:
        conn.execute("UPDATE raw.dead_letters SET replay_count = 1 WHERE source_offset <= 2")
    dropped = lifecycle.run_pass(url, archive, HOUR, lambda spec: RETENTION,
                                 tables=(DEAD_LETTERS,))
    assert (old.key, "dropped", 5) in _steps(dropped)
    result = query(archive, "select sum(replay_count) from dead_letters")
    assert result.rows == [(2,)]


def test_raw_events_stay_hot_until_read_and_their_notifications_are_gone(fresh_database,
                                                                        tmp_path):
    """A raw period past retention is kept while the contract step has not read it (its
    events would never reach notifications, windows and marts), then while a notification
    of its events is still hot (dbt's relationships test), and dropped after both."""
    url = fresh_database
    old = _old_period(url, EVENTS)
    with connect_admin(url) as conn:
        conn.execute("""
            INSERT INTO raw.events (event_id, payload, kafka_topic, kafka_partition,
                                    kafka_offset, ingested_at)
            SELECT gen_random_uuid(), '{"n": 1}'::json, 't', 0, g, %s
            FROM generate_series(1, 10) g""", (old.start,))
        (last,) = conn.execute("SELECT max(ingest_seq) FROM raw.events").fetchone()
    archive = str(tmp_path / "archive")

    unread = _pass(url, archive)
    assert [(s.action, s.detail) for s in unread.steps if s.period == old.key] == [
        ("kept", f"the contract step has read up to ingest_seq 0, the period up to {last}")]
    assert EVENTS.partition_name(old) in _names(url)

    _read_by_the_contract_step(url)
    with connect_admin(url) as conn:  # validated later: in today's notifications
        _notify(conn, last, old.start, datetime.now(UTC), "a")
    held = _pass(url, archive)
    assert ("kept", "notifications of its events are still hot (dropped first)") in [
        (s.action, s.detail) for s in held.steps if s.period == old.key]

    with connect_admin(url) as conn:
        conn.execute("DELETE FROM streamflow.notifications")
    assert (old.key, "dropped", 10) in _steps(_pass(url, archive))
