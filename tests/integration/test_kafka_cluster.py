"""The embedded three-node KRaft cluster (STREAMFLOW_KAFKA_BROKERS=3): every node up with one
controller, the pipeline's topics with three replicas and two in sync, `status --json` listing
each broker, one node lost without a lost write and started again with one command."""

from __future__ import annotations

import json
import os
import signal
import uuid

from confluent_kafka.admin import ConfigResource
from typer.testing import CliRunner

from streamflow import stack, topics
from streamflow.cli import app
from streamflow.infra import kafka_server
from streamflow.kafka_clients import admin_client, deliver, producer
from streamflow.settings import to_env
from tests.conftest import CLUSTER_BROKERS, wait_for


def _status(cluster) -> dict:
    """`status --json`'s Kafka part (it exits 1 while anything is unhealthy)."""
    result = CliRunner().invoke(app, ["status", "--json"], env=to_env(cluster.settings))
    document = json.loads(result.output)
    assert result.exit_code == (0 if document["healthy"] else 1), result.output
    return document["kafka"]


def test_every_node_is_up_and_the_pipeline_topics_are_replicated(cluster):
    kafka = _status(cluster)
    assert [b["node_id"] for b in kafka["brokers"]] == list(range(1, CLUSTER_BROKERS + 1))
    assert all(b["up"] and b["pid"] for b in kafka["brokers"])
    assert sum(b["controller"] for b in kafka["brokers"]) == 1
    assert kafka["under_replicated_partitions"] == 0 and kafka["offline_partitions"] == 0

    admin = admin_client(cluster.kafka)
    metadata = admin.list_topics(timeout=10).topics
    for name in topics.PIPELINE_TOPICS:
        assert all(len(p.replicas) == 3 for p in metadata[name].partitions.values()), name
    (found,) = admin.describe_configs([ConfigResource("topic", topics.USER_EVENTS)]).values()
    assert found.result()["min.insync.replicas"].value == "2"
    (node,) = admin.describe_configs([ConfigResource("broker", "1")]).values()
    internal = node.result()
    assert (internal["offsets.topic.replication.factor"].value,
            internal["transaction.state.log.min.isr"].value) == ("3", "2")


def test_a_node_lost_loses_no_write_and_comes_back_with_one_command(cluster):
    topic = topics.create_topic(cluster.kafka, f"t-{uuid.uuid4().hex[:12]}", 3,
                                replication_factor=3, config={"min.insync.replicas": "2"})
    try:
        assert kafka_server.stop(cluster.settings, node_id=2) == "stopped"
        kafka = _status(cluster)
        assert [b["up"] for b in kafka["brokers"]] == [True, False, True]
        wait_for(lambda: stack.kafka_cluster(cluster.settings).under_replicated, timeout_s=60,
                 message="the partitions node 2 held to show under-replicated")
        # acks=all with two of three in sync: every write is acknowledged, none dropped.
        remaining, errors = deliver(producer(cluster.kafka), topic,
                                    ((None, f"{i}".encode(), None) for i in range(1_000)),
                                    timeout_s=60)
        assert (remaining, errors) == (0, [])
    finally:
        result = CliRunner().invoke(app, ["kafka", "start", "--node", "2"],
                                    env=to_env(cluster.settings))
    assert result.exit_code == 0, result.output
    assert all(b["up"] for b in _status(cluster)["brokers"])
    wait_for(lambda: stack.kafka_cluster(cluster.settings).under_replicated == 0,
             timeout_s=120, message="node 2 to catch up (no under-replicated partition)")
    assert topics.message_count(cluster.kafka, topic) == 1_000


def test_two_nodes_lost_writes_wait_and_none_is_dropped(cluster):
    """Without a controller quorum (one node of three) a write needing two in-sync replicas
    cannot be acknowledged: it waits in the producer (message.timeout.ms=0, as the producer
    worker sets it), nothing fails or is dropped, and it lands once the nodes are back."""
    topic = topics.create_topic(cluster.kafka, f"t-{uuid.uuid4().hex[:12]}", 3,
                                replication_factor=3, config={"min.insync.replicas": "2"})
    states = {n.node_id: state for n, state in kafka_server.node_states(cluster.settings)}
    failed: list[str] = []
    sender = producer(cluster.kafka, **{"message.timeout.ms": 0})
    try:
        kafka_server.stop(cluster.settings, node_id=2)
        os.kill(states[3].pid, signal.SIGKILL)  # the last one cannot shut down in order
        seen = stack.kafka_cluster(cluster.settings)
        assert not seen.quorum and "no quorum: 1 of 3 brokers up" in seen.describe()
        for i in range(100):
            sender.produce(topic, str(i).encode(),
                           on_delivery=lambda err, _m: err and failed.append(str(err)))
        assert sender.flush(5) == 100 and failed == []  # waiting, not failing
    finally:
        kafka_server.start(cluster.settings, echo=lambda _m: None)
    assert sender.flush(60) == 0 and failed == []
    assert topics.message_count(cluster.kafka, topic) == 100
    wait_for(lambda: stack.kafka_cluster(cluster.settings).under_replicated == 0,
             timeout_s=120, message="every node back in sync")
