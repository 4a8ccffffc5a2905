"""`make soak LIFECYCLE=1`: the soak with the storage lifecycle running (docs/ARCHITECTURE.md,
"Storage over time"), to show that storage stays bounded and that nothing is lost on the way
to the archive.

    python -m benchmarks.soak --lifecycle            # 60 min at 2,000 events/s, 5m / 15m
    python -m benchmarks.soak --lifecycle --quick    # 12 min, 5m periods kept 5m

The stack is `streamflow up` on an isolated home with STREAMFLOW_PARTITION_INTERVAL and
STREAMFLOW_HOT_RETENTION (dead letters kept as long); Dagster's own schedules archive each
period at its end (`archive_periods`) and run the lifecycle pass every period (`lifecycle`):
the harness runs no pass of its own until the end. Each sample records PostgreSQL's database
size, each partitioned table's size (all its partitions), the store disks of `make soak`
(PostgreSQL's data directory with its WAL, Dagster's home), the archive's bytes and rows,
and the rows still hot. A probe sends timestamped events beside the demo producer's
(``LatencyProbe``) and notes when each is visible in raw.events, and when a partition leaves
its table (a detach, then the drop).

At the end: the workers are stopped, a sink alone drains what Kafka holds, one lifecycle pass
runs, and every landed event is accounted for by id (``account``): the archive's periods no
longer hot plus the hot rows hold each event once, and as many as Kafka holds minus what the
sink dead-lettered.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson
import psycopg
import pyarrow.parquet as pq

from benchmarks.harness import BENCH_PII_KEY, Stack, percentile, poll_until
from benchmarks.pipeline import WARM_UP_S
from benchmarks.stack_probe import MB, StackProbe
from streamflow import kafka_clients, lifecycle, stack, topics
from streamflow.archive import open_location
from streamflow.archive.listing import list_archive
from streamflow.db import partitions
from streamflow.db.engine import libpq_url
from streamflow.producer.generator import EventGenerator

# The bars: PostgreSQL's disk (and Dagster's) flat once retention starts, the last
# third's mean within 10 % of the middle third's; the archive at most 80 B per event; the
# produce->row p99 of windows with a drop within 2x of the p99 of the others.
FLAT_TOLERANCE = 0.10
ARCHIVE_BYTES_PER_EVENT = 80
DROP_P99_FACTOR = 2.0
# Probe events per second: enough for a p99 within the few windows holding a drop (20/s x
# 30 s = 600 per window), 1 % of the demo's 2,000/s.
PROBE_RATE = 20
# How often the probe looks for its events (the latency's resolution) and for partitions
# that left their table (a drop's moment, to within a second).
PROBE_POLL_S = 0.05
PARTITIONS_POLL_S = 1.0
DRAIN_TIMEOUT_S = 900


@dataclass(frozen=True)
class LifecyclePlan:
    rate: float = 2_000.0
    minutes: float = 60.0
    sample_s: float = 30.0
    interval: str = "5m"
    retention: str = "15m"

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    def settings(self) -> dict[str, object]:
        """The stack's settings: dead letters cycle as the rest do, and Dagster keeps its runs
        and runless events as long, so that its storage too levels off within the hour."""
        return {"STREAMFLOW_DEMO_RATE": self.rate, "STREAMFLOW_PARTITION_INTERVAL": self.interval,
                **{name: self.retention for name in (
                    "STREAMFLOW_HOT_RETENTION", "STREAMFLOW_DEAD_LETTER_RETENTION",
                    "STREAMFLOW_DAGSTER_RUN_RETENTION", "STREAMFLOW_DAGSTER_EVENT_RETENTION")}}


FULL = LifecyclePlan()
# Periods must tile an hour, so 5 m is the shortest that makes sense; kept 5 m (not 15) so
# that 12 minutes see drops: a period is dropped at the first pass 5 m after its end.
QUICK = LifecyclePlan(minutes=12.0, sample_s=20.0, retention="5m")


# -- the verdicts (pure) ---------------------------------------------------------------------

class Point(NamedTuple):
    t_s: float
    value: float


@dataclass(frozen=True)
class Flatness:
    """The last third's mean against a baseline: the middle third's samples taken once
    retention started (before it, the store only grows), or, when retention started later
    than the middle third (a short run), the samples between its start and the last third."""

    baseline: str            # middle_third | after_retention | none
    baseline_mean: float | None
    last_third_mean: float | None
    tolerance: float

    @property
    def change(self) -> float | None:
        if not self.baseline_mean or self.last_third_mean is None:
            return None
        return self.last_third_mean / self.baseline_mean - 1

    @property
    def flat(self) -> bool | None:
        """None when there is nothing to judge (retention never started, too few samples)."""
        change = self.change
        return None if change is None else abs(change) <= self.tolerance


def flatness(points: Sequence[Point], retention_from_s: float | None,
             tolerance: float = FLAT_TOLERANCE) -> Flatness:
    """Thirds by time over the points' span (see ``Flatness``)."""
    if retention_from_s is None or len(points) < 3:
        return Flatness("none", None, None, tolerance)
    first, last = points[0].t_s, points[-1].t_s
    middle_from, last_from = first + (last - first) / 3, first + 2 * (last - first) / 3
    tail = [p.value for p in points if p.t_s >= last_from]
    baseline, basis = [p.value for p in points if max(middle_from, retention_from_s) <= p.t_s
                       < last_from], "middle_third"
    if retention_from_s > middle_from:
        basis = "after_retention"
    if not baseline or not tail:
        return Flatness("none", None, None, tolerance)
    return Flatness(basis, statistics.fmean(baseline), statistics.fmean(tail), tolerance)


@dataclass(frozen=True)
class Account:
    """Every event Kafka holds, landed once: in the archive (periods no longer hot) or hot."""

    produced: int              # messages on user-events (end offsets, from the topic's start)
    ingest_dead_letters: int   # of those, what the sink dead-lettered instead of landing
    archived: int              # event rows in archived periods that are no longer hot
    hot: int                   # rows in raw.events
    distinct: int              # distinct event ids over both

    @property
    def expected(self) -> int:
        return self.produced - self.ingest_dead_letters

    @property
    def rows(self) -> int:
        return self.archived + self.hot

    @property
    def twice(self) -> int:
        return self.rows - self.distinct

    @property
    def lost(self) -> int:
        """Expected events with no row (negative: more distinct events than Kafka held)."""
        return self.expected - self.distinct

    @property
    def exact(self) -> bool:
        return self.twice == 0 and self.lost == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "expected": self.expected, "rows": self.rows,
                "twice": self.twice, "lost": self.lost, "exact": self.exact}


class Probed(NamedTuple):
    sent_s: float     # since the soak started
    latency_s: float  # sent -> visible in raw.events


def windows_with(times: Sequence[float], bounds: Sequence[float]) -> set[int]:
    """Indexes i of the windows [bounds[i-1], bounds[i]) holding one of ``times``."""
    hit = set()
    for t in times:
        for i in range(1, len(bounds)):
            if bounds[i - 1] <= t < bounds[i]:
                hit.add(i)
    return hit


def _quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * percentile(ordered, 0.99), 1),
            "max_ms": round(1000 * ordered[-1], 1)}


def latency_split(probed: Sequence[Probed], drops: Sequence[float],
                  bounds: Sequence[float], factor: float = DROP_P99_FACTOR) -> dict:
    """Produce->row latency of the probe's events by the sample window they were sent in:
    windows in which a partition left its table against the others."""
    hit = windows_with(drops, bounds)
    by_drop: dict[bool, list[float]] = {True: [], False: []}
    for p in probed:
        window = next((i for i in range(1, len(bounds)) if bounds[i - 1] <= p.sent_s
                       < bounds[i]), None)
        if window is not None:
            by_drop[window in hit].append(p.latency_s)
    during, outside = _quantiles(by_drop[True]), _quantiles(by_drop[False])
    ratio = (during["p99_ms"] / outside["p99_ms"]
             if during["count"] and outside["count"] and outside["p99_ms"] else None)
    return {"drop_windows": len(hit), "during_drop": during, "without_drop": outside,
            "p99_ratio": None if ratio is None else round(ratio, 2), "factor": factor,
            "within": None if ratio is None else ratio <= factor}


# -- what is sampled -------------------------------------------------------------------------

@dataclass(frozen=True)
class StorageSample:
    t_s: float
    database_mb: float                # pg_database_size
    tables_mb: dict[str, float]       # each partitioned table, all its partitions
    postgres_disk_mb: float           # the data directory, WAL included
    dagster_disk_mb: float            # DAGSTER_HOME (SQLite storage, logs)
    archive_mb: float
    archived_rows: dict[str, int]
    hot_events: int
    produced: int
    landed: int
    sink_lag: int
    hot_periods: int                  # raw.events' period partitions


_TABLE_SIZE = ("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
               "WHERE inhparent = %s::regclass")


def storage_sample(probe: StackProbe, conn: psycopg.Connection, archive_url: str,
                   now: float) -> StorageSample:
    base = probe.sample(now, [])
    archived = list_archive(archive_url)
    rows: dict[str, int] = {}
    for a in archived:
        rows[a.table] = rows.get(a.table, 0) + a.rows
    return StorageSample(
        t_s=base.t_s,
        database_mb=round(conn.execute("SELECT pg_database_size(current_database())")
                          .fetchone()[0] / MB, 2),
        tables_mb={spec.name: round(conn.execute(_TABLE_SIZE, (spec.name,)).fetchone()[0] / MB,
                                    2) for spec in partitions.TABLES
                   if partitions.is_partitioned(conn, spec)},  # fct_events: after dbt's build
        postgres_disk_mb=base.disk_mb["postgres"], dagster_disk_mb=base.disk_mb["dagster"],
        archive_mb=round(sum(a.bytes for a in archived) / MB, 3), archived_rows=rows,
        hot_events=conn.execute("SELECT count(*) FROM raw.events").fetchone()[0],
        produced=base.produced, landed=base.landed, sink_lag=base.sink_lag,
        hot_periods=len(partitions.partitions(conn, partitions.EVENTS)))


@dataclass
class LatencyProbe:
    """Sends PROBE_RATE events/s to user-events on a thread, notes when each is visible in
    raw.events, and when any partition of a partitioned table leaves it."""

    st: Stack
    started: float
    probed: list[Probed] = field(default_factory=list)
    drops: list[tuple[float, str]] = field(default_factory=list)  # (since start, partition)
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LatencyProbe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _hot(self, conn: psycopg.Connection) -> set[str]:
        return {p.name for spec in partitions.TABLES if partitions.is_partitioned(conn, spec)
                for p in partitions.partitions(conn, spec)}

    def _run(self) -> None:
        generator = EventGenerator(BENCH_PII_KEY.encode(), users=100, seed=23)
        producer = kafka_clients.producer(self.st.kafka, **{"linger.ms": 0})
        pending: dict[str, float] = {}
        with psycopg.connect(libpq_url(self.st.database_url), autocommit=True) as conn:
            hot = self._hot(conn)
            next_send = next_parts = time.time()
            while not self._stop.is_set():
                now = time.time()
                while now >= next_send:
                    (key, value), = generator.batch(1)
                    pending[orjson.loads(value)["event_id"]] = time.time()
                    producer.produce(topics.USER_EVENTS, value, key)
                    self.sent += 1
                    next_send += 1 / PROBE_RATE
                producer.poll(0)
                if pending:
                    seen = conn.execute("SELECT event_id::text FROM raw.events "
                                        "WHERE event_id = ANY(%s::uuid[])", (list(pending),))
                    at = time.time()
                    for (event_id,) in seen.fetchall():
                        sent = pending.pop(event_id)
                        self.probed.append(Probed(round(sent - self.started, 3),
                                                  round(at - sent, 4)))
                if now >= next_parts:
                    now_hot = self._hot(conn)
                    self.drops += [(round(time.time() - self.started, 1), name)
                                   for name in sorted(hot - now_hot)]
                    hot, next_parts = now_hot, now + PARTITIONS_POLL_S
                time.sleep(PROBE_POLL_S)
        producer.flush(30)


# -- the end: drain, one pass, the account ---------------------------------------------------

def _archived_columns(url: str, table: str, hot_keys: list[str],
                      names: list[str]) -> list[dict]:
    """``names`` of the archived rows of ``table`` in periods no longer hot, period by period
    (pyarrow reads only those columns of each file)."""
    location = open_location(url)
    return [pq.read_table(location.fs.open(location.data_path(table, key), "rb"),
                          columns=names).to_pydict()
            for key in location.period_keys(table) if key not in set(hot_keys)]


def _ingest_dead_letters(conn: psycopg.Connection, url: str, hot_keys: list[str]) -> int:
    hot = conn.execute("SELECT count(*) FROM raw.dead_letters WHERE stage = 'ingest' "
                       "AND source_topic = %s", (topics.USER_EVENTS,)).fetchone()[0]
    archived = sum(
        sum(1 for stage, topic in zip(part["stage"], part["source_topic"], strict=True)
            if stage == "ingest" and topic == topics.USER_EVENTS)
        for part in _archived_columns(url, partitions.DEAD_LETTERS.name, hot_keys,
                                      ["stage", "source_topic"]))
    return hot + archived


def account(st: Stack, conn: psycopg.Connection, produced: int) -> Account:
    """Count every event id once over the archive's periods no longer hot and raw.events."""
    url = st.settings.archive_location
    keys = {spec.name: [p.period.key for p in partitions.partitions(conn, spec)]
            for spec in (partitions.EVENTS, partitions.DEAD_LETTERS)}
    seen: set[str] = set()
    archived = hot = 0
    for part in _archived_columns(url, partitions.EVENTS.name, keys[partitions.EVENTS.name],
                                  ["event_id"]):
        archived += len(part["event_id"])
        seen.update(part["event_id"])
    with conn.cursor().copy("COPY (SELECT event_id FROM raw.events) TO STDOUT") as copy:
        for (event_id,) in copy.rows():
            hot += 1
            seen.add(str(event_id))
    return Account(produced, _ingest_dead_letters(conn, url, keys[partitions.DEAD_LETTERS.name]),
                   archived, hot, len(seen))


def drain_and_account(st: Stack, probe: StackProbe, conn: psycopg.Connection,
                      echo) -> dict:
    """Workers stopped (the producers with them), a sink alone lands what Kafka holds, one
    lifecycle pass, then the account."""
    stack.stop_workers(st.settings)
    sink = st.start("sink", "--metrics-port", "0")
    try:
        drained = time.time()
        poll_until(lambda: probe.sink_position().lag == 0, DRAIN_TIMEOUT_S,
                   "the sink to land everything Kafka holds", interval_s=1.0)
        echo(f"drained in {time.time() - drained:.0f} s")
    finally:
        sink.terminate()
        sink.wait(60)
    report = lifecycle.run_configured(st.settings, st.database_url, echo=echo)
    produced = sum(topics.end_offsets(probe.consumer, topics.USER_EVENTS, probe.partitions))
    counted = account(st, conn, produced)
    return {"final_pass": [str(s) for s in report.steps],
            "final_pass_failures": [str(s) for s in report.failures],
            "account": counted.as_dict()}


# -- the run ---------------------------------------------------------------------------------

def summarize(samples: Sequence[StorageSample], drops: Sequence[tuple[float, str]],
              probed: Sequence[Probed], bounds: Sequence[float]) -> dict:
    """The verdicts: flat PostgreSQL and Dagster storage, archive bytes per event, latency."""
    event_drops = [t for t, name in drops if name.startswith(partitions.EVENTS.table.name + "_p")]
    retention_from = min(event_drops, default=None)

    def judged(values: list[Point]) -> dict:
        f = flatness(values, retention_from)
        return {"baseline": f.baseline, "baseline_mean": f.baseline_mean,
                "last_third_mean": f.last_third_mean,
                "change": None if f.change is None else round(f.change, 4), "flat": f.flat}

    last = samples[-1] if samples else None
    archived_events = last.archived_rows.get(partitions.EVENTS.name, 0) if last else 0
    return {
        "retention_started_s": retention_from,
        "drops": [{"t_s": t, "partition": name} for t, name in drops],
        "postgres_disk": judged([Point(s.t_s, s.postgres_disk_mb) for s in samples]),
        "database_size": judged([Point(s.t_s, s.database_mb) for s in samples]),
        "dagster_disk": judged([Point(s.t_s, s.dagster_disk_mb) for s in samples]),
        "archived_events": archived_events,
        "archive_mb": last.archive_mb if last else None,
        "latency": latency_split(probed, [t for t, _ in drops], bounds),
        "flat_tolerance": FLAT_TOLERANCE,
    }


def archive_per_event(url: str) -> dict:
    """Bytes per archived event: raw.events' files over their rows (the target, as in
    benchmarks/archive_footprint.py), and the whole archive (dead letters and notifications
    too) over the same rows."""
    found = list_archive(url)
    events = [a for a in found if a.table == partitions.EVENTS.name]
    rows = sum(a.rows for a in events)
    per_event = sum(a.bytes for a in events) / rows if rows else None
    whole = sum(a.bytes for a in found) / rows if rows else None
    return {"events": rows, "events_bytes_per_event": per_event and round(per_event, 1),
            "all_tables_bytes_per_event": whole and round(whole, 1),
            "limit": ARCHIVE_BYTES_PER_EVENT,
            "within": None if per_event is None else per_event <= ARCHIVE_BYTES_PER_EVENT}


def run_lifecycle_soak(st: Stack, plan: LifecyclePlan, echo,
                       keep_logs: Path | None = None) -> dict:
    stack.start_workers(st.settings, st.database_url, echo=echo)
    samples: list[StorageSample] = []
    bounds: list[float] = []
    interrupted = False
    probe = StackProbe(st).setup()
    latency: LatencyProbe | None = None
    try:
        first_window_s, started = probe.warm_up(echo)
        latency = LatencyProbe(st, started).start()
        next_sample = started
        try:
            while True:
                now = time.time()
                if now >= next_sample:
                    s = storage_sample(probe, probe.conn, st.settings.archive_location, now)
                    samples.append(s)
                    bounds.append(s.t_s)
                    echo(_progress(s, plan, latency))
                    if now - started >= plan.seconds:
                        break
                    next_sample += plan.sample_s
                time.sleep(1.0)
        except KeyboardInterrupt:
            interrupted = True
            echo("interrupted: summing up what was sampled")
        latency.stop()
        echo("stopping the workers; a sink alone drains Kafka, then one lifecycle pass ...")
        try:
            end = drain_and_account(st, probe, probe.conn, echo)
        except Exception as exc:  # noqa: BLE001 - the samples are still worth writing
            echo(f"the account failed: {exc!r}")
            end = {"account_error": repr(exc)}
    finally:
        if latency is not None:
            latency.stop()
        probe.close()
        stack.stop_workers(st.settings)
        if keep_logs is not None:
            shutil.copytree(st.settings.logs_dir, keep_logs, dirs_exist_ok=True)
    summary = summarize(samples, latency.drops, latency.probed, bounds)
    summary["archive"] = archive_per_event(st.settings.archive_location)
    summary["probe_events"] = {"sent": latency.sent, "seen": len(latency.probed)}
    return {"plan": asdict(plan), "first_window_after_start_s": round(first_window_s, 1),
            "warm_up_s": WARM_UP_S, "interrupted": interrupted, "summary": summary, **end,
            "samples": [asdict(s) for s in samples]}


def _progress(s: StorageSample, plan: LifecyclePlan, latency: LatencyProbe) -> str:
    return (f"soak {s.t_s:5.0f}/{plan.seconds:.0f} s  landed {s.landed:,}  lag {s.sink_lag:,}  "
            f"pg {s.postgres_disk_mb:,.0f} MB (db {s.database_mb:,.0f})  "
            f"dagster {s.dagster_disk_mb:,.0f} MB  archive {s.archive_mb:,.1f} MB  "
            f"hot {s.hot_events:,} in {s.hot_periods} periods  drops {len(latency.drops)}")


def table(document: dict) -> str:
    """The short report printed at the end."""
    s = document["summary"]
    a = document.get("account")
    lat = s["latency"]

    def flat(name: str, label: str) -> str:
        f = s[name]
        mean = f"{f['baseline_mean']:,.1f} -> {f['last_third_mean']:,.1f} MB" \
            if f["baseline_mean"] is not None else "n/a"
        return (f"| {label} | {mean} ({f['baseline']}) | "
                f"{'n/a' if f['change'] is None else format(f['change'], '+.1%')} | "
                f"{_verdict(f['flat'])} |")

    return "\n".join([
        "| what | figure | change | verdict |", "|---|---|---|---|",
        flat("postgres_disk", "PostgreSQL disk (data dir + WAL)"),
        flat("database_size", "pg_database_size"),
        flat("dagster_disk", "Dagster storage"),
        f"| archive per event | raw.events {s['archive']['events_bytes_per_event']} B (all "
        f"tables {s['archive']['all_tables_bytes_per_event']} B; {s['archive']['events']:,} "
        "events) "
        f"| limit {ARCHIVE_BYTES_PER_EVENT} B | {_verdict(s['archive']['within'])} |",
        _account_row(a, document.get("account_error")),
        f"| produce->row p99 | {lat['during_drop'].get('p99_ms')} ms in {lat['drop_windows']} "
        f"drop windows, {lat['without_drop'].get('p99_ms')} ms without | ratio "
        f"{lat['p99_ratio']} (limit {lat['factor']:g}x) | {_verdict(lat['within'])} |",
    ])


def _account_row(a: dict | None, error: str | None) -> str:
    if a is None:
        return f"| account | failed: {error} | | FAIL |"
    return (f"| account | {a['archived']:,} archived + {a['hot']:,} hot = {a['rows']:,} rows, "
            f"{a['distinct']:,} distinct; expected {a['expected']:,} ({a['produced']:,} produced - "
            f"{a['ingest_dead_letters']:,} dead-lettered) | lost {a['lost']}, twice {a['twice']} "
            f"| {_verdict(a['exact'])} |")


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def main(plan: LifecyclePlan, quick: bool, stamp: str, echo) -> dict:
    from benchmarks.harness import environment, isolated_stack
    from benchmarks.soak import RESULTS

    logs = RESULTS / f"{stamp}-soak-lifecycle" / "logs"  # git ignores logs/
    with isolated_stack(**plan.settings()) as st:
        document = {"quick": quick, "stamp": stamp, "environment": environment(st),
                    "started_at": datetime.now(UTC).isoformat(),
                    **run_lifecycle_soak(st, plan, echo, keep_logs=logs)}
    echo(f"the stack's logs: {logs}/")
    return document


if __name__ == "__main__":
    sys.exit("run it as: python -m benchmarks.soak --lifecycle")
