"""The Dagster check `replicated` on each pipeline topic, judged without Kafka: it passes with
every partition in sync, warns while one is under-replicated (writes still taken), errs while
one is offline or the cluster has no quorum, and names the partitions in its metadata."""

from __future__ import annotations

import dagster as dg

from assets.checks import REPLICATION_CHECKS, replication_result
from assets.lineage import topic_key
from streamflow import topics
from streamflow.cluster import PartitionReplicas, Replication
from streamflow.cluster_health import judge


def judged(listed: tuple[int, ...], *partitions: tuple[int, int, tuple[int, ...]]):
    """``partitions``: (number, leader, isr) of user-events, each replicated on nodes 1-3."""
    return judge(Replication(listed, tuple(
        PartitionReplicas(topics.USER_EVENTS, n, leader, (1, 2, 3), isr)
        for n, leader, isr in partitions)), topic_names=[topics.USER_EVENTS])


def test_every_partition_in_sync_passes():
    result = replication_result(judged((1, 2, 3), (0, 1, (1, 2, 3)), (1, 2, (2, 3, 1))))
    assert result.passed
    assert result.metadata["not_in_sync"].value == []
    assert result.metadata["partitions"].value == 2


def test_an_under_replicated_partition_fails_naming_it():
    result = replication_result(judged((1, 3), (0, 1, (1, 3)), (1, 3, (3, 1, 2))))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["not_in_sync"].value == [
        {"partition": "user-events[0]", "leader": 1, "replicas": [1, 2, 3], "isr": [1, 3]}]
    assert result.metadata["brokers_down"].value == "2"
    assert "user-events[0]" in result.metadata["reasons"].value


def test_an_offline_partition_or_no_quorum_is_an_error():
    offline = replication_result(judged((1, 3), (0, -1, (2,)), (1, 1, (1, 2, 3))))
    assert not offline.passed and offline.severity == dg.AssetCheckSeverity.ERROR
    assert offline.metadata["not_in_sync"].value[0]["leader"] is None
    no_quorum = replication_result(judged((1,), (0, 1, (1,))))
    assert not no_quorum.passed and no_quorum.severity == dg.AssetCheckSeverity.ERROR


def test_each_pipeline_topic_is_checked_by_the_checks_job():
    from streamflow_defs.definitions import defs

    wanted = {dg.AssetCheckKey(topic_key(name), "replicated") for name in topics.PIPELINE_TOPICS}
    assert {c.check_key for c in REPLICATION_CHECKS} == wanted
    job = defs.resolve_job_def("checks")
    assert wanted <= set(job.asset_layer.asset_graph.asset_check_keys)
