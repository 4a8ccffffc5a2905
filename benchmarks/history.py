"""Per-run and per-minute cost as history grows: one micro-batch run, each asset check and one
sensor evaluation, timed over 0, 1M and 10M rows of already-processed history.

History is loaded with COPY as the sink writes it (its own decode; ~10% as many dead letters)
into daily partitions made for each day it spans (a week of hot storage), then marked
processed: notifications, published windows, per-minute counters, watermarks. It
ends two hours before the benchmark starts, so none of it falls in any "last hour" a check
reads: levels differ only in how much older data there is.

Fresh events go the real way: produced to a topic, landed by the real sink (in-process), then
one `dg.materialize` of the micro-batch assets (in-process). Every statement the steps, checks
and sensor send is recorded and EXPLAIN ANALYZEd afterwards (rolled back), so a query whose
work grows with history shows up by name, with its buffers and any sequential scan.

    python -m benchmarks.history            # 0, 1M, 10M rows (~6 GB of disk, ~20-30 min)
    python -m benchmarks.history --quick    # 0, 100k, 1M
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import orjson
import psycopg
from psycopg import sql

from assets import MICROBATCH_ASSETS
from assets.checks import CHECKS
from assets.microbatch import run_config
from benchmarks.harness import (
    BENCH_PII_KEY,
    Stack,
    environment,
    isolated_stack,
    write_results,
)
from resources import KafkaResource, PostgresResource
from sensors.microbatch import new_events_sensor
from streamflow import contract, topics
from streamflow.db import partitions
from streamflow.db.engine import libpq_url
from streamflow.db.tables import LANDING_COLUMNS, LandingRow, notifications
from streamflow.dlq import DeadLetter, Reason, Stage, raw_headers_json, storable_headers
from streamflow.microbatch import batch, windows
from streamflow.microbatch import notifications as contract_step
from streamflow.producer.generator import EventGenerator
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.sink.decode import decode
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.supervisor import DEMO_INVALID_RATE
from streamflow.workers.runtime import Progress, StopFlag

LEVELS = (0, 1_000_000, 10_000_000)
# The checks that read PostgreSQL (the replication checks ask Kafka, which history leaves be).
HISTORY_CHECKS = [c for c in CHECKS if "postgres" in c.required_resource_keys]
QUICK_LEVELS = (0, 100_000, 1_000_000)
# One run's batch: ~17 minutes of the demo stream, half a run's MAX_BATCH.
FRESH_EVENTS = 50_000
# Repeats per level, medians reported. A run's Python phases jitter by ~0.2 s (a garbage
# collection landing in one or another), a check's wall time by milliseconds (connection,
# Dagster's invocation): enough repeats that a median is a level's cost, not luck.
RUNS = 5            # micro-batch runs, each over its own fresh events (~10 s each)
CHEAP_REPEATS = 15  # evaluations of each check and of the sensor (milliseconds each)
TARGET_RATIO = 1.2  # the bound on cost at the largest level / cost at 0
# The largest level spreads over a week of event time at one rate (10M: ~17 events/s) and
# ends QUIET before the start: whatever "the last hour" a query reads is history-free.
HISTORY_SPAN = timedelta(days=7)
QUIET = timedelta(hours=2)
# History sits in daily partitions, as a week of hot storage does (docs/ARCHITECTURE.md,
# "Storage over time"): what reads by ingest_seq cannot prune must stay index-only per partition.
PARTITION_INTERVAL = timedelta(days=1)
# Every 20th message never landed (an ingest dead letter) and every 20th landed event breaks
# the contract (a contract dead letter): ~10% as many dead letters as events.
INGEST_REJECT_EVERY = 20
CONTRACT_REJECT_EVERY = 20
BAD_TYPE = "teleport"
# What the contract check says about it (streamflow.validation), as its dead letter's reason.
_BAD_TYPE_FAILURE = contract.Failure(
    check=f"isin({[t.value for t in contract.EventType]})", column="event_type", value=BAD_TYPE)
PARTITIONS = 3
CONTRACT_COUNTS_KEPT = timedelta(days=2)  # as the contract step keeps them
GREW = 1.5  # a statement "grows" when its buffers at the largest level exceed level 0's ...
GREW_MIN_BUFFERS = 100  # ... by this factor and by at least this many 8 kB pages

_COPY_EVENTS = sql.SQL("COPY raw.events ({}) FROM STDIN").format(sql.SQL(", ").join(
    map(sql.Identifier, (*LANDING_COLUMNS, "ingest_seq", "ingested_at"))))
_COPY_DEAD_LETTERS = sql.SQL(
    "COPY raw.dead_letters (stage, reason_code, reason, payload, message_key, headers, "
    "raw_headers, event_id, source_topic, source_partition, source_offset, created_at) FROM STDIN")

_NOTIFIED = sql.SQL(", ").join(sql.Identifier(c.name) for c in notifications.columns
                               if c.name != "validated_at")
_COPY_NOTIFICATIONS = sql.SQL(
    "INSERT INTO streamflow.notifications ({cols}, validated_at) "
    "SELECT {cols}, ingested_at FROM raw.events "
    "WHERE ingest_seq BETWEEN %(first)s AND %(last)s AND event_type <> %(bad)s").format(
        cols=_NOTIFIED)
# The windows of the new history, as the windows step computes them (the first one also
# holds the previous level's last events), published.
_PUBLISHED_WINDOWS = """
    INSERT INTO streamflow.event_windows AS w (window_start, window_end, event_type, events,
        distinct_users, login_successes, login_failures, purchase_cents, revision,
        published_revision)
    SELECT ws, ws + make_interval(secs => %(w)s), event_type, count(*), count(DISTINCT user_id),
           count(*) FILTER (WHERE event_type = 'login' AND success),
           count(*) FILTER (WHERE event_type = 'login' AND NOT success),
           coalesce(sum(amount_cents) FILTER (WHERE event_type = 'purchase'), 0), 1, 1
    FROM (SELECT to_timestamp(floor(extract(epoch FROM occurred_at) / %(w)s) * %(w)s) AS ws, *
          FROM streamflow.notifications
          WHERE occurred_at >= to_timestamp(floor(extract(epoch FROM %(lo)s) / %(w)s) * %(w)s)
            AND occurred_at < to_timestamp(floor(extract(epoch FROM %(hi)s) / %(w)s + 1) * %(w)s)
         ) n
    GROUP BY ws, event_type
    ON CONFLICT (window_start, event_type) DO UPDATE SET events = EXCLUDED.events,
        distinct_users = EXCLUDED.distinct_users, login_successes = EXCLUDED.login_successes,
        login_failures = EXCLUDED.login_failures, purchase_cents = EXCLUDED.purchase_cents,
        published_revision = w.revision
"""
_CONTRACT_COUNTS = """
    INSERT INTO streamflow.contract_counts AS c (minute, checked, valid, rejected)
    SELECT date_trunc('minute', ingested_at), count(*),
           count(*) FILTER (WHERE event_type <> %(bad)s),
           count(*) FILTER (WHERE event_type = %(bad)s)
    FROM raw.events WHERE ingest_seq BETWEEN %(first)s AND %(last)s AND ingested_at > %(since)s
    GROUP BY 1
    ON CONFLICT (minute) DO UPDATE SET checked = c.checked + EXCLUDED.checked,
        valid = c.valid + EXCLUDED.valid, rejected = c.rejected + EXCLUDED.rejected
"""
_MAX_SEQ = "SELECT coalesce(max(ingest_seq), 0) FROM raw.events"
# Spoiled messages the sink cannot land, in turn: truncated in flight, no id, a bad id.
_SPOILERS = (lambda v: v[:-7], lambda v: v.replace(b'"event_id"', b'"id"', 1),
             lambda v: v.replace(b'"event_id":"', b'"event_id":"evt-', 1))


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _headers() -> list[tuple[str, bytes]]:
    return contract.HEADERS


def _letter_row(d: DeadLetter, created_at: datetime) -> tuple:
    return (d.stage.value, d.reason_code.value, d.reason, d.payload, d.key,
            storable_headers(d.headers), raw_headers_json(d.headers), d.event_id,
            d.source_topic, d.source_partition, d.source_offset, created_at)


class History:
    """Processed history, grown level by level (cumulatively) in one database."""

    def __init__(self, database_url: str, largest: int, started: datetime,
                 span: timedelta = HISTORY_SPAN) -> None:
        self.url = libpq_url(database_url)
        self.gen = EventGenerator(BENCH_PII_KEY.encode(), seed=7)
        self.rows = 0      # history events landed so far (the fresh runs' are not counted)
        self.messages = 0  # history messages so far, rejects included: their Kafka offsets
        self.started = started
        self.t0 = started - QUIET - span
        self.t0_ms = self.t0.timestamp() * 1000
        self.step_ms = span.total_seconds() * 1000 / max(largest, 1)

    def partition(self, interval: timedelta = PARTITION_INTERVAL) -> dict[str, int]:
        """Make the partitions of every period the history spans (a row's time key is its
        event time here), so that its COPY lands in them, not in the default partitions:
        the partitions a week of hot storage holds. Returns each table's partition count."""
        wanted = list(partitions.periods(self.t0, self.started, interval))
        with psycopg.connect(self.url, autocommit=True) as conn:
            for spec in partitions.TABLES:
                partitions.ensure(conn, spec, interval, self.started, periods_wanted=wanted)
            # marts.fct_events is dbt's, partitioned at its first build: none here.
            return {spec.name: len(partitions.partitions(conn, spec))
                    for spec in partitions.TABLES if partitions.is_partitioned(conn, spec)}

    def grow(self, target: int) -> dict:
        """COPY events and dead letters up to ``target`` history rows, then mark them
        processed, VACUUM ANALYZE and CHECKPOINT (as autovacuum and time would have)."""
        if target <= self.rows:
            return {"rows": self.rows}
        started = time.perf_counter()
        with psycopg.connect(self.url) as events_conn, \
                psycopg.connect(self.url) as letters_conn:
            # After the fresh events of earlier levels' runs: the sequence stays consecutive.
            first = events_conn.execute(_MAX_SEQ).fetchone()[0] + 1
            last = self._copy(events_conn, letters_conn, first, target)
            events_conn.execute("SELECT setval('raw.events_ingest_seq', %s)", (last,))
        copied = time.perf_counter() - started
        _log(f"history: {target:,} rows copied in {copied:.0f} s; marking them processed ...")
        with psycopg.connect(self.url, autocommit=True) as conn:
            self._processed(conn, first, last)
            consistent = conn.execute(
                "SELECT (SELECT count(*) FROM raw.dead_letters) = "
                "(SELECT coalesce(sum(dead_letters), 0) FROM streamflow.dlq_report)"
            ).fetchone()[0]
            _log("history: VACUUM ANALYZE, CHECKPOINT ...")
            for table in ("raw.events", "raw.dead_letters", "streamflow.notifications",
                          "streamflow.event_windows", "streamflow.dlq_report",
                          "streamflow.contract_counts"):
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(
                    sql.Identifier(*table.split("."))))
            conn.execute("CHECKPOINT")  # its writes must not land in the timed runs
        elapsed = time.perf_counter() - started
        _log(f"history: {target:,} rows ready in {elapsed:.0f} s")
        return {"rows": self.rows, "copy_seconds": round(copied, 1),
                "copy_rows_per_s": round((last - first + 1) / copied),
                "ready_seconds": round(elapsed, 1), "dlq_report_consistent": consistent}

    def _copy(self, events_conn, letters_conn, seq: int, target: int) -> int:
        """Generate in event-time order and COPY into raw.events and raw.dead_letters at once
        (two connections): each landed event as the sink decodes it, every spoiled message as
        its ingest dead letter, every contract breaker also as its contract dead letter."""
        gen, progress = self.gen, Progress("history", log_interval_s=5.0)
        start_rows = self.rows
        with events_conn.cursor().copy(_COPY_EVENTS) as events, \
                letters_conn.cursor().copy(_COPY_DEAD_LETTERS) as letters:
            while self.rows < target:
                n = min(10_000, target - self.rows)
                users = gen.rng.choices(gen.users, cum_weights=gen.user_weights, k=n)
                types = gen.rng.choices(gen.types, cum_weights=gen.type_weights, k=n)
                for user, event_type in zip(users, types, strict=True):
                    event = gen.event(user, event_type, int(self.t0_ms + self.rows * self.step_ms))
                    if seq % CONTRACT_REJECT_EVERY == 0:
                        event["event_type"] = BAD_TYPE
                    value, key = orjson.dumps(event), user.user_id.encode()
                    if self.messages % INGEST_REJECT_EVERY == 0:
                        spoiled = _SPOILERS[self.messages // INGEST_REJECT_EVERY % 3](value)
                        letter = decode(spoiled, key, _headers, *self._where())
                        letters.write_row(_letter_row(letter, event["occurred_at"]))
                    row = LandingRow._make(decode(value, key, _headers, *self._where()))
                    events.write_row((*row, seq, row.occurred_at))
                    if event["event_type"] == BAD_TYPE:  # rejected by the micro-batch later
                        letters.write_row(_letter_row(DeadLetter(
                            stage=Stage.CONTRACT, reason_code=Reason.CONTRACT,
                            reason=str(_BAD_TYPE_FAILURE), payload=value, key=key, headers=(),
                            source_topic=row.kafka_topic, source_partition=row.kafka_partition,
                            source_offset=row.kafka_offset, event_id=event["event_id"]),
                            row.occurred_at + timedelta(seconds=5)))
                    seq += 1
                    self.rows += 1
                progress.update(self.rows - start_rows, f"history rows, to {target:,}")
        progress.finish(self.rows - start_rows, "history rows")
        return seq - 1

    def _where(self) -> tuple[str, int, int]:
        """The next history message's Kafka coordinates (topic, partition, offset)."""
        m = self.messages
        self.messages += 1
        return topics.USER_EVENTS, m % PARTITIONS, m // PARTITIONS

    def _processed(self, conn: psycopg.Connection, first: int, last: int) -> None:
        """What the micro-batch would have made of ingest_seq [first, last]."""
        bounds = conn.execute("SELECT min(occurred_at), max(occurred_at) FROM raw.events "
                              "WHERE ingest_seq BETWEEN %s AND %s", (first, last)).fetchone()
        steps = [
            ("notifications", _COPY_NOTIFICATIONS,
             {"first": first, "last": last, "bad": BAD_TYPE}),
            ("published windows", _PUBLISHED_WINDOWS,
             {"w": windows.WINDOW_SECONDS, "lo": bounds[0], "hi": bounds[1]}),
            ("contract counts", _CONTRACT_COUNTS,
             {"first": first, "last": last, "bad": BAD_TYPE,
              "since": datetime.now(UTC) - CONTRACT_COUNTS_KEPT}),
        ]
        for name, statement, params in steps:
            started = time.perf_counter()
            rows = conn.execute(statement, params).rowcount
            _log(f"history: {name}: {rows:,} rows in {time.perf_counter() - started:.0f} s")
        for step in (contract_step.STEP, windows.STEP):
            batch.advance(conn, step, last)


# -- statements, recorded to EXPLAIN them --------------------------------------------------------

# Dagster builds its own resource instances from their config, so the record lives here.
_TRACED: list[tuple[object, object]] = []


class _TracingCursor(psycopg.Cursor):
    def execute(self, query, params=None, **kwargs):
        _TRACED.append((query, params))
        return super().execute(query, params, **kwargs)


class TracingPostgres(PostgresResource):
    """PostgresResource whose connections record each statement and its parameters
    (`execute` only: `executemany` writes by primary key are not recorded)."""

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(libpq_url(self.database_url), autocommit=True,
                               application_name="streamflow-dagster",
                               cursor_factory=_TracingCursor)


def _traced() -> list[tuple[object, object]]:
    taken = list(_TRACED)
    _TRACED.clear()
    return taken


def _label(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:110]


def plan_lines(node: dict, depth: int = 0) -> list[str]:
    """A plan as one short line per node: what it does, on what, rows, pages touched."""
    target = " ".join(filter(None, (node.get("Index Name"), node.get("Relation Name"))))
    line = (f"{'  ' * depth}{node['Node Type']} {target}".rstrip()
            + f" rows={node.get('Actual Rows')} loops={node.get('Actual Loops')}"
            + f" buffers={node.get('Shared Hit Blocks', 0) + node.get('Shared Read Blocks', 0)}")
    return [line] + [child for plan in node.get("Plans", [])
                     for child in plan_lines(plan, depth + 1)]


def _seq_scans(node: dict) -> list[str]:
    found = [node["Relation Name"]] if node["Node Type"] == "Seq Scan" else []
    return found + [name for plan in node.get("Plans", []) for name in _seq_scans(plan)]


def explain(url: str, statements: list[tuple[object, object]]) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) each distinct statement with its last parameters, in a
    transaction rolled back: server milliseconds, pages touched, sequential scans."""
    distinct: dict[str, object] = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for query, params in statements:
            text = query if isinstance(query, str) else query.as_string(conn)
            if re.match(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", text, re.IGNORECASE):
                distinct[text] = params
        plans = {}
        for text, params in distinct.items():
            with conn.transaction(force_rollback=True):
                # The statement is one the product itself sent (recorded above), not data.
                explained = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(
                    sql.SQL(text))
                (doc,) = conn.execute(explained, params).fetchone()
            top = doc[0]["Plan"]
            plans[_label(text)] = {
                "ms": round(doc[0]["Execution Time"], 2),
                "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
                "seq_scans": sorted(set(_seq_scans(top))), "plan": plan_lines(top)}
    return plans


# -- timings -------------------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def _land(st: Stack, name: str, events: int) -> None:
    """``events`` fresh events (the demo stream's invalid share) through Kafka and the real
    sink, in-process.

    A run's events are sent in about a second, so they fill a few 10 s windows; the windows
    step recomputes every window it touches. Each run therefore starts in a window of its
    own, without late events (which reach 60 s back): otherwise a run would also recount the
    previous run's events, more or fewer depending on timing, not on history."""
    topic = topics.create_topic(st.kafka, name)
    time.sleep(windows.WINDOW_SECONDS - time.time() % windows.WINDOW_SECONDS + 0.1)
    run_producer(ProducerConfig(st.kafka, topic=topic, count=events,
                                invalid_rate=DEMO_INVALID_RATE),
                 BENCH_PII_KEY.encode(), StopFlag(), progress=Progress("producer"))
    run_sink(SinkConfig(st.kafka, st.database_url, topic=topic, group_id=name,
                        stop_when_idle_s=2.0), StopFlag())


def _sensor(instance: dg.DagsterInstance, postgres: PostgresResource) -> tuple[float, object]:
    with dg.build_sensor_context(instance=instance, resources={"postgres": postgres}) as context:
        started = time.perf_counter()
        result = new_events_sensor(context)
        return time.perf_counter() - started, result


def one_run(st: Stack, name: str, resources: dict, instance: dg.DagsterInstance,
            events: int = FRESH_EVENTS) -> dict:
    """Land fresh events, let the sensor ask for them, materialise the micro-batch once."""
    _land(st, name, events)
    sensor_s, request = _sensor(instance, resources["postgres"])
    assert isinstance(request, dg.RunRequest), request
    upto = request.run_config["ops"]["notifications"]["config"]["upto_seq"]
    gc.collect()  # every run starts with the same (empty) garbage, whatever ran before
    started = time.perf_counter()
    result = dg.materialize(MICROBATCH_ASSETS, resources=resources, run_config=run_config(upto))
    elapsed = time.perf_counter() - started
    assert result.success
    metadata = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                for e in result.get_asset_materialization_events()}
    return {"seconds": round(elapsed, 3), "sensor_request_seconds": round(sensor_s, 4),
            "checked": metadata["notifications"]["checked"].value,
            "seconds_by_phase": {asset: m["seconds_by_phase"].value
                                 for asset, m in metadata.items() if "seconds_by_phase" in m}}


def measure(st: Stack, level: int, resources: dict, instance: dg.DagsterInstance) -> dict:
    _log(f"level {level:,}: {RUNS} micro-batch runs of {FRESH_EVENTS:,} fresh events ...")
    runs = [one_run(st, f"history-{level}-{i}", resources, instance) for i in range(RUNS)]
    plans = {"run": explain(st.database_url, _traced())}
    # Checks after the runs: at level 0 the newest-100k check then reads as much as later.
    checks = {}
    gc.collect()
    for check in HISTORY_CHECKS:
        seconds = []
        for _ in range(CHEAP_REPEATS):
            started = time.perf_counter()
            check(resources["postgres"])
            seconds.append(time.perf_counter() - started)
        checks[check.check_key.name] = _median(seconds)
        plans[f"check:{check.check_key.name}"] = explain(st.database_url, _traced())
    gc.collect()
    skips = [_sensor(instance, resources["postgres"]) for _ in range(CHEAP_REPEATS)]
    assert all(isinstance(r, dg.SkipReason) for _, r in skips), skips
    plans["sensor"] = explain(st.database_url, _traced())
    median_run = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {
        "run_seconds": _median([r["seconds"] for r in runs]),
        "runs": runs,
        "seconds_by_phase_of_median_run": median_run["seconds_by_phase"],
        "check_seconds": checks,
        "sensor_skip_seconds": _median([s for s, _ in skips]),
        "sensor_request_seconds": _median([r["sensor_request_seconds"] for r in runs]),
        # Pages (8 kB) the statements touch: what history could make grow, free of the
        # machine's noise (wall times here move by tens of percent under other load).
        "pages": {name: sum(p["buffers"] for p in statements.values())
                  for name, statements in plans.items()},
        "plans": plans,
    }


def _ratios(first: dict, last: dict) -> dict:
    """Largest level / level 0: wall seconds (the issue's target) and pages touched."""
    pairs = {"run": (first["run_seconds"], last["run_seconds"]),
             **{f"check:{name}": (s, last["check_seconds"][name])
                for name, s in first["check_seconds"].items()},
             "sensor_skip": (first["sensor_skip_seconds"], last["sensor_skip_seconds"]),
             "sensor_request": (first["sensor_request_seconds"],
                                last["sensor_request_seconds"])}
    return {"seconds": {name: round(b / a, 3) for name, (a, b) in pairs.items()},
            "pages": {name: round(last["pages"][name] / max(pages, 1), 3)
                      for name, pages in first["pages"].items()}}


def _growth(first: dict, last: dict, level: int) -> list[dict]:
    """Statements whose pages touched grow with history, and big-table sequential scans."""
    found = []
    big = {"events", "dead_letters", "notifications"}  # raw.*, streamflow.notifications
    for phase, plans in last["plans"].items():
        for label, plan in plans.items():
            before = first["plans"][phase].get(label, {}).get("buffers", 0)
            grew = plan["buffers"] > max(GREW * before, before + GREW_MIN_BUFFERS)
            scans = sorted(big & set(plan["seq_scans"]))
            if grew or scans:
                found.append({"phase": phase, "statement": label, "level": level,
                              "buffers_at_0": before, "buffers": plan["buffers"],
                              "ms_at_0": first["plans"][phase].get(label, {}).get("ms"),
                              "ms": plan["ms"], "seq_scans": scans, "plan": plan["plan"]})
    return found


def bench_history(st: Stack, levels=LEVELS) -> dict:
    history = History(st.database_url, max(levels), datetime.now(UTC))
    resources = {"postgres": TracingPostgres(database_url=st.database_url),
                 "kafka": KafkaResource(bootstrap_servers=st.bootstrap)}
    instance = dg.DagsterInstance.ephemeral()
    _log("warm-up run (imports, first Kafka producer) ...")
    one_run(st, "history-warmup", resources, instance, events=1_000)
    _traced()
    partition_counts = history.partition()
    _log(f"history: partitions per table: {partition_counts}")
    by_level = {}
    for level in levels:
        _log(f"history: growing to {level:,} rows ...")
        loaded = history.grow(level)
        by_level[level] = {"history": loaded, **measure(st, level, resources, instance)}
    first, last = by_level[levels[0]], by_level[levels[-1]]
    ratios = _ratios(first, last)
    return {
        "levels": list(levels),
        "partitions": partition_counts,
        "fresh_events_per_run": FRESH_EVENTS,
        "by_level": by_level,
        "ratios_at_max_to_0": ratios,
        "target_ratio": TARGET_RATIO,
        "within_target": {name: r <= TARGET_RATIO for name, r in ratios["seconds"].items()},
        "growing_statements": _growth(first, last, levels[-1]),
        "note": "History by COPY (the sink's decode and row shape), ~10% as many dead letters, "
                "marked processed (notifications, published windows, counters, watermarks), "
                "VACUUM ANALYZE + CHECKPOINT; it ends 2 h before the start. Each run: "
                f"{FRESH_EVENTS:,} fresh events produced to Kafka and landed by the real sink "
                "in-process, a sensor evaluation (RunRequest), one dg.materialize of the "
                "micro-batch assets in-process (timed whole). Checks invoked directly on a "
                "PostgresResource; sensor via build_sensor_context on an ephemeral instance "
                "(SkipReason: all processed). Timings are medians; fresh events add to "
                f"history ({RUNS * FRESH_EVENTS:,} per level, so level 0 ends with them) and "
                "stay in the checks' last hour: dlq_rate counts later levels' runs too "
                "(traffic, not history). "
                "Plans: EXPLAIN (ANALYZE, BUFFERS) of every statement sent by execute(), "
                "rolled back, with the last parameters it ran with.",
    }


def table(document: dict) -> str:
    """Wall time per level (a run in seconds, the rest in milliseconds), the ratio of the
    largest level to level 0, and the same ratio of pages touched."""
    levels, ratios = document["levels"], document["ratios_at_max_to_0"]
    at = [document["by_level"][n] for n in levels]
    rows = [("micro-batch run (s)", "run", "run", [x["run_seconds"] for x in at])]
    rows += [(f"check {name} (ms)", f"check:{name}", f"check:{name}",
              [x["check_seconds"][name] * 1000 for x in at]) for name in at[0]["check_seconds"]]
    rows += [("sensor, skip (ms)", "sensor_skip", "sensor",
              [x["sensor_skip_seconds"] * 1000 for x in at]),
             ("sensor, request (ms)", "sensor_request", "sensor",
              [x["sensor_request_seconds"] * 1000 for x in at])]
    lines = ["| | " + " | ".join(f"{n:,} rows" for n in levels) + " | ratio | pages ratio |",
             "|---" * (len(levels) + 3) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{v:,.2f}" for v in values)
              + f" | {ratios['seconds'][key]:.2f} | {ratios['pages'][pages]:.2f} |"
              for name, key, pages, values in rows]
    return "\n".join(lines)


def refresh_docs(document: dict, results: str) -> None:
    """The table of docs/BENCHMARKS.md's "Cost as history grows", from a full run."""
    from benchmarks.report import DOCS, replace_between

    env = document.get("environment", {})
    replace_between(DOCS / "BENCHMARKS.md", "history", (
        f"`{results}` on {env.get('cpus', '?')} cores, PostgreSQL {env.get('postgres', '?')}: "
        "medians; a run lands and processes 50,000 fresh events; pages = PostgreSQL buffers "
        "its statements touched (EXPLAIN ANALYZE), which other load on the machine does not "
        "blur.\n\n" + table(document)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="levels 0, 100k, 1M")
    args = parser.parse_args(argv)
    with isolated_stack() as st:
        document = {"quick": args.quick, "environment": environment(st),
                    **bench_history(st, QUICK_LEVELS if args.quick else LEVELS)}
    path = write_results("history", document)
    print(table(document))
    if not args.quick:
        refresh_docs(document, path.name)
    _log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
