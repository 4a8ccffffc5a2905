"""`make bench`'s cluster group, on a three-node cluster: what replication and more sinks cost
and buy on this 2-core box.

- producer events/s to a topic with 3 replicas and min.insync.replicas=2 (acks=all) against
  one replica, same events, same producer;
- sink events/s draining one backlog with 1, 2 and 3 sink processes in one group (ratio to one);
- the landing pause when a sink joins and when one leaves a group of two, with the classic
  protocol and with Kafka 4's consumer protocol (KIP-848): the longest gap between two
  landings of one partition after each change, against the steady gap before it;
- produce -> row p99 across a leader kill (the node leading the most partitions SIGKILLed
  mid-stream and started again), against the same stream without the kill.
"""

from __future__ import annotations

import os
import signal
import time

import psycopg

from benchmarks.backbone import consumed
from benchmarks.harness import BENCH_PII_KEY, Stack, percentile
from benchmarks.latency import VisibilityPoller
from streamflow import kafka_clients, topics
from streamflow.db.engine import libpq_url
from streamflow.infra import kafka_server
from streamflow.infra.processes import wait_until
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.workers.runtime import Progress, StopFlag

PROTOCOLS = ("classic", "consumer")
# The group protocol a sink uses (settings.py); each pause measurement sets it per process.
PROTOCOL_SETTING = "STREAMFLOW_KAFKA_GROUP_PROTOCOL"


def _topic(st: Stack, name: str, factor: int = 3) -> str:
    in_sync = topics.replication_for(factor)[1]
    return topics.create_topic(st.kafka, name, 3, replication_factor=factor,
                               config={"min.insync.replicas": str(in_sync)})


def _produce(st: Stack, topic: str, **config) -> object:
    return run_producer(ProducerConfig(st.kafka, topic=topic, **config), BENCH_PII_KEY.encode(),
                        StopFlag(), progress=Progress(f"producer {topic}"))


def producer_replication(st: Stack, events: int) -> dict:
    rates = {factor: _produce(st, _topic(st, f"bench-rf{factor}", factor), count=events,
                              seed=1).rate for factor in (1, 3)}
    return {"events": events, "rf1_events_per_s": round(rates[1]),
            "rf3_min_isr2_events_per_s": round(rates[3]),
            "ratio": round(rates[3] / rates[1], 3)}


def _clean(st: Stack) -> None:
    """An empty landing table between runs: a second run over the same events would take the
    sink's slower conflict path, and measure that instead."""
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        conn.execute("TRUNCATE raw.events, raw.dead_letters, raw.consumer_offsets")


def sinks_scaling(st: Stack, events: int, counts=(1, 2, 3)) -> dict:
    topic = _topic(st, "bench-cluster-backlog")
    _produce(st, topic, count=events, seed=2)
    rates = {}
    for count in counts:
        _clean(st)
        group = f"bench-scale-{count}"
        procs = [st.start("sink", "--topic", topic, "--group", group, "--instance-id",
                          f"{group}-{i}", "--metrics-port", "0", "--stop-when-idle", "5")
                 for i in range(count)]
        with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
            first = None
            while (landed := consumed(conn, group, topic)) < events:
                if landed and first is None:
                    first = (time.monotonic(), landed)
                if all(p.poll() is not None for p in procs):
                    raise RuntimeError("every sink exited before the backlog was landed")
                time.sleep(0.05)
            rates[count] = (landed - first[1]) / (time.monotonic() - first[0])
        for proc in procs:
            proc.wait(120)
    one = rates[counts[0]]
    return {"events": events,
            "runs": [{"sinks": c, "events_per_s": round(r), "ratio_to_one": round(r / one, 2)}
                     for c, r in rates.items()],
            "note": "one backlog of 3 partitions; 2 cores shared by 3 brokers, the sinks and "
                    "PostgreSQL: the sinks' decoding runs in parallel, PostgreSQL's COPY and "
                    "the ingest-sequence lock do not"}


def _commit_gaps(conn: psycopg.Connection, topic: str, start: float, end: float) -> list[tuple]:
    """(commit time, gap since the partition's previous commit) of the landing transactions of
    each partition of ``topic`` between ``start`` and ``end`` (epoch seconds): each
    transaction's rows share ingested_at. Per partition: the one that moves pauses while the
    others go on landing."""
    rows = conn.execute(
        "SELECT t, t - lag(t) OVER (PARTITION BY p ORDER BY t) FROM (SELECT DISTINCT "
        "kafka_partition AS p, extract(epoch FROM ingested_at)::float8 AS t FROM raw.events "
        "WHERE kafka_topic = %s) s WHERE t BETWEEN %s AND %s ORDER BY t",
        (topic, start, end)).fetchall()
    return [(t, gap) for t, gap in rows if gap is not None]


def rebalance_pause(st: Stack, protocol: str, rate: int = 2_000, settle_s: float = 15.0) -> dict:
    """Two sinks land a steady stream; a third joins, then one leaves (SIGTERM). The longest
    gap between two landings of one partition in the ``settle_s`` after each change (a new
    sink needs a few seconds to start and join), and the steady one before."""
    topic = group = _topic(st, f"bench-rebalance-{protocol}")
    env = {PROTOCOL_SETTING: protocol}

    def sink(i: int):
        return st.start("sink", "--topic", topic, "--group", group, "--instance-id",
                        f"{group}-{i}", "--metrics-port", "0", env=env)

    sinks = [sink(1), sink(2)]
    producer = st.start("produce", "--topic", topic, "--rate", str(rate), "--metrics-port", "0")
    moments = {}
    try:
        with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
            wait_until(lambda: consumed(conn, group, topic) > rate, timeout_s=120)
            time.sleep(settle_s)
            moments["steady"] = time.time()
            time.sleep(settle_s)
            moments["join"] = time.time()
            sinks.append(sink(3))
            time.sleep(settle_s)
            moments["leave"] = time.time()
            sinks[0].send_signal(signal.SIGTERM)
            time.sleep(settle_s)
            gaps = {what: _commit_gaps(conn, topic, at, at + settle_s)
                    for what, at in moments.items()}
    finally:
        for proc in (producer, *sinks):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
    longest = {what: round(max((g for _, g in found), default=0.0), 3)
               for what, found in gaps.items()}
    return {"protocol": protocol, "rate": rate, "steady_longest_gap_s": longest["steady"],
            "join_longest_gap_s": longest["join"], "leave_longest_gap_s": longest["leave"]}


def leader_kill_latency(st: Stack, rate: int = 2_000, seconds: float = 30.0) -> dict:
    """produce -> row (benchmarks.latency's measure) over a stream, and over the same stream
    during which the node leading the most partitions is SIGKILLed (at a third) and started
    again 5 s later."""
    return {"rate": rate, "seconds": seconds,
            "no_kill": _stream_latency(st, rate, seconds, kill=False),
            "leader_killed": _stream_latency(st, rate, seconds, kill=True)}


def _stream_latency(st: Stack, rate: int, seconds: float, *, kill: bool) -> dict:
    topic = group = _topic(st, f"bench-leader-{'kill' if kill else 'calm'}")
    sink = st.start("sink", "--topic", topic, "--group", group, "--metrics-port", "0")
    try:
        with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
            _produce(st, topic, count=100)  # warm-up: assigned and connected
            wait_until(lambda: consumed(conn, group, topic) >= 100, timeout_s=120)
            after = conn.execute("SELECT max(ingest_seq) FROM raw.events").fetchone()[0]
            poller = VisibilityPoller(st.database_url)
            if kill:
                _kill_leader_later(st, topic, seconds / 3)
            produced = _produce(st, topic, rate=rate, duration_s=seconds).produced
            wait_until(lambda: consumed(conn, group, topic) >= 100 + produced, timeout_s=300)
            time.sleep(0.05)
            poller.stop()
            rows = conn.execute(
                "SELECT ingest_seq, extract(epoch FROM occurred_at) FROM raw.events "
                "WHERE kafka_topic = %s AND ingest_seq > %s", (topic, after)).fetchall()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(60)
    latencies = sorted(poller.visible_at(seq) - float(at) for seq, at in rows)
    return {"events": len(rows), "p50_ms": round(1000 * percentile(latencies, 0.50), 1),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
            "max_ms": round(1000 * latencies[-1], 1)}


def _kill_leader_later(st: Stack, topic: str, after_s: float) -> None:
    import threading

    def kill() -> None:
        time.sleep(after_s)
        admin = kafka_clients.admin_client(st.kafka)
        leaders = [p.leader for p in admin.list_topics(topic, timeout=10).topics[topic]
                   .partitions.values()]
        victim = max(set(leaders), key=leaders.count)
        state = dict((n.node_id, s) for n, s in kafka_server.node_states(st.settings))[victim]
        os.kill(state.pid, signal.SIGKILL)
        time.sleep(5.0)
        kafka_server.start(st.settings, node_id=victim, echo=lambda _m: None)

    threading.Thread(target=kill, daemon=True).start()


def bench_cluster(st: Stack, events: int, *, quick: bool = False) -> dict:
    return {
        "brokers": st.settings.kafka_brokers,
        "producer": producer_replication(st, events),
        "sinks": sinks_scaling(st, events),
        "rebalance": [rebalance_pause(st, p, settle_s=8.0 if quick else 15.0)
                      for p in PROTOCOLS],
        "leader_kill": leader_kill_latency(st, seconds=15.0 if quick else 30.0),
    }
