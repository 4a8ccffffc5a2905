"""The Dagster check `replicated` on the three-node cluster: it passes with every node up,
fails naming the under-replicated partitions while a node is stopped, and passes again once
the node is started and has caught up."""

from __future__ import annotations

import dagster as dg

from assets.checks import REPLICATION_CHECKS
from assets.lineage import topic_key
from resources import KafkaResource
from streamflow import cluster as kafka_cluster
from streamflow import topics
from streamflow.infra import kafka_server
from tests.conftest import wait_for

STOPPED = 2  # the node this test stops (and starts again)


def _results(cluster) -> dict[str, dg.AssetCheckResult]:
    """Each pipeline topic's check, evaluated now on the cluster."""
    resource = KafkaResource(bootstrap_servers=cluster.bootstrap)
    by_key = {c.check_key.asset_key: c for c in REPLICATION_CHECKS}
    return {name: by_key[topic_key(name)](resource) for name in topics.PIPELINE_TOPICS}


def _all_pass(cluster) -> bool:
    return all(result.passed for result in _results(cluster).values())


def test_the_check_fails_while_a_node_is_down_and_passes_once_it_caught_up(cluster):
    wait_for(lambda: _all_pass(cluster), timeout_s=120,
             message="every partition of the pipeline's topics in sync before the test")
    assert kafka_server.stop(cluster.settings, node_id=STOPPED) == "stopped"
    try:
        def failing():
            results = _results(cluster)
            return results if not any(r.passed for r in results.values()) else None

        results = wait_for(failing, timeout_s=60,
                           message=f"every pipeline topic's check failing with node {STOPPED} "
                                   "down")
        events = results[topics.USER_EVENTS]
        assert events.severity == dg.AssetCheckSeverity.WARN  # degraded: writes still taken
        listed = events.metadata["not_in_sync"].value
        # Every partition has a replica on each of the three nodes: all lost node 2's.
        assert sorted(p["partition"] for p in listed) == [
            f"{topics.USER_EVENTS}[{i}]" for i in range(cluster.settings.user_events_partitions)]
        assert all(STOPPED in p["replicas"] and STOPPED not in p["isr"] and len(p["isr"]) == 2
                   for p in listed)
        assert events.metadata["brokers_down"].value == str(STOPPED)
        # min.insync.replicas is asked for the topics that are short: 2 of 3, still met.
        assert kafka_cluster.replication(cluster.kafka).min_insync[topics.USER_EVENTS] == 2
    finally:
        kafka_server.start(cluster.settings, node_id=STOPPED)
    wait_for(lambda: _all_pass(cluster), timeout_s=120,
             message=f"node {STOPPED} caught up: every check passing again")
