"""A topic's replication checked against the rule and moved to it (streamflow/replicas.py),
the pure parts: what counts as drift and how it reads, the cluster's size with a node down,
where new copies go, and the order of the fix that keeps every write possible."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from streamflow import replicas, topics
from streamflow.errors import TopicMismatch
from streamflow.kafka_clients import partition_admin_config
from streamflow.kafka_connection import KafkaConnection
from streamflow.replicas import Brokers, PartitionReplicas, Target, TopicReplicas

THREE = Brokers(frozenset({1, 2, 3}), frozenset({1, 2, 3}))


def topic(name: str, layout: list[tuple[int, ...]], min_insync: int = 1,
          isr: list[tuple[int, ...]] | None = None) -> TopicReplicas:
    return TopicReplicas(name, tuple(
        PartitionReplicas(name, pid, replicas_[0], replicas_, (isr or layout)[pid])
        for pid, replicas_ in enumerate(layout)), min_insync)


def metadata(brokers: list[int], layouts: dict[str, list[tuple[int, ...]]],
             isr: dict[str, list[tuple[int, ...]]] | None = None):
    return SimpleNamespace(
        brokers={b: object() for b in brokers},
        topics={name: SimpleNamespace(partitions={
            pid: SimpleNamespace(id=pid, leader=r[0], replicas=list(r),
                                 isrs=list((isr or {}).get(name, layout)[pid]))
            for pid, r in enumerate(layout)}) for name, layout in layouts.items()})


def test_a_topic_as_asked_has_no_drift():
    assert replicas.drift(topic("t", [(1, 2, 3)] * 3, 2), Target(3, 2), THREE) is None


def test_one_copy_on_three_brokers_is_reported_with_the_command_that_fixes_it():
    found = replicas.drift(topic("t", [(1,), (2,), (3,)], 1), Target(3, 2), THREE)
    assert found == ("has 1 replica per partition and min.insync.replicas=1, expected 3 and 2: "
                     "run `streamflow topics create --fix-replication` (copies are made while "
                     "the topic is in use)")


def test_a_min_insync_above_the_copies_is_said_to_stop_every_write():
    # A topic made with one copy on a cluster whose brokers default to min.insync.replicas=2.
    found = replicas.drift(topic("t", [(1,), (2, 3)], 2), Target(3, 2), THREE)
    assert found.startswith("has 1-2 replicas per partition and min.insync.replicas=2, "
                            "expected 3 and 2 (no acks=all write to it can succeed now): run")


def test_more_copies_than_brokers_cannot_be_fixed_and_the_setting_is_named():
    one = Brokers(frozenset({1}), frozenset({1}))
    found = replicas.drift(topic("t", [(1,)]), Target(3, 2), one)
    assert found.endswith("but the cluster has 1 broker: add brokers, or set "
                          "STREAMFLOW_TOPIC_REPLICATION_FACTOR=1")
    assert "--fix-replication" not in found
    assert not replicas.fixable(Target(3, 2), one)


def test_topics_sharing_a_drift_are_named_with_its_fix_once():
    drift = replicas.drift(topic("a", [(1,)]), Target(3, 2), THREE)
    message = topics.mismatch_message([
        topics.TopicStatus("a", "exists", replication_drift=drift),
        topics.TopicStatus("b", "mismatch", "has 1 partition, expected 3: fix",
                           replication_drift=drift),
        topics.TopicStatus("c", "created")])
    assert message == (f"topics a, b each {drift}; topic b has 1 partition, expected 3: fix")


def test_a_node_down_still_counts_in_the_cluster_size():
    # Node 3 is down: the metadata lists 1 and 2, but partitions still name 3 as a replica.
    found = replicas.brokers(metadata([1, 2], {"__consumer_offsets": [(1, 2, 3), (3, 1, 2)]}))
    assert (found.up, found.known, found.down) == ({1, 2}, {1, 2, 3}, {3})
    assert topics.replication(len(found.known), None, None) == (3, 2)


def test_settings_override_the_cluster_size():
    assert topics.replication(3, 2, None) == (2, 1)
    assert topics.replication(1, None, None) == (1, 1)
    assert topics.replication(3, 3, 3) == (3, 3)


def test_new_copies_keep_the_leader_first_and_spread_over_the_brokers():
    plan = replicas.plan([topic("t", [(3,), (1,), (2,)])], 3, [1, 2, 3])
    assert plan == {("t", 0): [3, 1, 2], ("t", 1): [1, 2, 3], ("t", 2): [2, 3, 1]}
    # Five brokers: each new copy goes where the fewest are, so none holds more than 2 of 6.
    plan = replicas.plan([topic("t", [(1,), (2,)])], 3, [1, 2, 3, 4, 5])
    held = [b for copies in plan.values() for b in copies]
    assert max(held.count(b) for b in range(1, 6)) <= 2
    assert [copies[0] for copies in plan.values()] == [1, 2]


def test_removing_copies_never_removes_the_leader_and_leaves_right_sized_partitions():
    t = topic("t", [(1, 2, 3), (2, 3), (3, 1, 2)])
    assert replicas.plan([t], 2, [1, 2, 3]) == {("t", 0): [1, 2], ("t", 2): [3, 1]}


class FakeAdmin:
    """list_topics answers ``layouts`` (the copies in sync once a move is asked);
    incremental_alter_configs is recorded."""

    def __init__(self, calls: list, layouts: dict[str, list[tuple[int, ...]]]) -> None:
        self.calls, self.layouts = calls, layouts

    def list_topics(self, timeout):
        return metadata([1, 2, 3], self.layouts)

    def incremental_alter_configs(self, resources, request_timeout):
        done = Future()
        done.set_result(None)
        out = {}
        for r in resources:
            (entry,) = r.incremental_configs
            self.calls.append(("min.insync.replicas", r.name, entry.value))
            out[r] = done
        return out


class FakeMover:
    def __init__(self, calls: list, admin: FakeAdmin) -> None:
        self.calls, self.admin = calls, admin

    def move(self, targets, *, timeout_s):
        self.calls.append(("move", dict(targets)))
        for (name, pid), copies in targets.items():
            self.admin.layouts[name][pid] = tuple(copies)

    def moving(self, names, *, timeout_s):
        return set()


def test_the_fix_raises_min_insync_only_after_the_new_copies_are_in_sync():
    calls: list = []
    admin = FakeAdmin(calls, {"t": [(1,), (2,), (3,)]})
    done = replicas.fix(admin, FakeMover(calls, admin), [topic("t", [(1,), (2,), (3,)], 1)],
                        Target(3, 2), THREE, catch_up_s=1)
    assert calls == [("move", {("t", 0): [1, 2, 3], ("t", 1): [2, 3, 1], ("t", 2): [3, 1, 2]}),
                     ("min.insync.replicas", "t", "2")]
    assert done == {"t": "replication fixed: 3 replicas per partition, in sync, "
                         "min.insync.replicas=2"}


def test_the_fix_lowers_min_insync_before_it_removes_copies():
    calls: list = []
    admin = FakeAdmin(calls, {"t": [(1, 2, 3)]})
    replicas.fix(admin, FakeMover(calls, admin), [topic("t", [(1, 2, 3)], 2)], Target(1, 1),
                 THREE, catch_up_s=1)
    assert calls == [("min.insync.replicas", "t", "1"), ("move", {("t", 0): [1]})]


def test_copies_that_do_not_catch_up_are_reported_with_the_way_to_finish(monkeypatch):
    monkeypatch.setattr(replicas, "POLL_S", 0.01)
    calls: list = []
    admin = FakeAdmin(calls, {"t": [(1,)]})
    admin.list_topics = lambda timeout: metadata([1, 2, 3], {"t": [(1, 2, 3)]},
                                                 isr={"t": [(1,)]})
    with pytest.raises(TopicMismatch, match=r"t\[0\]\) still catching up after 0s: Kafka goes "
                       r"on copying; run `streamflow topics create --fix-replication` again"):
        replicas.fix(admin, FakeMover(calls, admin), [topic("t", [(1,)], 1)], Target(3, 2),
                     THREE, catch_up_s=0)
    assert ("min.insync.replicas", "t", "2") not in calls  # never raised before in sync


def test_the_fix_is_refused_while_a_broker_is_down():
    down = Brokers(frozenset({1, 2}), frozenset({1, 2, 3}))
    with pytest.raises(TopicMismatch, match=r"broker\(s\) 3 are down .* start them"):
        replicas.fix(None, None, [topic("t", [(1,)])], Target(3, 2), down)


def test_the_reassignment_client_gets_the_connection_s_own_security_settings():
    kafka = KafkaConnection("a:9092,b:9092", {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
        "socket.keepalive.enable": "true"})
    assert partition_admin_config(kafka) == {
        "bootstrap_servers": ["a:9092", "b:9092"], "client_id": "streamflow-replicas",
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem"}
