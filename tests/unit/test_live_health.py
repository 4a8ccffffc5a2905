"""The live page's health panel and latency figure, computed without services: metrics parsed
as a worker serves them, quantiles as Prometheus computes them, each component's state."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from streamflow import cluster_health, metrics, supervisor
from streamflow.cluster import PartitionReplicas, Replication
from streamflow.cluster_health import EmbeddedNodes, NodeState
from streamflow.live import health
from streamflow.live.health import DEGRADED, DOWN, OK, STARTING, UNKNOWN, KafkaState, Worker
from streamflow.live.hub import subscription
from streamflow.settings import load_settings
from streamflow.sink.worker import LATENCY_SAMPLES_PER_BATCH, produced_at_ms


def latency_histogram(observations: list[float]) -> metrics.Samples:
    """What the sink serves after observing ``observations`` (its real buckets)."""
    registry = CollectorRegistry()
    histogram = Histogram("streamflow_sink_produce_to_row_seconds", "test", registry=registry,
                          buckets=metrics.PRODUCE_TO_ROW_BUCKETS)
    for value in observations:
        histogram.observe(value)
    return metrics.parse(generate_latest(registry).decode())


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does():
    # 100 observations: 90 in (0.05, 0.1], 10 in (0.5, 1]
    samples = latency_histogram([0.07] * 90 + [0.7] * 10)
    buckets = health.buckets(samples)
    assert buckets[-1] == (float("inf"), 100)
    assert health.quantile(0.5, buckets) == pytest.approx(0.05 + 0.05 * 50 / 90)
    assert health.quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 5 / 10)
    assert health.quantile(0.5, ()) is None
    assert health.quantile(0.5, health.buckets(latency_histogram([]))) is None
    # Beyond the highest bound: that bound (as histogram_quantile answers).
    assert health.quantile(0.95, health.buckets(latency_histogram([1000.0] * 3))) == 300


def test_the_latency_covers_the_last_window_and_restarts_with_the_sink():
    window = health.LatencyWindow(window_s=60)
    window.add(0, health.buckets(latency_histogram([5.0] * 10)))
    assert window.latency().samples == 10  # one scrape: all since the sink started
    window.add(30, health.buckets(latency_histogram([5.0] * 10 + [0.07] * 5)))
    window.add(70, health.buckets(latency_histogram([5.0] * 10 + [0.07] * 5 + [0.07] * 5)))
    latency = window.latency()  # 70 - 60 = 10: from the scrape at 0 (the last before 10)
    assert latency.samples == 10 and latency.p95_s < 0.1
    window.add(95, health.buckets(latency_histogram([5.0] * 10 + [0.07] * 10 + [0.3])))
    assert window.latency().samples == 6  # since the scrape at 30
    window.add(96, health.buckets(latency_histogram([0.2])))  # restarted: counts fell
    assert window.latency().samples == 1


def worker_samples(*, rate: float = 0, database: float | None = None,
                   lag: float | None = None) -> metrics.Samples:
    registry = CollectorRegistry()
    Gauge("streamflow_rate", "", ["worker"], registry=registry).labels("w").set(rate)
    Counter("streamflow_events_produced", "", registry=registry).inc(1234)
    if database is not None:
        Gauge("streamflow_database_available", "", registry=registry).set(database)
    if lag is not None:
        gauge = Gauge("streamflow_consumer_lag", "", ["topic", "partition"], registry=registry)
        gauge.labels("t", "0").set(lag)
        gauge.labels("t", "1").set(1)
    return metrics.parse(generate_latest(registry).decode())


def rows(document: dict) -> dict[str, dict]:
    return {row["name"]: row for row in document["components"]}


UP = KafkaState(True, "1 broker at b:9092 (PLAINTEXT)", 0.0)
RATES = {"user-events": 50.0, "analytics": 0.5, "notifications": 40.0,
         "dead-letter-topic": 0.5}


def test_every_component_reports_its_state_and_rate():
    workers = {
        health.PRODUCER: Worker(OK, worker_samples(rate=50)),
        health.SINK: Worker(OK, worker_samples(rate=49, database=1, lag=7),
                            {"streamflow_events_landed_total": 48.0}),
        **{name: Worker(OK) for name in health.DAGSTER},
    }
    document = health.document(health.Snapshot(UP, workers), RATES, assigned=True)
    by_name = rows(document)
    assert list(by_name) == ["Kafka", "PostgreSQL", "producer", "sink", "micro-batch (Dagster)"]
    assert {row["state"] for row in by_name.values()} == {OK}
    assert by_name["Kafka"]["rate"] == 91.0
    assert by_name["PostgreSQL"]["rate"] == 48.0
    assert by_name["producer"]["rate"] == 50 and "1,234 sent" in by_name["producer"]["detail"]
    assert by_name["sink"]["detail"] == "lag 8 messages" and document["sink_lag"] == 8
    assert by_name["micro-batch (Dagster)"]["rate"] == 40.5


def test_what_is_down_or_unknown_is_said():
    down = KafkaState(False, "no answer from b:9092 (PLAINTEXT)", 0.0)
    workers = {health.PRODUCER: Worker(DOWN), health.SINK: Worker(OK, worker_samples(database=0)),
               "dagster-daemon": Worker(OK), "dagster-code-server": Worker(STARTING)}
    by_name = rows(health.document(health.Snapshot(down, workers), RATES, assigned=True))
    assert by_name["Kafka"]["state"] == DOWN
    assert by_name["PostgreSQL"]["state"] == DOWN
    assert by_name["producer"] == {**by_name["producer"], "state": DOWN, "detail": "not running"}
    assert by_name["micro-batch (Dagster)"]["state"] == DEGRADED
    assert "dagster-code-server, dagster-webserver" in by_name["micro-batch (Dagster)"]["detail"]

    # Reachable but not assigned yet; no supervisor in the run directory: nothing guessed.
    by_name = rows(health.document(health.Snapshot(UP, None), RATES, assigned=False))
    assert by_name["Kafka"]["state"] == STARTING
    assert "waiting for partitions" in by_name["Kafka"]["detail"]
    assert {by_name[n]["state"] for n in by_name if n != "Kafka"} == {UNKNOWN}
    not_probed = health.Snapshot(KafkaState(None, "checking…", 0.0), None)
    assert rows(health.document(not_probed, RATES, assigned=False))["Kafka"]["state"] == UNKNOWN


def kafka_judged(listed: tuple[int, ...], isr: tuple[int, ...], leader: int = 1) -> KafkaState:
    """Kafka answering, its one partition replicated on nodes 1-3 and in sync on ``isr``,
    the nodes in ``listed`` running."""
    replication = Replication(listed, (PartitionReplicas("t", 0, leader, (1, 2, 3), isr),))
    nodes = EmbeddedNodes(tuple(NodeState(i, "", i in listed) for i in (1, 2, 3)), 1)
    judged = cluster_health.judge(replication, nodes)
    return KafkaState(True, judged.summary("b:9092"), 0.0, judged)


def test_the_kafka_row_is_amber_with_a_broker_down_and_red_without_a_quorum():
    def kafka_row(kafka: KafkaState, assigned: bool = True) -> dict:
        return rows(health.document(health.Snapshot(kafka, None), RATES,
                                    assigned=assigned))["Kafka"]

    assert kafka_row(kafka_judged((1, 2, 3), (1, 2, 3)))["state"] == OK
    amber = kafka_row(kafka_judged((1, 3), (1, 3)))
    assert amber["state"] == DEGRADED
    assert amber["detail"] == ("2 of 3 brokers up at b:9092; broker 2 down; "
                               "1 partition under-replicated: t[0]")
    # Degraded stays degraded while the live view waits for its partitions.
    assert kafka_row(kafka_judged((1, 3), (1, 3)), assigned=False)["state"] == DEGRADED
    red = kafka_row(kafka_judged((1,), (1,)))
    assert red["state"] == DOWN and "no quorum: 1 of 3 brokers up" in red["detail"]
    assert kafka_row(kafka_judged((1, 3), (2,), leader=-1))["state"] == DOWN  # offline


def test_the_worker_names_are_the_supervisors(tmp_path):
    names = {spec.name for spec in supervisor.worker_specs(load_settings(
        STREAMFLOW_HOME=str(tmp_path)))}
    assert {health.PRODUCER, health.SINK, *health.DAGSTER} <= names
    assert health.SUPERVISOR == supervisor.COMPONENT


def test_a_page_subscribes_to_known_channels_only():
    assert subscription('{"subscribe": "cluster"}') == ("cluster", True)
    assert subscription('{"unsubscribe": "cluster"}') == ("cluster", False)
    for junk in (None, "", "x", "[]", '{"subscribe": "secrets"}', '{"subscribe": ["cluster"]}',
                 '{"subscribe": "cluster", "pad": "' + "x" * 300 + '"}'):
        assert subscription(junk) is None


class Msg:
    def __init__(self, kind: int, ms: int) -> None:
        self._stamp = (kind, ms)

    def timestamp(self):
        return self._stamp


def test_the_sink_samples_each_batch_for_the_latency():
    now_ms = int(time.time() * 1000)
    small = [Msg(TIMESTAMP_CREATE_TIME, now_ms + i) for i in range(10)]
    assert produced_at_ms(small) == [now_ms + i for i in range(10)]  # all of a small batch
    full = [Msg(TIMESTAMP_CREATE_TIME, i) for i in range(1, 10_001)]
    sampled = produced_at_ms(full)
    assert LATENCY_SAMPLES_PER_BATCH // 2 < len(sampled) <= LATENCY_SAMPLES_PER_BATCH
    assert sampled[0] == 1 and sampled[-1] > 9_000  # spread over the whole batch
    assert produced_at_ms([Msg(TIMESTAMP_NOT_AVAILABLE, -1)]) == []
