"""The archive's pure parts (streamflow.archive): where a period's file lives, the id
checksum on known values and in DuckDB, the Parquet types of every archived column, the CSV
both ways between PostgreSQL and pyarrow, and SQL over a local archive."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamflow.archive import checksum, columns, export, restoring
from streamflow.archive.layout import ARCHIVED_TABLES, open_location
from streamflow.archive.listing import list_archive
from streamflow.archive.querying import query
from streamflow.db.partitions import DEAD_LETTERS, EVENTS, TABLES
from streamflow.errors import ArchiveEmpty, ArchiveQueryFailed


def test_a_period_file_is_under_its_table_and_period_and_its_temp_file_beside_it(tmp_path):
    location = open_location(str(tmp_path))
    assert location.data_path("raw.events", "2026-12-07T14-05") == (
        f"{tmp_path}/raw.events/period=2026-12-07T14-05/data.parquet")
    temp = location.temp_path("raw.events", "2026-12-07")
    folder, _, name = temp.rpartition("/")
    assert folder == location.period_folder("raw.events", "2026-12-07")
    assert name.startswith(".") and not name.endswith(".parquet")  # DuckDB's glob skips it
    assert location.temp_path("raw.events", "2026-12-07") != temp  # two writers never meet


def test_archived_tables_are_named_as_their_folders():
    assert ARCHIVED_TABLES == {"events": "raw.events", "dead_letters": "raw.dead_letters",
                               "notifications": "streamflow.notifications",
                               "fct_events": "marts.fct_events"}


def test_only_periods_holding_a_data_file_are_listed(tmp_path):
    location = open_location(str(tmp_path))
    (tmp_path / "raw.events" / "period=2026-12-02").mkdir(parents=True)  # an aborted write
    (tmp_path / "raw.events" / "period=2026-12-02" / ".data.parquet.x.tmp").write_bytes(b"")
    _write(tmp_path, "raw.events", "2026-12-03", {"event_id": ["a"]})
    _write(tmp_path, "raw.events", "2026-12-01", {"event_id": ["b", "c"]})
    assert location.period_keys("raw.events") == ["2026-12-01", "2026-12-03"]
    assert location.tables() == ["raw.events"]
    listed = list_archive(str(tmp_path))
    assert [(a.table, a.period, a.rows) for a in listed] == [
        ("raw.events", "2026-12-01", 2), ("raw.events", "2026-12-03", 1)]
    assert all(a.bytes > 0 for a in listed)


@pytest.mark.parametrize(("value", "term"), [
    # md5("0") = cfcd208495d565ef66e7dff9f98764da: its first 15 hex digits
    ("0", 0xcfcd208495d565e),
    (42, 0xa1d0c6e83f02732),  # a dead letter's bigint id, as text
    ("01a2513f-2088-7b2b-a3a5-dcfde56931ca", 0x814d36345953448),
])
def test_an_id_hashes_to_the_first_60_bits_of_its_md5(value, term):
    assert checksum.id_hash(value) == term


def test_the_checksum_is_free_of_order_and_duckdb_computes_the_same(tmp_path):
    ids = [f"0000000{i}-2088-7b2b-a3a5-dcfde56931ca" for i in range(10)]
    expected = checksum.checksum_of(ids)
    assert checksum.checksum_of(reversed(ids)) == expected
    assert expected.rows == 10 and expected.sum == sum(checksum.id_hash(i) for i in ids)
    _write(tmp_path, "raw.events", "2026-12-07", {"event_id": ids})
    assert checksum.archive_checksum(str(tmp_path), EVENTS, "2026-12-07") == expected
    _write(tmp_path, "raw.dead_letters", "2026-12-07", {"id": pa.array([0, 42], pa.int64())})
    assert checksum.archive_checksum(str(tmp_path), DEAD_LETTERS, "2026-12-07") == (
        checksum.checksum_of([0, 42]))
    assert checksum.archive_checksum(str(tmp_path), EVENTS, "2026-12-08") is None


def test_every_archived_column_has_a_parquet_type():
    for spec in TABLES:
        schema = columns.schema(spec.table)
        assert schema.names == [c.name for c in spec.table.columns]
        assert schema.field(spec.key).type == pa.timestamp("us", tz="UTC")
        assert pa.types.is_string(schema.field(spec.ids).type) or pa.types.is_int64(
            schema.field(spec.ids).type)
    assert columns.binary_columns(DEAD_LETTERS.table) == ["payload", "message_key"]


# One raw.events row as PostgreSQL's COPY (FORMAT CSV) writes it, in the table's column
# order: NULL is an empty field, '' a quoted one; a payload with a line break and a quote.
_PG_CSV = (
    b'01a2513f-2088-7b2b-a3a5-dcfde56931ca,7,1,login,,"",m,2026-12-07 14:05:00.5+00,FR,web,t,'
    b'123,"{""a"":\n""b""}",\\x00ff0a,,,f,user-events,00000000-0000-0000-0000-000000000000,'
    b'2,9,2026-12-07 14:05:01+00\n')


class _Copy:
    """A psycopg Copy's iteration: chunks of bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self.chunks = [data[i:i + size] for i in range(0, len(data), size)]

    def __iter__(self):
        return iter(self.chunks)


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_postgres_csv_parses_to_typed_columns_and_back(chunk):
    target = columns.schema(EVENTS.table)
    reader = export._csv_reader(export._CopyStream(_Copy(_PG_CSV, chunk)), EVENTS)
    table = pa.concat_tables(export._decode_binary(b, columns.binary_columns(EVENTS.table),
                                                   target) for b in reader)
    assert table.schema == target
    row = table.to_pylist()[0]
    assert row["user_id"] is None and row["email_hash"] == ""
    assert row["payload"] == '{"a":\n"b"}'
    assert row["message_key"] == b"\x00\xff\n"
    assert row["success"] is True and row["mistyped"] is False
    assert row["occurred_at"].isoformat() == "2026-12-07T14:05:00.500000+00:00"
    assert row["headers"] is None and row["amount_cents"] == 123
    # Back as PostgreSQL reads CSV: the same NULLs, '' and bytes.
    text = restoring._csv(table.to_batches()[0], EVENTS).decode()
    assert ',,"",' in text and '\\x00ff0a' in text and '"{""a"":\n""b""}"' in text


def test_sql_over_the_archive_sees_each_table_by_its_short_name(tmp_path):
    with pytest.raises(ArchiveEmpty):
        query(str(tmp_path), "select 1")
    _write(tmp_path, "raw.events", "2026-12-07", {"event_id": ["a", "b"]})
    _write(tmp_path, "raw.events", "2026-12-08", {"event_id": ["c"]})
    result = query(str(tmp_path), "select period, count(*) n from events group by 1 order by 1")
    assert result.columns == ["period", "n"]
    assert result.rows == [("2026-12-07", 2), ("2026-12-08", 1)]
    with pytest.raises(ArchiveQueryFailed, match="nothing yet of .*notifications"):
        query(str(tmp_path), "select count(*) from notifications")
    with pytest.raises(ArchiveQueryFailed, match="syntax"):
        query(str(tmp_path), "selec 1")


def _write(root, table: str, key: str, data: dict) -> None:
    folder = root / table / f"period={key}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), folder / "data.parquet")


def test_an_archive_behind_an_fsspec_url_is_read_through_its_filesystem():
    """Not a local path (memory:// standing in for s3://): DuckDB is handed fsspec's
    filesystem, listing and checksums go through it."""
    import uuid

    import fsspec

    url = f"memory://archive-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    ids = ["x", "y", "z"]
    with fs.open(f"{url}/raw.events/period=2026-12-07/data.parquet", "wb") as file:
        pq.write_table(pa.table({"event_id": ids}), file)
    assert not open_location(url).local
    assert [(a.period, a.rows) for a in list_archive(url)] == [("2026-12-07", 3)]
    assert checksum.archive_checksum(url, EVENTS, "2026-12-07") == checksum.checksum_of(ids)
    assert query(url, "select count(*) from events").rows == [(3,)]


def test_the_public_names_are_the_functions_and_the_cli_loads_no_pyarrow():
    """``streamflow.archive`` re-exports on first use: a name is never shadowed by a
    submodule, and `streamflow` commands other than `archive` do not load pyarrow/DuckDB."""
    import subprocess
    import sys

    import streamflow.archive as archive

    for name in archive.__all__:
        assert not isinstance(getattr(archive, name), type(archive)), name
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, streamflow.cli; "
         "print(sorted({'pyarrow', 'duckdb'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
