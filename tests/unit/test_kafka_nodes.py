"""The embedded cluster's layout, without starting it: each node's ports, directories and
configuration; replication by cluster size; a home formatted for another size refused."""

from __future__ import annotations

import json

import pytest

from streamflow.errors import BrokerStartFailed, SettingsError
from streamflow.infra import kafka_server
from streamflow.settings import load_settings
from streamflow.topics import replication_for


def _settings(tmp_path, **env):
    return load_settings(STREAMFLOW_HOME=str(tmp_path), KAFKA_BOOTSTRAP_SERVERS=None,
                         DATABASE_URL=None, **env)


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_one_node_keeps_the_single_broker_layout(tmp_path):
    (only,) = kafka_server.nodes(_settings(tmp_path))
    assert (only.node_id, only.port, only.controller_port) == (1, 9092, 9093)
    assert only.data == tmp_path / "kafka" / "data" and only.component == "kafka"
    props = _properties(kafka_server.server_properties(_settings(tmp_path)))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert (props["offsets.topic.replication.factor"], props["min.insync.replicas"]) == ("1", "1")


def test_three_nodes_each_with_its_ports_dir_and_the_whole_quorum(tmp_path):
    settings = _settings(tmp_path, STREAMFLOW_KAFKA_BROKERS=3)
    cluster = kafka_server.nodes(settings)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster] == [
        (1, 9092, 9093), (2, 9094, 9095), (3, 9096, 9097)]
    assert len({n.data for n in cluster}) == 3 and cluster[2].component == "kafka-3"
    assert settings.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
    assert settings.embedded_kafka_heap_mb == 384
    props = _properties(kafka_server.server_properties(settings, cluster[1]))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095"
    assert props["log.dirs"] == str(tmp_path / "kafka" / "node-2" / "data")
    for name, value in (("offsets.topic.replication.factor", "3"),
                        ("transaction.state.log.min.isr", "2"),
                        ("default.replication.factor", "3"), ("min.insync.replicas", "2"),
                        ("broker.session.timeout.ms", "4000")):  # failover in ~4 s, not 9
        assert props[name] == value, name


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)),
                                                   (5, (3, 2))])
def test_replication_follows_the_cluster_size(brokers, expected):
    assert replication_for(brokers) == expected


@pytest.mark.parametrize("env", [
    {"STREAMFLOW_KAFKA_BROKERS": 3, "STREAMFLOW_KAFKA_PORT": 65534},      # past 65535
    {"STREAMFLOW_KAFKA_BROKERS": 3, "STREAMFLOW_KAFKA_CONTROLLER_PORT": 9094},  # node 2's
    {"STREAMFLOW_TOPIC_REPLICATION_FACTOR": 3},                           # 1 embedded broker
    {"STREAMFLOW_TOPIC_REPLICATION_FACTOR": 2, "STREAMFLOW_TOPIC_MIN_INSYNC_REPLICAS": 3,
     "STREAMFLOW_KAFKA_BROKERS": 3},
])
def test_impossible_cluster_settings_are_refused_at_start(tmp_path, env):
    with pytest.raises(SettingsError, match="STREAMFLOW_"):
        _settings(tmp_path, **env)


def test_a_home_formatted_for_one_node_is_not_started_as_three(tmp_path):
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "cluster.json").write_text(json.dumps({"brokers": 1}))
    settings = _settings(tmp_path, STREAMFLOW_KAFKA_BROKERS=3)
    with pytest.raises(BrokerStartFailed, match="formatted for 1 node.*STREAMFLOW_KAFKA_BROKERS=3"):
        kafka_server.prepare(settings)


def test_the_quorum_leader_is_the_newest_epoch_any_node_recorded(tmp_path):
    settings = _settings(tmp_path, STREAMFLOW_KAFKA_BROKERS=3)
    assert kafka_server.quorum_leader(settings) is None
    for n, (leader, epoch) in zip(kafka_server.nodes(settings), [(1, 3), (2, 5), (1, 3)],
                                  strict=True):
        state = n.data / "__cluster_metadata-0" / "quorum-state"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch}))
    assert kafka_server.quorum_leader(settings) == 2


def test_status_says_when_the_controller_quorum_is_lost():
    from streamflow.cluster import PartitionReplicas, Replication
    from streamflow.cluster_health import EmbeddedNodes, NodeState, judge
    from streamflow.stack import KafkaCluster

    def status(*running: bool) -> KafkaCluster:
        nodes = EmbeddedNodes(tuple(NodeState(i, f"127.0.0.1:{9090 + 2 * i}", alive)
                                    for i, alive in enumerate(running, 1)), 1)
        replication = Replication((1, 2, 3), (PartitionReplicas("user-events", 0, 1, (1, 2, 3),
                                                                (1,)),))
        pids = {i: 100 + i for i, alive in enumerate(running, 1) if alive}
        return KafkaCluster(judge(replication, nodes), pids, None)

    one_down = status(True, False, True)
    assert one_down.quorum and [b.controller for b in one_down.brokers] == [True, False, False]
    assert [b.pid for b in one_down.brokers] == [101, None, 103]
    lost = status(True, False, False)
    assert not lost.quorum and "no quorum: 1 of 3 brokers up" in lost.describe()
