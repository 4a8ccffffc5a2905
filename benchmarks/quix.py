"""StreamFlow's sink next to Quix Streams' PostgreSQLSink at its defaults, on the same backlog,
broker and PostgreSQL, in one run (target: StreamFlow ≥ 3× as fast).

    python -m benchmarks.run --only quix            # 1,000,000 demo events
    python -m benchmarks.run --only quix --quick    # 100,000

What: the project's producer writes one backlog of demo events into a 3-partition topic of a
fresh benchmark stack. Then, each from offset 0 with a consumer group of its own, into the
same PostgreSQL server:

- `streamflow sink` (backbone.drain_with_sink) into raw.events of the stack's database: per
  event its typed columns, the verbatim payload, key, headers and Kafka coordinates, with the
  group's offsets in the same transaction;
- Quix Streams' PostgreSQLSink (benchmarks/quix_app.py) into a table of its own in a fresh
  database: Application's defaults but auto_offset_reset="earliest" (a new group would skip
  the backlog), each message parsed as JSON (its default deserializer), written as one column
  per top-level field plus the key and the Kafka timestamp; the sink creates and alters the
  table itself. It writes once per checkpoint (commit_interval 5 s), a transaction per
  partition's batch, with psycopg2's execute_values (100 rows a statement), and only the
  columns of the batch's first row (quix_rows counts what that leaves out of the demo events).

The rows differ in shape; what is compared is how fast each gets the backlog into PostgreSQL.

How: each drain is timed from the start of its process to the moment every event of the
backlog is in PostgreSQL (the headline events/s and ratio), and from the first row to the last
(the steady rate, as the backbone group reports it). "In PostgreSQL" is read from offsets, both
cheap to poll where a count(*) over up to 1M rows every 50 ms would take CPU from the sink
being timed: StreamFlow's are stored with its rows; Quix commits its group's offsets to Kafka
only once its sinks' batch is committed (Checkpoint.commit: step 1 flushes the sinks, step 4
commits). The Quix app is then stopped (SIGTERM) and its rows counted. Before each drain,
VACUUM ANALYZE and CHECKPOINT, so the first drain's rows are not vacuumed or flushed by the
server during the second.

Quix Streams lives in a virtualenv of its own under STREAMFLOW_HOME (bench-venvs/quix), made by
this benchmark with pip and reused while it holds the pinned version: it is never a dependency
of StreamFlow.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, TopicPartition
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from benchmarks.backbone import drain_with_sink, time_drain
from benchmarks.harness import BENCH_PII_KEY, RssSampler, Stack, poll_until, run
from benchmarks.storage import fresh_database
from streamflow import kafka_clients, topics
from streamflow.db import tables
from streamflow.db.compose import statement
from streamflow.db.engine import libpq_url
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.settings import load_settings
from streamflow.workers.runtime import Progress, StopFlag

QUIX_VERSION = "3.28.1"
# The sink's extra brings psycopg2-binary; pinned too, so every run measures the same driver.
REQUIREMENTS = (f"quixstreams[postgresql]=={QUIX_VERSION}", "psycopg2-binary==2.9.13")
TARGET_RATIO = 3.0
APP = Path(__file__).resolve().with_name("quix_app.py")
TOPIC = "bench-quix-events"
TABLE = "quix_events"
GROUPS = {"streamflow": "bench-quix-streamflow", "quix": "bench-quix-quixstreams",
          "warm_up": "bench-quix-warm-up"}
# A drain slower than this (events/s, counted from its start) is taken for stuck, not slow:
# the benchmark stops waiting. Quix was measured at ~24k events/s on this box.
GIVE_UP_BELOW_EVENTS_PER_S = 1_000
GIVE_UP_AFTER_AT_LEAST_S = 120
# SIGTERM to the Quix app: seconds for its last checkpoint before it is killed.
STOP_GRACE_S = 30
# Variables that would point the other virtualenv's python at this one's packages.
_FOREIGN_PYTHON = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- pure parts (tests/unit/test_bench_quix.py) ----------------------------------------------

@dataclass(frozen=True)
class Postgres:
    """Where the Quix app writes: libpq's parameters, as PostgreSQLSink takes them."""
    host: str
    port: int
    dbname: str
    user: str
    password: str


def postgres_of(database_url: str) -> Postgres:
    """``database_url`` (SQLAlchemy or libpq form; a unix-socket directory as host) taken
    apart; libpq's defaults where it says nothing."""
    info = conninfo_to_dict(libpq_url(database_url))
    return Postgres(host=info.get("host", "localhost"), port=int(info.get("port") or 5432),
                    dbname=info["dbname"], user=info.get("user", "postgres"),
                    password=info.get("password", ""))


def quix_command(python: Path, *, broker: str, topic: str, group: str, table: str,
                 pg: Postgres) -> list[str]:
    """The Quix app's command line: no password (that goes by PGPASSWORD, quix_env)."""
    return [str(python), str(APP), "--broker", broker, "--topic", topic, "--group", group,
            "--table", table, "--host", pg.host, "--port", str(pg.port), "--dbname", pg.dbname,
            "--user", pg.user]


def quix_env(inherited: dict[str, str], pg: Postgres) -> dict[str, str]:
    """The Quix app's environment: ``inherited`` without what would lead its python to this
    virtualenv's packages, with libpq's PGPASSWORD."""
    env = {k: v for k, v in inherited.items() if k not in _FOREIGN_PYTHON}
    return env | ({"PGPASSWORD": pg.password} if pg.password else {})


def give_up_after_s(events: int) -> float:
    return max(GIVE_UP_AFTER_AT_LEAST_S, events / GIVE_UP_BELOW_EVENTS_PER_S)


def comparison(streamflow: dict, quix: dict, target: float = TARGET_RATIO) -> dict:
    """Both drains' events/s from the start of their process, and StreamFlow / Quix on that
    (the verdict) and on the steady rate (first row to last; None where a drain landed the
    whole backlog in one batch)."""
    from_start = {name: drain["events"] / drain["seconds_from_start"]
                  for name, drain in (("streamflow", streamflow), ("quix", quix))}
    ratio = from_start["streamflow"] / from_start["quix"]
    steady = (streamflow["events_per_s"] / quix["events_per_s"]
              if streamflow["events_per_s"] and quix["events_per_s"] else None)
    return {
        "streamflow": streamflow | {"events_per_s_from_start": round(from_start["streamflow"])},
        "quix": quix | {"events_per_s_from_start": round(from_start["quix"])},
        "ratio": round(ratio, 2),
        "ratio_steady": round(steady, 2) if steady else None,
        "target_ratio": target,
        "meets_target": ratio >= target,
    }


def committed_total(consumer: Consumer, partitions: list[TopicPartition]) -> int:
    """The group's committed offsets summed: messages it has processed (none yet: -1001)."""
    return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))


def table(doc: dict) -> str:
    """docs/BENCHMARKS.md's comparison table."""
    def rate(value: int | None) -> str:
        return f"{value:,}" if value else "-"

    lines = ["| sink | rows | start → all in PostgreSQL, s | events/s from start | "
             "events/s first → last row | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for label, d in (("StreamFlow `streamflow sink`", doc["streamflow"]),
                     (f"Quix Streams {doc['quixstreams_version']} `PostgreSQLSink`, defaults",
                      doc["quix"])):
        lines.append(f"| {label} | {d['rows']:,} | {d['seconds_from_start']:.1f} | "
                     f"{rate(d['events_per_s_from_start'])} | {rate(d['events_per_s'])} | "
                     f"{d['peak_rss_mb']} |")
    steady = f"{doc['ratio_steady']:.2f}×" if doc["ratio_steady"] else "-"
    lines.append(f"| StreamFlow / Quix (target ≥ {doc['target_ratio']}×) | | | "
                 f"**{doc['ratio']:.2f}×** | {steady} | |")
    return "\n".join(lines)


# -- the virtualenv ----------------------------------------------------------------------------

def venv_dir() -> Path:
    """bench-venvs/quix under the default STREAMFLOW_HOME (a benchmark stack's home is a
    temp dir: the virtualenv outlives it, as the Kafka jars do)."""
    return load_settings().home_dir / "bench-venvs" / "quix"


def installed_version(python: Path) -> str | None:
    """quixstreams' version in the virtualenv of ``python``, None if it cannot import it."""
    if not python.exists():
        return None
    probe = subprocess.run(  # noqa: S603 - our own virtualenv's python
        [str(python), "-c", "import psycopg2, quixstreams; print(quixstreams.__version__)"],
        capture_output=True, text=True, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_venv(path: Path) -> Path:
    """The python of a virtualenv at ``path`` holding REQUIREMENTS: made (or completed) with
    `python -m venv` and pip the first time, then reused."""
    python = path / "bin" / "python"
    if installed_version(python) != QUIX_VERSION:
        _log(f"quix: installing {', '.join(REQUIREMENTS)} into {path} ...")
        if not python.exists():
            run([sys.executable, "-m", "venv", str(path)])
        run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS])
    if (found := installed_version(python)) != QUIX_VERSION:
        raise RuntimeError(f"{path}: quixstreams {found} after pip install, not {QUIX_VERSION}")
    return python


# -- the run -----------------------------------------------------------------------------------

def settle(url: str) -> None:
    """Vacuum and flush what is there, so the server does it now rather than during a drain."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")


def drain_with_quix(st: Stack, python: Path, url: str, events: int) -> dict:
    """Run the Quix app on the backlog until its group has committed all ``events`` (each
    commit follows its sink's write), then stop it."""
    pg = postgres_of(url)
    work = st.settings.home_dir / "quix-app"  # its cwd: Application makes a state/ dir there
    work.mkdir(exist_ok=True)
    log = work / "quix-app.log"
    probe = kafka_clients.consumer(st.kafka, GROUPS["quix"])  # never subscribes: reads commits
    partitions = [TopicPartition(TOPIC, p)
                  for p in probe.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions]
    with log.open("wb") as out:
        launched = time.monotonic()
        proc = subprocess.Popen(  # noqa: S603 - our own virtualenv's python and script
            quix_command(python, broker=st.bootstrap, topic=TOPIC, group=GROUPS["quix"],
                         table=TABLE, pg=pg),
            env=quix_env(st.worker_env(), pg), cwd=work, stdout=out, stderr=subprocess.STDOUT)
        rss = RssSampler(proc.pid)
        try:
            drained = time_drain(proc, lambda: committed_total(probe, partitions), events,
                                 launched=launched, what="the Quix app",
                                 timeout_s=give_up_after_s(events))
        except (RuntimeError, TimeoutError) as exc:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}; the end of its log:\n{tail}") from exc
        finally:
            peak = rss.stop()
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            probe.close()
    return drained | {"peak_rss_mb": round(peak / 2**20, 1), "exit_code": proc.returncode,
                      **quix_rows(url)}


_COUNT = sql.SQL("SELECT count(*) FROM {}")
_KEPT = sql.SQL("SELECT count(*) FILTER (WHERE {kind} = %s), count({field}) FROM {table}")
_COLUMNS = ("SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position")
# Fields that only some demo event types carry (streamflow/producer/generator.py): how many
# rows of that type have theirs shows PostgreSQLSink writing each batch's first row's columns.
_OPTIONAL_FIELDS = {"amount_cents": "purchase", "success": "login"}


def quix_rows(url: str) -> dict:
    """Rows and columns of the Quix app's table, and for each optional field the events of
    its type and how many of their rows hold it."""
    name = sql.Identifier("public", TABLE)
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(_COUNT.format(name)).fetchone()[0]
        columns = [c for (c,) in conn.execute(_COLUMNS, (TABLE,))]
        kept = {}
        for field, kind in _OPTIONAL_FIELDS.items():
            if field in columns and "event_type" in columns:
                of, have = conn.execute(_KEPT.format(
                    kind=sql.Identifier("event_type"), field=sql.Identifier(field), table=name),
                    (kind,)).fetchone()
                kept[field] = {"event_type": kind, "events": of, "rows_with_it": have}
    return {"rows": rows, "columns": columns, "optional_fields_kept": kept}


_LANDED = statement("SELECT count(*) FROM {events} WHERE {events.kafka_topic} = %s",
                    events=tables.events)


def streamflow_rows(url: str) -> int:
    """Rows of the backlog in raw.events, counted once the sink is done."""
    with psycopg.connect(libpq_url(url)) as conn:
        return conn.execute(_LANDED, (TOPIC,)).fetchone()[0]


def warm_coordinator(st: Stack) -> None:
    """Join a throwaway consumer group on the backlog and read a message. The first group a
    fresh broker serves waits for its group coordinator to load (~3 s here: the sink's first
    landing came 4.1 s after its start on a fresh broker, 1.0 s for the next group on the same
    topic); that wait would fall on whichever drain ran first."""
    consumer = kafka_clients.consumer(st.kafka, GROUPS["warm_up"])
    consumer.subscribe([TOPIC])
    try:
        poll_until(lambda: any(m.error() is None for m in consumer.consume(1, 1.0)), 60,
                   "a first message for the warm-up group", interval_s=0)
    finally:
        consumer.close()


def bench_quix(st: Stack, events: int) -> dict:
    python = ensure_venv(venv_dir())
    topics.create_topic(st.kafka, TOPIC)
    _log(f"quix: producing {events:,} demo events ...")
    run_producer(ProducerConfig(st.kafka, topic=TOPIC, count=events, seed=1),
                 BENCH_PII_KEY.encode(), StopFlag(), progress=Progress("producer"))
    warm_coordinator(st)
    _log("quix: StreamFlow's sink drains the backlog ...")
    settle(st.database_url)
    streamflow = drain_with_sink(st, TOPIC, events, group=GROUPS["streamflow"])
    streamflow["rows"] = streamflow_rows(st.database_url)
    _log("quix: Quix Streams' PostgreSQLSink drains the same backlog ...")
    url = fresh_database(st, "bench_quix")
    settle(st.database_url)
    quix = drain_with_quix(st, python, url, events)
    return {
        "events": events,
        "topic": TOPIC,
        "quixstreams_version": installed_version(python),
        **comparison(streamflow, quix),
        "note": "Each drain from offset 0 with its own group, timed from its process's start "
                "to every event in PostgreSQL (StreamFlow: its stored offsets; Quix: its "
                "group's Kafka commits, made after each write). Quix: Application defaults "
                "but auto_offset_reset=earliest; PostgreSQLSink defaults; JSON values.",
    }


def refresh_docs(doc: dict, results: str) -> None:
    """docs/BENCHMARKS.md's comparison with Quix Streams, from a full run."""
    from benchmarks.report import DOCS, replace_between

    verdict = "met" if doc["meets_target"] else "**not met**"
    replace_between(DOCS / "BENCHMARKS.md", "quix", (
        f"`{results}`: {doc['events']:,} demo events; target StreamFlow ≥ "
        f"{doc['target_ratio']}× Quix Streams (events/s from start): {verdict}.\n\n"
        + table(doc)))
