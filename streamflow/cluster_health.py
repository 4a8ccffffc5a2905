"""How healthy the Kafka cluster is, judged from its replication (cluster.Replication): each
broker up or down, each partition under-replicated (fewer replicas in sync than assigned),
offline (no leader) or refusing acks=all writes (fewer in sync than its min.insync.replicas),
and one state for all of it:

- ok: every broker up, every partition fully in sync;
- degraded: a broker down or partitions under-replicated, every write still taken;
- down: no quorum (half the brokers or more down), a partition offline or refusing writes
  (or, said by the caller, no answer at all).

The live view's health panel and Cluster view and the Dagster check `replicated` judge alike
(docs/ARCHITECTURE.md, "The cluster's health"). Pure, but for `embedded_nodes`, which reads
the embedded cluster's run files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from streamflow import topics
from streamflow.cluster import PartitionReplicas, Replication
from streamflow.settings import Settings

# States, worst last; the live page shows them as they are (live/health.py: green, amber, red).
OK, DEGRADED, DOWN = "ok", "degraded", "down"
# Partitions of one topic named one by one in a reason; more are counted (a reason is one
# line of the health panel; the Cluster view and the check's metadata list each partition).
NAMED_PER_TOPIC = 6


class NodeState(NamedTuple):
    node_id: int
    address: str
    running: bool  # its process is alive


class EmbeddedNodes(NamedTuple):
    """The embedded cluster as its own files say: every configured node, running or not, and
    the quorum's leader (a KRaft cluster's metadata names a random broker as controller)."""

    nodes: tuple[NodeState, ...]
    controller: int | None


def embedded_nodes(settings: Settings) -> EmbeddedNodes:
    from streamflow.infra import kafka_server

    return EmbeddedNodes(tuple(NodeState(n.node_id, n.address, state is not None)
                               for n, state in kafka_server.node_states(settings)),
                         kafka_server.quorum_leader(settings))


# What the live view calls to learn the embedded nodes (None: an external cluster).
NodesReader = Callable[[], EmbeddedNodes]


@dataclass(frozen=True)
class Broker:
    id: int
    address: str  # "" where not known: a broker an external cluster no longer lists
    up: bool
    controller: bool


def brokers(replication: Replication, nodes: EmbeddedNodes | None = None
            ) -> tuple[Broker, ...]:
    """Every broker known, by id: the embedded nodes (up: running and listed), those the
    metadata lists, and those a partition names as a replica while the metadata does not list
    them (how an external cluster's broker that is down shows: it is simply absent).

    A node whose process is gone is down even while the metadata still lists it: a quorum
    that is lost cannot fence it, so the survivors' metadata keeps it."""
    listed = set(replication.brokers)
    running = {n.node_id: n for n in nodes.nodes} if nodes else {}
    named = {r for p in replication.partitions for r in p.replicas}
    controller = nodes.controller if nodes else None
    found = []
    for broker in sorted(listed | named | running.keys()):
        node = running.get(broker)
        up = broker in listed and (node is None or node.running)
        address = replication.addresses.get(broker) or (node.address if node else "")
        found.append(Broker(broker, address, up, up and broker == controller))
    return tuple(found)


def _topic_rank(name: str) -> tuple[int, str]:
    """The pipeline's topics first (in their order), then the others by name."""
    pipeline = topics.PIPELINE_TOPICS
    return (pipeline.index(name) if name in pipeline else len(pipeline), name)


def named(partitions: Iterable[PartitionReplicas]) -> str:
    """``user-events[0, 2], __consumer_offsets (10 partitions)``: by topic, the pipeline's
    first; a topic with more than NAMED_PER_TOPIC is counted, not listed."""
    by_topic: dict[str, list[int]] = {}
    for p in partitions:
        by_topic.setdefault(p.topic, []).append(p.partition)
    return ", ".join(
        f"{name}[{', '.join(map(str, sorted(numbers)))}]" if len(numbers) <= NAMED_PER_TOPIC
        else f"{name} ({len(numbers)} partitions)"
        for name, numbers in sorted(by_topic.items(), key=lambda item: _topic_rank(item[0])))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


@dataclass(frozen=True)
class ClusterHealth:
    brokers: tuple[Broker, ...]
    judged: Replication  # the partitions judged (those of the topics asked about)

    @property
    def partitions(self) -> tuple[PartitionReplicas, ...]:
        return self.judged.partitions

    @property
    def down_brokers(self) -> list[int]:
        return [b.id for b in self.brokers if not b.up]

    @property
    def quorum(self) -> bool:
        """More than half the brokers known are up. The embedded nodes are each a controller,
        so this is their quorum; an external cluster's controllers are not visible to a
        client, and a majority of its brokers stands in for them."""
        return 2 * sum(b.up for b in self.brokers) > len(self.brokers)

    @property
    def under_replicated(self) -> list[PartitionReplicas]:
        return self.judged.under_replicated

    @property
    def offline(self) -> list[PartitionReplicas]:
        return self.judged.offline

    @property
    def refusing_writes(self) -> list[PartitionReplicas]:
        """Led, but with fewer replicas in sync than the topic's min.insync.replicas: the
        leader refuses acks=all writes (NOT_ENOUGH_REPLICAS), so the producer waits."""
        return [p for p in self.partitions if not p.offline
                and len(p.isr) < self.judged.min_insync.get(p.topic, 0)]

    @property
    def state(self) -> str:
        if not self.quorum or self.offline or self.refusing_writes:
            return DOWN
        return DEGRADED if self.down_brokers or self.under_replicated else OK

    def reasons(self) -> list[str]:
        """Why the state is not ok, worst first (empty when ok)."""
        up, known = sum(b.up for b in self.brokers), len(self.brokers)
        down = ", ".join(str(b) for b in self.down_brokers)
        found = []
        if not self.quorum:
            found.append(f"no quorum: {up} of {known} brokers up")
        if offline := self.offline:
            found.append(f"{_plural(len(offline), 'partition')} offline (no leader): "
                         f"{named(offline)}")
        if refusing := self.refusing_writes:
            found.append(f"{_plural(len(refusing), 'partition')} refusing acks=all writes "
                         f"(fewer in sync than min.insync.replicas): {named(refusing)}")
        if self.quorum and down:
            found.append(f"broker{'s' * (len(self.down_brokers) != 1)} {down} down")
        if short := self.under_replicated:
            found.append(f"{_plural(len(short), 'partition')} under-replicated: {named(short)}")
        return found

    def summary(self, at: str = "") -> str:
        """``2 of 3 brokers up at <where>; broker 2 down; ...``: the count, then the reasons."""
        up = sum(b.up for b in self.brokers)
        where = f" at {at}" if at else ""
        return "; ".join([f"{up} of {_plural(len(self.brokers), 'broker')} up{where}",
                          *self.reasons()])


def judge(replication: Replication, nodes: EmbeddedNodes | None = None,
          topic_names: Iterable[str] | None = None) -> ClusterHealth:
    """The cluster's health, its partitions those of ``topic_names`` (None: every topic,
    Kafka's internal ones too: a consumer group needs __consumer_offsets)."""
    wanted = None if topic_names is None else set(topic_names)
    return ClusterHealth(brokers(replication, nodes), replace(
        replication, partitions=tuple(p for p in replication.partitions
                                      if wanted is None or p.topic in wanted)))


def partition_state(p: PartitionReplicas) -> str:
    return "offline" if p.offline else "under-replicated" if p.under_replicated else "in sync"


def view_document(replication: Replication, nodes: EmbeddedNodes | None = None
                  ) -> dict[str, Any]:
    """The Cluster view's replication: the state and its reasons, every broker, and each
    partition of the pipeline's topics (in their order) and any other not fully in sync."""
    health = judge(replication, nodes)
    shown = sorted((p for p in replication.partitions
                    if p.topic in topics.PIPELINE_TOPICS or p.under_replicated or p.offline),
                   key=lambda p: (_topic_rank(p.topic), p.partition))
    return {
        "state": health.state, "reasons": health.reasons(),
        "brokers": [{"id": b.id, "address": b.address, "up": b.up, "controller": b.controller}
                    for b in health.brokers],
        "partitions": [{"topic": p.topic, "partition": p.partition,
                        "leader": None if p.offline else p.leader,
                        "replicas": list(p.replicas), "isr": list(p.isr),
                        "state": partition_state(p)} for p in shown],
        "under_replicated": len(health.under_replicated), "offline": len(health.offline),
    }
