"""`make bench`'s comparison with Quix Streams' PostgreSQLSink (benchmarks/quix.py): the parts
that need neither the services nor Quix Streams' virtualenv."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from benchmarks import backbone, quix, report, run
from tests.conftest import ROOT

SOCKET = quix.Postgres(host="/tmp/pg-sock", port=5432, dbname="bench_quix_1a2b", user="postgres",
                       password="")


def test_a_unix_socket_url_gives_its_directory_and_libpq_defaults():
    pg = quix.postgres_of("postgresql+psycopg://postgres:@/bench_quix_1a2b?host=/tmp/pg-sock")
    assert pg == SOCKET


def test_a_tcp_url_gives_its_port_and_password():
    pg = quix.postgres_of("postgresql://bench:s%40cret@db.local:5433/other")
    assert pg == quix.Postgres(host="db.local", port=5433, dbname="other", user="bench",
                               password="s@cret")


def test_the_quix_app_is_told_everything_but_the_password_on_its_command_line():
    pg = quix.Postgres(host="db.local", port=5433, dbname="other", user="bench",
                       password="s3cret")
    cmd = quix.quix_command(Path("/venv/bin/python"), broker="127.0.0.1:19092",
                            topic="bench-quix-events", group="g-quix", table="quix_events", pg=pg)
    assert cmd[:2] == ["/venv/bin/python", str(quix.APP)]
    assert dict(zip(cmd[2::2], cmd[3::2], strict=True)) == {
        "--broker": "127.0.0.1:19092", "--topic": "bench-quix-events", "--group": "g-quix",
        "--table": "quix_events", "--host": "db.local", "--port": "5433", "--dbname": "other",
        "--user": "bench"}
    assert not any("s3cret" in part for part in cmd)


def test_the_quix_app_takes_every_option_the_benchmark_passes():
    """The command line and quix_app.py's parser agree (read from its source: the app itself
    imports quixstreams, which only the other virtualenv has)."""
    source = quix.APP.read_text()
    cmd = quix.quix_command(Path("python"), broker="b", topic="t", group="g", table="x",
                            pg=SOCKET)
    for option in cmd[2::2]:
        name = option.removeprefix("--")
        assert f'"{name}"' in source or f'"--{name}"' in source, option


def test_the_quix_app_imports_nothing_of_streamflow():
    """It runs with the python of Quix Streams' own virtualenv, where streamflow is not."""
    tree = ast.parse(quix.APP.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "argparse", "quixstreams"}, imported


def test_quix_streams_is_no_dependency_of_streamflow():
    for name in ("pyproject.toml", "requirements.lock"):
        assert "quixstreams" not in (ROOT / name).read_text().lower(), name
    assert quix.REQUIREMENTS[0] == f"quixstreams[postgresql]=={quix.QUIX_VERSION}"


def test_the_quix_app_environment_leaves_this_virtualenv_out_and_carries_the_password():
    inherited = {"PATH": "/usr/bin", "PYTHONPATH": "/repo", "VIRTUAL_ENV": "/repo/.venv",
                 "PYTHONHOME": "/x", "HOME": "/root"}
    with_password = quix.quix_env(inherited, quix.Postgres("h", 5432, "d", "u", "pw"))
    assert with_password == {"PATH": "/usr/bin", "HOME": "/root", "PGPASSWORD": "pw"}
    assert "PGPASSWORD" not in quix.quix_env(inherited, SOCKET)
    assert "PYTHONPATH" in inherited  # the caller's dict is left as it was


def _drain(events: int, seconds: float, steady: int | None) -> dict:
    return {"events": events, "events_per_s": steady, "seconds_from_start": seconds,
            "peak_rss_mb": 100.0, "rows": events}


def test_the_ratio_is_of_events_per_second_from_start():
    result = quix.comparison(_drain(1_000_000, 20.0, 61_000), _drain(1_000_000, 50.0, 24_000))
    assert result["streamflow"]["events_per_s_from_start"] == 50_000
    assert result["quix"]["events_per_s_from_start"] == 20_000
    assert (result["ratio"], result["ratio_steady"]) == (2.5, 2.54)
    assert (result["target_ratio"], result["meets_target"]) == (3.0, False)


def test_the_target_is_met_at_three_times():
    result = quix.comparison(_drain(100, 1.0, 100), _drain(100, 3.0, 40))
    assert result["ratio"] == 3.0 and result["meets_target"]
    assert not quix.comparison(_drain(100, 1.0, 100), _drain(100, 2.99, 40))["meets_target"]


def test_a_backlog_landed_in_one_batch_has_no_steady_rate():
    """Quix writes once per 5 s checkpoint: a quick backlog can land whole in the first."""
    result = quix.comparison(_drain(100_000, 2.0, 60_000), _drain(100_000, 6.0, None))
    assert (result["ratio"], result["ratio_steady"]) == (3.0, None)
    text = quix.table(result | {"quixstreams_version": "3.28.1"})
    assert "**3.00×**" in text
    quix_line = next(line for line in text.splitlines() if "Quix Streams 3.28.1" in line)
    assert quix_line.split("|")[5].strip() == "-"


def test_the_table_and_the_benchmarks_row():
    doc = {"events": 1_000_000, "quixstreams_version": "3.28.1",
           **quix.comparison(_drain(1_000_000, 16.0, 64_000), _drain(1_000_000, 40.0, 26_000))}
    lines = quix.table(doc).splitlines()
    assert lines[2] == ("| StreamFlow `streamflow sink` | 1,000,000 | 16.0 | 62,500 | 64,000 | "
                        "100.0 |")
    assert lines[3] == ("| Quix Streams 3.28.1 `PostgreSQLSink`, defaults | 1,000,000 | 40.0 | "
                        "25,000 | 26,000 | 100.0 |")
    assert lines[4] == "| StreamFlow / Quix (target ≥ 3.0×) | | | **2.50×** | 2.46× | |"
    (row,) = [r for r in report.benchmark_rows({"quix": doc}) if "Quix" in r[0]]
    assert row[1:] == ("62,500", "Quix Streams 3.28.1 at its defaults 25,000", "2.50×", "≥ 3.0×")


class _Committed:
    def __init__(self, offsets: list[int]) -> None:
        self.offsets = offsets

    def committed(self, partitions, timeout):
        return [TopicPartition(p.topic, p.partition, o)
                for p, o in zip(partitions, self.offsets, strict=True)]


def test_partitions_with_nothing_committed_count_zero():
    partitions = [TopicPartition("t", p) for p in range(3)]
    assert quix.committed_total(_Committed([-1001, 40, 2]), partitions) == 42


def test_a_stuck_drain_is_given_up_on_no_sooner_than_two_minutes():
    assert quix.give_up_after_s(100_000) == 120
    assert quix.give_up_after_s(1_000_000) == 1_000


class _Running:
    returncode = None

    def poll(self):
        return None


def test_time_drain_rates_from_first_row_and_from_start(monkeypatch):
    clock = iter([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    monkeypatch.setattr(backbone.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(backbone.time, "sleep", lambda s: None)
    landed = iter([0, 100, 300])
    result = backbone.time_drain(_Running(), lambda: next(landed), 300, launched=9.0,
                                 what="x")
    # 100 seen at 11, all 300 at 12: 200 events in 1 s; 3 s after the start at 9.
    assert result == {"events": 300, "events_per_s": 200, "seconds_from_start": 3.0}


def test_time_drain_of_a_backlog_seen_whole_at_once_has_no_rate(monkeypatch):
    monkeypatch.setattr(backbone.time, "monotonic", lambda: 5.0)
    result = backbone.time_drain(_Running(), lambda: 300, 300, launched=2.0, what="x")
    assert result == {"events": 300, "events_per_s": None, "seconds_from_start": 3.0}


def test_time_drain_stops_waiting_for_a_process_that_died(monkeypatch):
    monkeypatch.setattr(backbone.time, "sleep", lambda s: None)
    dead = _Running()
    dead.poll = lambda: 1
    dead.returncode = 1
    with pytest.raises(RuntimeError, match="the Quix app exited early with 1"):
        backbone.time_drain(dead, lambda: 0, 300, launched=0.0, what="the Quix app")


def test_quix_is_a_group_of_make_bench():
    assert "quix" in run.GROUPS
