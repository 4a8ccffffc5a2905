"""The archive against the real PostgreSQL (streamflow.archive): a period archived, its
checksum equal to PostgreSQL's, archived again in place, from a detached partition, listed,
queried with DuckDB, restored after the drop (once: a second restore inserts nothing), and
the `streamflow archive` commands."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from streamflow.archive import archive_checksum, archive_period, checksum, db_checksum
from streamflow.archive.listing import list_archive
from streamflow.archive.querying import query
from streamflow.archive.restoring import restore
from streamflow.archive.verification import verify
from streamflow.db import migrate, partitions
from streamflow.db.engine import connect_admin
from streamflow.db.partitions import DEAD_LETTERS, EVENTS, Period
from tests.conftest import run_cli

HOUR = timedelta(hours=1)
ROWS = 3000


@pytest.fixture
def hourly(fresh_database):
    migrate.upgrade(fresh_database, partition_interval=HOUR)
    return fresh_database


def _period(hours_ago: int) -> Period:
    return Period.holding(datetime.now(UTC) - hours_ago * HOUR, HOUR)


def _fill(url: str, period: Period, n: int = ROWS, first: int = 0) -> None:
    """``n`` events and dead letters landed in ``period`` (its partition made), with the
    awkward values: NULLs beside empty strings, bytes that are not text, a line break and
    quotes in the payload."""
    with connect_admin(url) as conn:
        for spec in (EVENTS, DEAD_LETTERS):
            partitions.ensure(conn, spec, HOUR, datetime.now(UTC), periods_wanted=[period])
        params = {"start": period.start, "n": n, "first": first}
        conn.execute("""
            INSERT INTO raw.events (event_id, schema_version, event_type, user_id, email_hash,
                occurred_at, success, amount_cents, payload, message_key, headers, mistyped,
                kafka_topic, kafka_partition, kafka_offset, ingested_at)
            SELECT gen_random_uuid(), 1, 'login', CASE WHEN g %% 3 = 0 THEN NULL ELSE 'u' || g END,
                CASE WHEN g %% 5 = 0 THEN '' END, %(start)s, g %% 2 = 0,
                CASE WHEN g %% 4 = 0 THEN g END,
                json_build_object('n', g, 'text', E'line\\n"quoted",')::json,
                CASE WHEN g %% 2 = 0 THEN ('\\x00ff0a' || lpad(to_hex(g), 8, '0'))::bytea END,
                '{"content-type": "application/json"}', false, 't', 0, %(first)s + g,
                %(start)s + g * interval '1 millisecond'
            FROM generate_series(1, %(n)s) g""", params)
        conn.execute("""
            INSERT INTO raw.dead_letters (stage, reason_code, reason, payload, source_topic,
                                          source_partition, source_offset, created_at)
            SELECT 'ingest', 'not_json', E'bad\\nline', '\\xdeadbeef00'::bytea, 't', 0,
                   %(first)s + g, %(start)s + g * interval '1 millisecond'
            FROM generate_series(1, %(n)s / 10) g""", params)


def _rows(conn: psycopg.Connection, table: str, order: str) -> list[tuple]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()  # noqa: S608


def test_a_period_is_archived_with_postgres_checksum_and_again_in_place(hourly, tmp_path):
    url = str(tmp_path / "archive")
    period, other = _period(3), _period(2)
    _fill(hourly, period)
    _fill(hourly, other, n=10, first=10_000)  # the next period: not in the file
    with connect_admin(hourly) as conn:
        archived = archive_period(conn, EVENTS, period, url)
        db = db_checksum(conn, EVENTS, period)
        ids = [i for (i,) in conn.execute(
            "SELECT event_id::text FROM raw.events WHERE ingested_at >= %s AND ingested_at < %s",
            (period.start, period.end))]
    # PostgreSQL's sum is the Python function's, and the file's (read back by DuckDB).
    assert db == checksum.checksum_of(ids) == archived.checksum
    assert db.rows == archived.rows == ROWS
    path = tmp_path / "archive" / "raw.events" / f"period={period.key}" / "data.parquet"
    assert archived.path == str(path) and archived.bytes == path.stat().st_size
    first = path.read_bytes()
    # Again: the file replaced, the same rows, no temp file left behind.
    with connect_admin(hourly) as conn:
        again = archive_period(conn, EVENTS, period, url)
        assert verify(conn, EVENTS, period, url).ok
    assert again.checksum == archived.checksum
    assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]
    assert len(path.read_bytes()) == len(first)
    # A failed archive (a relation that is not there) leaves the earlier file as it was.
    with connect_admin(hourly) as conn, pytest.raises(psycopg.errors.UndefinedTable):
        archive_period(conn, EVENTS, period, url, relation="raw.events_p_gone")
    assert [p.name for p in path.parent.iterdir()] == ["data.parquet"]
    assert path.read_bytes() == path.read_bytes() and archive_checksum(
        url, EVENTS, period) == archived.checksum


def test_the_archive_holds_every_value_as_postgres_did(hourly, tmp_path):
    """Restored into a database that lost the period, the rows are PostgreSQL's own, NULLs,
    empty strings, bytes and all; a second restore inserts none."""
    url = str(tmp_path / "archive")
    period = _period(3)
    _fill(hourly, period)
    with connect_admin(hourly) as conn:
        for spec in (EVENTS, DEAD_LETTERS):
            archive_period(conn, spec, period, url)
        before = {spec: _rows(conn, spec.name, spec.ids) for spec in (EVENTS, DEAD_LETTERS)}
        for spec in (EVENTS, DEAD_LETTERS):
            conn.execute(f"DROP TABLE raw.{spec.partition_name(period)}")
        assert conn.execute("SELECT count(*) FROM raw.events").fetchone()[0] == 0
    heard = []
    for spec in (EVENTS, DEAD_LETTERS):
        restored = restore(hourly, spec, period.start, period.end, url, HOUR,
                           progress=heard.append)
        assert restored.read == restored.inserted == len(before[spec])
        again = restore(hourly, spec, period.start - HOUR, period.end + HOUR, url, HOUR)
        assert (again.read, again.inserted) == (len(before[spec]), 0)
    assert [(p.table, p.period, p.inserted) for p in heard] == [
        ("raw.events", period.key, ROWS), ("raw.dead_letters", period.key, ROWS // 10)]
    with connect_admin(hourly) as conn:
        for spec in (EVENTS, DEAD_LETTERS):
            assert _rows(conn, spec.name, spec.ids) == before[spec], spec.name
            # Back in the period's own partition, not the default one.
            assert partitions.default_rows(conn, spec) == 0


def test_a_restore_takes_only_the_range_asked_for(hourly, tmp_path):
    url = str(tmp_path / "archive")
    period = _period(3)
    _fill(hourly, period, n=100)  # one row a millisecond from the period's start
    with connect_admin(hourly) as conn:
        archive_period(conn, EVENTS, period, url)
        conn.execute("DELETE FROM raw.events")
    cut = period.start + timedelta(milliseconds=51)
    assert restore(hourly, EVENTS, period.start, cut, url, HOUR).inserted == 50
    assert restore(hourly, EVENTS, period.start, period.end, url, HOUR).inserted == 50


def test_a_detached_partition_is_archived_and_verified(hourly, tmp_path):
    """The lifecycle's path: detach the period's partition, archive its own table, verify
    against it; a row the archive lacks fails the verification."""
    url = str(tmp_path / "archive")
    period = _period(3)
    _fill(hourly, period)
    relation = f"raw.{EVENTS.partition_name(period)}"
    with connect_admin(hourly) as conn:
        conn.execute(f"ALTER TABLE raw.events DETACH PARTITION {relation}")
        archived = archive_period(conn, EVENTS, period, url, relation=relation)
        assert archived.rows == ROWS
        assert db_checksum(conn, EVENTS, period).rows == 0  # no longer in the parent
        assert verify(conn, EVENTS, period, url, relation=relation).ok
        assert not verify(conn, EVENTS, period, url).ok
        conn.execute(f"UPDATE {relation} SET event_id = gen_random_uuid() "  # noqa: S608
                     f"WHERE ctid = (SELECT min(ctid) FROM {relation})")
        changed = verify(conn, EVENTS, period, url, relation=relation)
        assert not changed.ok and "ids differ" in changed.reason
        conn.execute(f"DELETE FROM {relation} WHERE ctid = (SELECT min(ctid) FROM {relation})")  # noqa: S608
        fewer = verify(conn, EVENTS, period, url, relation=relation)
        assert not fewer.ok and f"{ROWS} rows archived, {ROWS - 1} in PostgreSQL" in fewer.reason
        missing = verify(conn, EVENTS, _period(5), url)
        assert not missing.ok and missing.archive is None


def _cli(platform, *args: str, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    return run_cli(platform, "archive", *args, ok=ok, **env)


def test_the_archive_commands(platform, hourly, tmp_path):
    url = str(tmp_path / "archive")
    env = {"DATABASE_URL": hourly, "STREAMFLOW_ARCHIVE_URL": url,
           "STREAMFLOW_PARTITION_INTERVAL": "1h"}
    assert "nothing archived yet" in _cli(platform, "list", **env).stdout
    empty = _cli(platform, "query", "select 1", ok=False, **env)
    assert empty.returncode == 1 and "holds no table" in empty.stderr
    periods = [_period(4), _period(3)]
    with connect_admin(hourly) as conn:
        for n, period in enumerate(periods):
            _fill(hourly, period, n=100 * (n + 1), first=1000 * n)
            archive_period(conn, EVENTS, period, url)
            archive_period(conn, DEAD_LETTERS, period, url)
    listed = json.loads(_cli(platform, "list", "--json", **env).stdout)
    by_table = {t["table"]: t for t in listed["tables"]}
    assert by_table["raw.events"]["rows"] == 300
    assert [p["period"] for p in by_table["raw.events"]["periods"]] == [p.key for p in periods]
    assert by_table["raw.dead_letters"]["rows"] == 30
    assert [a.rows for a in list_archive(url, "raw.events")] == [100, 200]
    table = _cli(platform, "list", **env).stdout
    assert "raw.events" in table and "total (2)" in table and "300" in table
    counted = json.loads(_cli(platform, "query", "--json",
                              "select count(*) AS n, count(DISTINCT period) AS periods "
                              "from events", **env).stdout)
    assert counted == [{"n": 300, "periods": 2}]
    assert query(url, "select count(*) from dead_letters").rows == [(30,)]
    bad = _cli(platform, "query", "select count(*) from notifications", ok=False, **env)
    assert bad.returncode == 1 and "nothing yet of" in bad.stderr
    unknown = _cli(platform, "restore", "--table", "raw.nope", "--from", "2026-01-01",
                   "--to", "2026-01-02", ok=False, **env)
    assert unknown.returncode == 1 and "not a partitioned table" in unknown.stderr
    with connect_admin(hourly) as conn:
        conn.execute("DELETE FROM raw.events")
    start = periods[0].start.strftime("%Y-%m-%dT%H:%M")
    restored = _cli(platform, "restore", "--table", "raw.events", "--from", start,
                    "--to", periods[1].end.isoformat(), **env).stdout
    assert f"raw.events {periods[0].key}: 100 read, 100 inserted" in restored
    assert "300 rows read from the archive, 300 inserted" in restored
    again = _cli(platform, "restore", "--table", "events", "--from", start[:10],
                 "--to", (periods[1].end + timedelta(days=1)).date().isoformat(), **env).stdout
    assert "300 rows read from the archive, 0 inserted" in again


def test_a_restore_skips_an_event_held_by_another_partition(hourly, tmp_path):
    """Unique keys are per partition: an archived event that is now in another period's
    partition (landed again after a replay) is not restored beside it."""
    url = str(tmp_path / "archive")
    period, later = _period(3), _period(2)
    _fill(hourly, period, n=100)
    _fill(hourly, later, n=1, first=10_000)
    with connect_admin(hourly) as conn:
        archive_period(conn, EVENTS, period, url)
        conn.execute("UPDATE raw.events SET ingested_at = ingested_at + interval '1 hour' "
                     "WHERE kafka_offset <= 10")  # into the next period's partition
        conn.execute("DELETE FROM raw.events WHERE ingested_at < %s", (period.end,))
    assert restore(hourly, EVENTS, period.start, period.end, url, HOUR).inserted == 90
    with connect_admin(hourly) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.events"
                            ).fetchone() == (101, 101)


def test_an_empty_period_is_archived_as_an_empty_file(hourly, tmp_path):
    """A period nothing landed in (the stack was stopped) is archived, verified and listed
    like any other: PostgreSQL's COPY sends no bytes, which is still a CSV of no rows."""
    url = str(tmp_path / "archive")
    period = _period(6)
    with connect_admin(hourly) as conn:
        partitions.ensure(conn, EVENTS, HOUR, datetime.now(UTC), periods_wanted=[period])
        archived = archive_period(conn, EVENTS, period, url,
                                  relation=f"raw.{EVENTS.partition_name(period)}")
        assert (archived.rows, archived.checksum) == (0, (0, 0))
        assert verify(conn, EVENTS, period, url).ok
    assert [(a.period, a.rows) for a in list_archive(url)] == [(period.key, 0)]
    assert query(url, "select count(*) from events").rows == [(0,)]
