"""A write the cluster refuses with NOT_ENOUGH_REPLICAS (fewer copies in sync than
min.insync.replicas, a node lost; issue 22) is waited out by the producer worker, never dropped:
every event lands once when the node is back, none reported failed."""

from __future__ import annotations

import threading
import time

from confluent_kafka import KafkaError

from streamflow import topics
from streamflow.infra import kafka_server
from streamflow.kafka_clients import producer
from streamflow.producer.worker import FLUSH_TIMEOUT_S, ProducerConfig, ProducerStats, run_producer
from streamflow.workers.runtime import StopFlag
from tests.conftest import TEST_PII_KEY, back_in_sync, wait_for

EVENTS = 300


def _refusal(cluster, topic: str) -> int:
    """What the cluster answers a write that may not be retried: its error code."""
    codes: list[int] = []
    probe = producer(cluster.kafka, **{"enable.idempotence": False, "retries": 0,
                                       "message.timeout.ms": 15_000})
    probe.produce(topic, b"probe", on_delivery=lambda err, _m: codes.append(
        err.code() if err else 0))
    probe.flush(30)
    return codes[0]


def test_a_write_refused_for_too_few_replicas_in_sync_is_waited_out_never_dropped(
        cluster, unique_name):
    """Three copies, all three must hold a write: with one node stopped, the cluster answers
    NOT_ENOUGH_REPLICAS. The producer worker keeps every event it took until the node is back;
    each then lands once, none reported failed."""
    topic = topics.create_topic(cluster.kafka, unique_name, 3, replication_factor=3,
                                config={"min.insync.replicas": "3"})
    stats = ProducerStats()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            run_producer(ProducerConfig(cluster.kafka, topic=topic, count=EVENTS),
                         TEST_PII_KEY, StopFlag(), stats=stats)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    worker = threading.Thread(target=produce, name="producer", daemon=True)
    try:
        assert kafka_server.stop(cluster.settings, node_id=3) == "stopped"
        wait_for(lambda: _refusal(cluster, topic) == KafkaError.NOT_ENOUGH_REPLICAS,
                 timeout_s=60, message="the cluster to refuse writes: NOT_ENOUGH_REPLICAS")
        worker.start()
        wait_for(lambda: stats.produced == EVENTS, timeout_s=60,
                 message="the producer to take every event")
        time.sleep(3.0)  # the refusals go on meanwhile
        assert topics.message_count(cluster.kafka, topic) == 0
        assert stats.failed == 0 and worker.is_alive()
    finally:
        back_in_sync(cluster)
    worker.join(FLUSH_TIMEOUT_S + 30)
    assert not worker.is_alive(), "the producer did not finish once the node was back"
    if errors:
        raise errors[0]
    assert (stats.produced, stats.delivered, stats.failed) == (EVENTS, EVENTS, 0)
    assert topics.message_count(cluster.kafka, topic) == EVENTS  # each once
