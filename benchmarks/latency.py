"""Produce -> row latency at fixed rates, next to the broker's own produce -> consume latency.

A row counts as visible when it is committed: the ingest sequence is commit-ordered (the sink
serialises its allocation), so a poller that reads ``max(ingest_seq)`` every 5 ms knows when
each row became visible (to within half a period). Latency = that moment - the event's
``occurred_at`` (set by the producer as it sends). The limit it is compared with is Kafka's
EndToEndLatency tool on the same broker (one message at a time, acks=all): the floor any
consumer of this broker sees.
"""

from __future__ import annotations

import bisect
import re
import threading
import time

import psycopg

from benchmarks.backbone import consumed
from benchmarks.harness import BENCH_PII_KEY, Stack, percentile, run
from streamflow import topics
from streamflow.db.engine import libpq_url
from streamflow.infra import kafka_server
from streamflow.infra.processes import wait_until
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.workers.runtime import Progress, StopFlag

# The poller's period bounds the measurement's resolution: a row became visible between two
# samples. 5 ms costs the database ~200 small queries/s; the midpoint of the two samples
# removes the bias of counting it at the later one (up to 20 ms at the old 20 ms period).
POLL_S = 0.005


class VisibilityPoller:
    """Samples (time, max committed ingest_seq) on a thread."""

    def __init__(self, database_url: str) -> None:
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(database_url,), daemon=True)
        self._thread.start()

    def _run(self, database_url: str) -> None:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            while not self._stop.is_set():
                seq = conn.execute("SELECT coalesce(max(ingest_seq), 0) FROM raw.events"
                                   ).fetchone()[0]
                self.samples.append((seq, time.time()))
                time.sleep(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._seqs = [s for s, _ in self.samples]  # ascending: the sequence only grows

    def visible_at(self, seq: int) -> float:
        """The midpoint of the two samples between which ``seq`` became visible."""
        i = bisect.bisect_left(self._seqs, seq)
        return (self.samples[max(i - 1, 0)][1] + self.samples[i][1]) / 2


def _at_rate(st: Stack, rate: int, seconds: float) -> dict:
    topic = group = topics.create_topic(st.kafka, f"bench-latency-{rate}")
    sink = st.start("sink", "--topic", topic, "--group", group, "--metrics-port", "0")
    key = BENCH_PII_KEY.encode()
    try:
        with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
            # Warm-up: the sink has its partitions and a connection before measuring.
            run_producer(ProducerConfig(st.kafka, topic=topic, count=100), key, StopFlag(),
                         progress=Progress("warm-up"))
            if not wait_until(lambda: consumed(conn, group, topic) >= 100, timeout_s=120):
                raise RuntimeError(f"the sink landed no warm-up events (alive: "
                                   f"{sink.poll() is None})")
            after = conn.execute("SELECT max(ingest_seq) FROM raw.events").fetchone()[0]
            poller = VisibilityPoller(st.database_url)
            stats = run_producer(ProducerConfig(st.kafka, topic=topic, rate=rate,
                                                duration_s=seconds), key, StopFlag(),
                                 progress=Progress(f"producer {rate}/s"))
            deadline = time.monotonic() + 120
            while (consumed(conn, group, topic) < 100 + stats.produced
                   and time.monotonic() < deadline):
                time.sleep(0.1)
            time.sleep(3 * POLL_S)
            poller.stop()
            rows = conn.execute(
                "SELECT ingest_seq, extract(epoch FROM occurred_at) FROM raw.events "
                "WHERE kafka_topic = %s AND ingest_seq > %s", (topic, after)).fetchall()
    finally:
        sink.terminate()
        sink.wait(60)
    latencies = sorted(poller.visible_at(seq) - float(at) for seq, at in rows)
    return {
        "rate": rate, "events": len(rows), "achieved_rate": round(stats.rate),
        "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
        "p95_ms": round(1000 * percentile(latencies, 0.95), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
    }


def broker_end_to_end(st: Stack, messages: int = 2000, size: int = 300) -> dict:
    """Kafka's EndToEndLatency: produce one message (acks=all), consume it, repeat."""
    topic = topics.create_topic(st.kafka, "bench-e2e", partitions=1)
    out = run(kafka_server.tool_command(
        st.settings, "org.apache.kafka.tools.EndToEndLatency", st.bootstrap, topic,
        str(messages), "all", str(size))).stdout
    return parse_end_to_end(out, messages)


def parse_end_to_end(out: str, messages: int) -> dict:
    """The EndToEndLatency tool's summary lines as numbers."""
    percentiles = re.search(r"50th = ([\d.]+), 99th = ([\d.]+)", out)
    p50, average = float(percentiles[1]), float(re.search(r"Avg latency: ([\d.]+) ms", out)[1])
    # The tool prints percentiles in whole milliseconds, truncated: a broker faster than 1 ms
    # reads p50 = 0 (a run divided by it). Then its average, printed to 0.1 µs, is the floor.
    return {"p50_ms": p50, "p99_ms": float(percentiles[2]), "avg_ms": average,
            "floor_ms": p50 or average, "floor_basis": "p50" if p50 else "average",
            "messages": messages}


def bench_latency(st: Stack, rates=(1_000, 5_000, 20_000), seconds: float = 20.0) -> dict:
    floor = broker_end_to_end(st)
    runs = [_at_rate(st, rate, seconds) for rate in rates]
    for r in runs:
        r["p50_ratio_to_broker"] = round(r["p50_ms"] / floor["floor_ms"], 1)
    return {"broker_end_to_end": floor, "rates": runs, "seconds_per_rate": seconds,
            "visibility_poll_ms": POLL_S * 1000}
