"""A topic with fewer copies than the cluster asks for (issue 22), on the three-node cluster:
`topics create` refuses and `up` warns with the command that fixes it, and the command gives it
three copies, all in sync, then min.insync.replicas=2."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic
from typer.testing import CliRunner

from streamflow import replicas, topics
from streamflow.cli import app
from streamflow.errors import TopicMismatch
from streamflow.kafka_clients import admin_client, deliver, producer
from streamflow.settings import to_env


def _min_insync(admin, topic: str) -> str:
    (found,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    return found.result()["min.insync.replicas"].value


def test_a_topic_with_one_copy_is_reported_with_the_command_that_fixes_it(cluster, unique_name):
    """A pipeline-layout topic made with one copy (as on a single broker), 1,000 messages in
    it: reported by `topics create` and `up`, fixed by the command, its messages kept."""
    admin = admin_client(cluster.kafka)
    spec = topics.TopicSpec(unique_name, 3, 168 * topics.HOUR_MS)
    admin.create_topics([NewTopic(unique_name, 3, replication_factor=1, config={
        "retention.ms": str(spec.retention_ms), "min.insync.replicas": "1"})])[
        unique_name].result(30)
    sent = deliver(producer(cluster.kafka), unique_name,
                   ((None, f"{i}".encode(), None) for i in range(1_000)))
    assert sent == (0, [])

    drift = ("has 1 replica per partition and min.insync.replicas=1, expected 3 and 2: run "
             "`streamflow topics create --fix-replication`")
    with pytest.raises(TopicMismatch, match=f"topic {unique_name} {drift}"):
        topics.ensure_topics(admin, [spec])  # `topics create`
    (lenient,) = topics.ensure_topics(admin, [spec], strict=False)  # `up`
    assert lenient.outcome == "exists" and lenient.replication_drift.startswith(drift)
    assert drift in topics.mismatch_message([lenient])

    mover = replicas.Mover(cluster.kafka)
    try:
        (fixed,) = topics.ensure_topics(admin, [spec], fix_replication=mover)
    finally:
        mover.close()
    assert (fixed.replication_drift, fixed.replicated) == (
        "", "replication fixed: 3 replicas per partition, in sync, min.insync.replicas=2")
    partitions = admin.list_topics(unique_name, timeout=10).topics[unique_name].partitions
    assert {p.id: (sorted(p.replicas), sorted(p.isrs)) for p in partitions.values()} == {
        pid: ([1, 2, 3], [1, 2, 3]) for pid in range(3)}
    assert _min_insync(admin, unique_name) == "2"
    assert topics.ensure_topics(admin, [spec])[0].replication_drift == ""  # strict: passes
    assert topics.message_count(cluster.kafka, unique_name) == 1_000


def test_the_fix_command_leaves_topics_as_asked_alone(cluster):
    result = CliRunner().invoke(app, ["topics", "create", "--fix-replication"],
                                env=to_env(cluster.settings))
    assert result.exit_code == 0, result.output
    assert [line.split(":")[1].strip() for line in result.output.splitlines()] == [
        "exists"] * len(topics.PIPELINE_TOPICS)
