"""The cluster's health from its replication, without Kafka: brokers up or down (an embedded
node that is stopped, an external broker that only the replicas still name), partitions under-
replicated, offline or refusing writes, and the state the live page and the check show."""

from __future__ import annotations

import json

from streamflow import topics
from streamflow.cluster import PartitionReplicas, Replication
from streamflow.cluster_health import (
    DEGRADED,
    DOWN,
    OK,
    EmbeddedNodes,
    NodeState,
    brokers,
    judge,
    view_document,
)

ADDRESSES = {1: "h:9001", 2: "h:9003", 3: "h:9005"}


def partition(topic: str, number: int, leader: int, isr: tuple[int, ...],
              replicas: tuple[int, ...] = (1, 2, 3)) -> PartitionReplicas:
    return PartitionReplicas(topic, number, leader, replicas, isr)


def replication(listed: tuple[int, ...], *partitions: PartitionReplicas,
                min_insync: dict[str, int] | None = None) -> Replication:
    return Replication(listed, partitions, {i: ADDRESSES[i] for i in listed}, min_insync or {})


def nodes(*running: bool, controller: int | None = 1) -> EmbeddedNodes:
    return EmbeddedNodes(tuple(NodeState(i, f"node:{i}", up) for i, up in enumerate(running, 1)),
                         controller)


IN_SYNC = (partition(topics.USER_EVENTS, 0, 1, (1, 2, 3)),
           partition(topics.USER_EVENTS, 1, 2, (2, 3, 1)))


def test_every_broker_up_and_every_partition_in_sync_is_ok():
    health = judge(replication((1, 2, 3), *IN_SYNC), nodes(True, True, True))
    assert health.state == OK and health.reasons() == [] and health.quorum
    assert [(b.id, b.address, b.up, b.controller) for b in health.brokers] == [
        (1, "h:9001", True, True), (2, "h:9003", True, False), (3, "h:9005", True, False)]
    assert health.summary("b:9092") == "3 of 3 brokers up at b:9092"


def test_a_stopped_embedded_node_is_down_not_absent():
    # Node 2's process is gone; the survivors' metadata may still list it for a moment.
    for listed in ((1, 3), (1, 2, 3)):
        found = brokers(replication(listed, *IN_SYNC), nodes(True, False, True))
        assert [(b.id, b.up) for b in found] == [(1, True), (2, False), (3, True)]
    # Not listed, not running: the configured address is shown.
    (_, two, _) = brokers(replication((1, 3)), nodes(True, False, True))
    assert two.address == "node:2"
    # Running but not in the metadata yet (starting): not up.
    assert not brokers(replication((1, 3)), nodes(True, True, True))[1].up


def test_an_external_broker_that_is_down_shows_through_the_replicas_naming_it():
    found = brokers(replication((1, 3), partition("t", 0, 1, (1, 3))))
    assert [(b.id, b.up, b.address) for b in found] == [(1, True, "h:9001"), (2, False, ""),
                                                        (3, True, "h:9005")]
    assert not any(b.controller for b in found)  # a KRaft metadata's controller is random


def test_the_controller_is_the_quorum_leader_while_it_is_up():
    assert [b.controller for b in brokers(replication((1, 2, 3)), nodes(True, True, True,
                                                                        controller=3))] == [
        False, False, True]
    assert not any(b.controller for b in brokers(replication((1, 2)), nodes(
        True, True, False, controller=3)))


def test_a_broker_down_with_partitions_under_replicated_is_degraded():
    health = judge(replication((1, 3), partition(topics.USER_EVENTS, 0, 1, (1, 3)),
                               partition(topics.USER_EVENTS, 1, 3, (3, 1)),
                               partition(topics.ANALYTICS, 0, 3, (3, 1, 2), (3, 1, 2)),
                               min_insync={topics.USER_EVENTS: 2}),
                   nodes(True, False, True))
    assert health.state == DEGRADED and health.quorum and health.down_brokers == [2]
    assert health.reasons() == ["broker 2 down",
                                "2 partitions under-replicated: user-events[0, 1]"]
    assert health.refusing_writes == []  # two in sync, two required


def test_a_broker_down_alone_or_a_partition_short_alone_is_degraded():
    assert judge(replication((1, 3)), nodes(True, False, True)).state == DEGRADED
    short = judge(replication((1, 2, 3), partition("t", 0, 1, (1, 2))))
    assert short.state == DEGRADED and short.reasons() == [
        "1 partition under-replicated: t[0]"]


def test_no_quorum_an_offline_partition_or_refused_writes_is_down():
    no_quorum = judge(replication((1,), partition("t", 0, 1, (1,))), nodes(True, False, False))
    assert no_quorum.state == DOWN and not no_quorum.quorum
    assert no_quorum.reasons()[0] == "no quorum: 1 of 3 brokers up"
    assert no_quorum.summary().startswith("1 of 3 brokers up; no quorum")
    # Two of four is not a majority either.
    assert not judge(replication((1, 2), partition("t", 0, 1, (1, 2), (1, 2, 3, 4)))).quorum

    offline = judge(replication((1, 3), partition("t", 0, -1, (2,), (2,)), *IN_SYNC))
    assert offline.state == DOWN and offline.offline[0].partition == 0
    assert "1 partition offline (no leader): t[0]" in offline.reasons()

    refusing = judge(replication((1, 2, 3), partition("t", 0, 1, (1,)), min_insync={"t": 2}))
    assert refusing.state == DOWN and [p.topic for p in refusing.refusing_writes] == ["t"]
    assert refusing.reasons()[0].startswith("1 partition refusing acks=all writes")
    # min.insync.replicas not known (its configuration did not answer): not judged refusing.
    assert judge(replication((1, 2, 3), partition("t", 0, 1, (1,)))).state == DEGRADED


def test_only_the_named_topics_are_judged_and_reasons_name_partitions_by_topic():
    many = [partition("big", i, 1, (1,)) for i in range(20)]
    short = [partition(topics.ANALYTICS, 2, 1, (1, 3)), partition(topics.ANALYTICS, 0, 1, (1,))]
    health = judge(replication((1, 2, 3), *IN_SYNC, *many, *short),
                   topic_names=[topics.USER_EVENTS])
    assert health.state == OK and len(health.partitions) == 2
    everything = judge(replication((1, 2, 3), *IN_SYNC, *many, *short))
    assert everything.reasons() == [
        "22 partitions under-replicated: analytics[0, 2], big (20 partitions)"]


def test_the_cluster_view_shows_the_pipelines_partitions_and_any_other_not_in_sync():
    document = view_document(replication(
        (1, 3), partition("__consumer_offsets", 0, 1, (1, 3)),
        partition("other", 0, 3, (3,), (3,)), partition(topics.ANALYTICS, 0, -1, (2,), (2,)),
        *IN_SYNC), nodes(True, False, True))
    assert json.loads(json.dumps(document)) == document
    assert document["state"] == DOWN and document["reasons"][0].startswith("1 partition offline")
    assert [b["up"] for b in document["brokers"]] == [True, False, True]
    assert [(p["topic"], p["partition"], p["leader"], p["state"])
            for p in document["partitions"]] == [
        (topics.USER_EVENTS, 0, 1, "in sync"), (topics.USER_EVENTS, 1, 2, "in sync"),
        (topics.ANALYTICS, 0, None, "offline"),
        ("__consumer_offsets", 0, 1, "under-replicated")]  # "other" is in sync: not listed
    assert (document["under_replicated"], document["offline"]) == (1, 1)


def test_streamflow_live_reads_the_embedded_nodes_from_the_settings(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from streamflow import cli
    from streamflow.live import server
    from streamflow.settings import load_settings, to_env

    started = []
    monkeypatch.setattr(server, "run_live", lambda config, *_: started.append(config))
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_KAFKA_BROKERS=3,
                             KAFKA_BOOTSTRAP_SERVERS=None, DATABASE_URL=None)
    for bootstrap in (None, "kafka.example:9092"):
        result = CliRunner().invoke(cli.app, ["live"], env={
            **to_env(settings), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": None})
        assert result.exit_code == 0, result.output
    embedded, external = started
    # Nothing runs in this home: every configured node is there, and down.
    assert [(n.node_id, n.running) for n in embedded.nodes().nodes] == [
        (1, False), (2, False), (3, False)]
    assert external.nodes is None  # an external cluster is known by its metadata alone
