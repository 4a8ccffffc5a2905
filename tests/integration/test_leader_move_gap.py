"""A partition's leader lost while the sink reads a jump (issue 22): the log-start lookup
fails until a new leader is elected, and the sink asks again instead of recording the jump as
an offset_gap."""

from __future__ import annotations

import logging
import os
import signal

from streamflow import contract, kafka_clients, topics
from streamflow.infra import kafka_server, processes
from streamflow.kafka_clients import admin_client
from streamflow.producer.generator import EventGenerator
from streamflow.sink import worker as sink_worker
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.workers.runtime import StopFlag
from tests.conftest import TEST_PII_KEY, back_in_sync
from tests.integration.lanes import dead_letters, rows

TRANSACTION = 10  # events per transaction; its commit marker takes the offset after them


def _leader(cluster, topic: str) -> int:
    metadata = admin_client(cluster.kafka).list_topics(topic, timeout=10)
    return metadata.topics[topic].partitions[0].leader


def _kill(cluster, node_id: int) -> None:
    """SIGKILL a node: no controlled shutdown, so its partitions keep it as their leader until
    the controller fences it (broker.session.timeout.ms, 9 s)."""
    state = processes.read_state(cluster.settings.run_dir,
                                 kafka_server.node(cluster.settings, node_id).component)
    os.killpg(state.pid, signal.SIGKILL)


def test_a_leader_lost_while_the_sink_reads_a_jump_invents_no_gap(cluster, unique_name, engine,
                                                                 monkeypatch, caplog):
    """Two committed transactions: the first's commit marker is an offset the sink never sees
    (a jump of one, still in the log). The partition's leader is killed right after the sink
    fetched the jump: the log-start lookup fails until a new leader is elected. The sink asks
    again and lands every event, no offset_gap recorded."""
    topic = topics.create_topic(cluster.kafka, unique_name, 1, replication_factor=3,
                                config={"min.insync.replicas": "2"})
    dlq = topics.create_topic(cluster.kafka, unique_name + "-dlq", 1, replication_factor=3)
    writer = kafka_clients.producer(cluster.kafka, **{"transactional.id": unique_name})
    writer.init_transactions(30)
    events = EventGenerator(TEST_PII_KEY, users=50).batch(2 * TRANSACTION)
    for first in (0, TRANSACTION):
        writer.begin_transaction()
        for key, value in events[first:first + TRANSACTION]:
            writer.produce(topic, value, key, headers=contract.HEADERS)
        writer.commit_transaction(30)

    killed: list[int] = []
    fetch = sink_worker.Sink.next_messages

    def next_messages(sink):
        messages = fetch(sink)
        if not killed and any(m.offset() > TRANSACTION for m in messages if m.error() is None):
            killed.append(_leader(cluster, topic))
            _kill(cluster, killed[0])
        return messages

    monkeypatch.setattr(sink_worker.Sink, "next_messages", next_messages)
    caplog.set_level(logging.WARNING, logger="streamflow.sink")
    try:
        run_sink(SinkConfig(cluster.kafka, cluster.database_url, topic=topic,
                            group_id=f"g-{topic}", dlq_topic=dlq, stop_when_idle_s=3.0),
                 StopFlag())
    finally:
        back_in_sync(cluster)
    assert killed, "the sink never fetched past the transaction marker"
    assert [d["reason"] for d in dead_letters(engine, topic)] == []  # no offset_gap
    assert rows(engine, topic) == (2 * TRANSACTION, 2 * TRANSACTION, 2 * TRANSACTION)
    assert f"log start of {topic}[0] unknown" in caplog.text, \
        "the lookup never failed: the leader's loss did not reach it"
