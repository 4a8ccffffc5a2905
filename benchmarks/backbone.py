"""Producer and sink throughput next to the broker's and PostgreSQL's own limits.

- producer events/s vs Kafka's ProducerPerformance (same broker, record size, producer config);
- sink events/s draining a backlog vs a raw COPY of the same rows into the same table shape,
  and vs the reference design's sink (one JSON parse and one INSERT per message);
- peak RSS of the producer and the sink over a 1M-event backlog; synchronous_commit on vs off.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from benchmarks.harness import BENCH_PII_KEY, RssSampler, Stack, run
from streamflow import kafka_clients, topics
from streamflow.db.engine import libpq_url
from streamflow.db.tables import LANDING_COLUMNS
from streamflow.dlq import headers_json
from streamflow.infra import kafka_server
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.sink.decode import to_row
from streamflow.topics import UNKNOWN_TOPIC_ID
from streamflow.workers.runtime import Progress, StopFlag


def bench_producer(st: Stack, events: int) -> dict:
    topic = topics.create_topic(st.kafka, "bench-events")
    stats = run_producer(ProducerConfig(st.kafka, topic=topic, count=events, seed=1),
                         BENCH_PII_KEY.encode(), StopFlag(), progress=Progress("producer"))
    record_bytes = _mean_record_size(st, topic)
    perf = _producer_performance(st, events, record_bytes)
    return {
        "events": events,
        "record_bytes": record_bytes,
        "streamflow_events_per_s": round(stats.rate),
        "kafka_producer_performance_events_per_s": round(perf),
        "ratio": round(stats.rate / perf, 3),
        "target_events_per_s": 100_000,
        "note": "ProducerPerformance with the same acks=all, idempotence, lz4, linger.ms=20, "
                "batch.size=1000000; its payload is random text, so compression differs.",
    }


def _mean_record_size(st: Stack, topic: str) -> int:
    consumer = kafka_clients.consumer(st.kafka, "bench-size-probe")
    consumer.subscribe([topic])
    sizes = []
    while len(sizes) < 1000:
        sizes += [len(m.value()) for m in consumer.consume(1000, 1.0) if m.error() is None]
    consumer.close()
    return round(sum(sizes) / len(sizes))


def _producer_performance(st: Stack, events: int, record_bytes: int) -> float:
    topic = topics.create_topic(st.kafka, "bench-perf")
    out = run(kafka_server.tool_command(
        st.settings, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
        "--num-records", str(events), "--record-size", str(record_bytes),
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={st.bootstrap}",
        "acks=all", "enable.idempotence=true", "compression.type=lz4", "linger.ms=20",
        "batch.size=1000000", heap_mb=512))
    summary = [line for line in out.stdout.splitlines() if "records sent" in line][-1]
    return float(re.search(r"([\d.]+) records/sec", summary).group(1))


def consumed(conn: psycopg.Connection, group: str, topic: str) -> int:
    """Messages of ``topic`` the sink group has landed: its offsets stored with the rows.
    (A count(*) of raw.events would scan millions of rows beside the sink being timed.)"""
    return conn.execute("SELECT coalesce(sum(next_offset), 0)::bigint FROM raw.consumer_offsets "
                        "WHERE group_id = %s AND topic = %s", (group, topic)).fetchone()[0]


def time_drain(proc: subprocess.Popen, landed: Callable[[], int], events: int, *,
               launched: float, what: str, timeout_s: float | None = None) -> dict:
    """Poll ``landed()`` (events of the backlog in PostgreSQL so far) until all ``events``
    are: events/s from the first row to the last, and seconds from ``launched`` (when ``proc``
    was started) to the last row. A rate needs two readings: ``events_per_s`` is None when
    the first row seen came with the last (one batch held the whole backlog)."""
    first = None
    while (count := landed()) < events:
        now = time.monotonic()
        if count and first is None:
            first = (now, count)
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        if timeout_s is not None and now - launched > timeout_s:
            raise TimeoutError(f"{what}: {count:,} of {events:,} events in PostgreSQL after "
                               f"{timeout_s:.0f} s")
        time.sleep(0.05)
    last = (time.monotonic(), count)
    rate = (last[1] - first[1]) / (last[0] - first[0]) if first else None
    return {"events": events, "events_per_s": round(rate) if rate else None,
            "seconds_from_start": round(last[0] - launched, 3)}


def drain_with_sink(st: Stack, topic: str, events: int, *, group: str,
                    extra: list[str] = ()) -> dict:
    """Run `streamflow sink` on a backlog of ``events``; time first row to last row (its
    events/s), and from the start of the process to the last row (``seconds_from_start``)."""
    launched = time.monotonic()
    proc = st.start("sink", "--topic", topic, "--group", group, "--metrics-port", "0",
                    "--stop-when-idle", "3", *extra)
    rss = RssSampler(proc.pid)
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        drained = time_drain(proc, lambda: consumed(conn, group, topic), events,
                             launched=launched, what="sink")
    proc.wait(60)
    return drained | {"peak_rss_mb": round(rss.stop() / 2**20, 1)}


def like_landed(conn: psycopg.Connection, name: str, topic: str) -> None:
    """(Re)create raw.<name> shaped like the raw.events partition ``topic``'s rows landed in,
    its indexes included: raw.events itself is partitioned, and its unique index on event_id
    is each partition's own (streamflow.db.partitions), so a table ``LIKE raw.events`` would
    lack the index every landed row updates."""
    schema, partition = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
        "c.relnamespace WHERE c.oid = (SELECT tableoid FROM raw.events WHERE kafka_topic = %s "
        "LIMIT 1)", (topic,)).fetchone()
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("raw", name)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
        sql.Identifier("raw", name), sql.Identifier(schema, partition)))


def raw_copy(st: Stack, topic: str) -> dict:
    """COPY the rows the sink landed into an empty table shaped like the raw.events partition
    they landed in (``like_landed``)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, LANDING_COLUMNS))
    with psycopg.connect(libpq_url(st.database_url)) as conn:
        buffer = io.BytesIO()
        with conn.cursor().copy(
                sql.SQL("COPY (SELECT {} FROM raw.events WHERE kafka_topic = %s) TO STDOUT"
                        ).format(cols), (topic,)) as copy:
            for chunk in copy:
                buffer.write(chunk)
        like_landed(conn, "bench_copy", topic)
        conn.execute("SET synchronous_commit = off")
        conn.commit()
        data = buffer.getvalue()
        rows = data.count(b"\n")
        started = time.perf_counter()
        with conn.cursor().copy(
                sql.SQL("COPY raw.bench_copy ({}) FROM STDIN").format(cols)) as copy:
            view = memoryview(data)
            for i in range(0, len(data), 1 << 20):
                copy.write(view[i:i + (1 << 20)])
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE raw.bench_copy")
        conn.commit()
    return {"rows": rows, "rows_per_s": round(rows / elapsed)}


def bench_sink(st: Stack, events: int, *, compare_sync_commit: int) -> dict:
    topic = "bench-events"  # filled by bench_producer
    drained = drain_with_sink(st, topic, events, group="bench-sink")
    limit = raw_copy(st, topic)
    reference = reference_sink(st, topic, min(events, 20_000))
    result = {
        **drained,
        "raw_copy_rows_per_s": limit["rows_per_s"],
        "ratio_to_raw_copy": round(drained["events_per_s"] / limit["rows_per_s"], 3),
        "reference_design_events_per_s": reference["events_per_s"],
        "reference_design_events": reference["events"],
        "ratio_to_reference_design": round(drained["events_per_s"]
                                           / reference["events_per_s"], 1),
        "target_events_per_s": 50_000,
        "target_peak_rss_mb": 300,
    }
    if compare_sync_commit:
        for mode, flag in (("async", "--async-commit"), ("sync", "--synchronous-commit")):
            name = topics.create_topic(st.kafka, f"bench-commit-{mode}")
            run_producer(ProducerConfig(st.kafka, topic=name, count=compare_sync_commit),
                         BENCH_PII_KEY.encode(), StopFlag(), progress=Progress("producer"))
            result[f"synchronous_commit_{'off' if mode == 'async' else 'on'}_events_per_s"] = (
                drain_with_sink(st, name, compare_sync_commit, group=f"bench-{mode}",
                                extra=[flag])["events_per_s"])
    return result


def reference_sink(st: Stack, topic: str, events: int) -> dict:
    """The Node.js reference pipeline's sink, in Python: for each message one JSON parse and
    one INSERT, committed on its own (node-postgres ``pool.query`` per message), with Kafka
    auto-commit. The same rows and table shape as the StreamFlow sink."""
    cols = sql.SQL(", ").join(map(sql.Identifier, LANDING_COLUMNS))
    insert = sql.SQL("INSERT INTO raw.bench_reference ({}) VALUES ({}) "
                     "ON CONFLICT (event_id) DO NOTHING").format(
                         cols, sql.SQL(", ").join(sql.Placeholder() * len(LANDING_COLUMNS)))
    consumer = kafka_clients.consumer(st.kafka, "bench-reference",
                                      **{"enable.auto.commit": True})
    consumer.subscribe([topic])
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        like_landed(conn, "bench_reference", topic)  # the sink landed ``topic`` before
        done, started = 0, None
        while done < events:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None or done >= events:
                    continue
                started = started or time.perf_counter()
                event = json.loads(msg.value())
                conn.execute(insert, to_row(event, msg.value().decode(), msg.key(),
                                            headers_json(msg.headers()), msg.topic(),
                                            UNKNOWN_TOPIC_ID, msg.partition(), msg.offset()))
                done += 1
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE raw.bench_reference")
    consumer.close()
    return {"events": done, "events_per_s": round(done / elapsed)}


def producer_peak_rss(st: Stack, events: int) -> dict:
    """`streamflow produce --max-rate` of ``events`` as its own process, RSS sampled."""
    topic = topics.create_topic(st.kafka, "bench-producer-rss")
    proc = st.start("produce", "--topic", topic, "--count", str(events), "--max-rate",
                    "--seed", "3", "--metrics-port", "0")
    rss = RssSampler(proc.pid)
    if proc.wait(1800) != 0:
        raise RuntimeError(f"producer exited with {proc.returncode}")
    return {"events": events, "peak_rss_mb": round(rss.stop() / 2**20, 1)}
