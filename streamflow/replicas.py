"""Where each partition's copies live, and a topic's replication checked against the rule
(``topics.replication``) and moved to it: the drift `topics create` and `up` report, and what
`topics create --fix-replication` does about it (docs/ARCHITECTURE.md "The embedded Kafka
cluster").

librdkafka has no partition reassignment: ``Mover`` sends it with kafka-python's admin client
(``kafka_clients.partition_admin``), for that alone; every other request here is
confluent-kafka's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from streamflow.errors import KafkaUnavailable, TopicMismatch
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import Settings

FIX_COMMAND = "streamflow topics create --fix-replication"
MIN_INSYNC = "min.insync.replicas"
# Seconds --fix-replication waits for new copies to catch up with their leader (each copies its
# partition's whole log). Kafka goes on copying after that; the command run again finishes the
# job (it raises min.insync.replicas once every copy is in sync).
CATCH_UP_TIMEOUT_S = 600.0
# Seconds between two looks at the copies catching up.
POLL_S = 0.5


@dataclass(frozen=True)
class PartitionReplicas:
    """Where one partition lives: its leader (-1: none, the partition is offline), its
    replicas (the preferred leader first) and those in sync with the leader."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)

    @property
    def offline(self) -> bool:
        return self.leader < 0


def partition_replicas(metadata, names: Iterable[str] | None = None) -> list[PartitionReplicas]:
    """Every partition of ``names`` (None: every topic) in a ``list_topics`` answer, by topic
    and partition."""
    wanted = None if names is None else set(names)
    return [PartitionReplicas(name, p.id, p.leader, tuple(p.replicas), tuple(p.isrs))
            for name, topic in sorted(metadata.topics.items())
            if wanted is None or name in wanted
            for p in sorted(topic.partitions.values(), key=lambda p: p.id)]


@dataclass(frozen=True)
class Brokers:
    up: frozenset[int]     # listed in the cluster's metadata
    known: frozenset[int]  # those, and any a partition's replicas name (a node down included)

    @property
    def down(self) -> frozenset[int]:
        return self.known - self.up


def brokers(metadata) -> Brokers:
    """The cluster's brokers from a ``list_topics`` answer (of every topic: internal ones name
    every node). A node that is down is still part of the cluster's size: a check made while
    it is away must not ask for fewer copies."""
    up = frozenset(metadata.brokers)
    named = {r for p in partition_replicas(metadata) for r in p.replicas}
    return Brokers(up, up | frozenset(named))


class Target(NamedTuple):
    """The replication a topic should have (``topics.replication``)."""

    factor: int
    in_sync: int  # min.insync.replicas


@dataclass(frozen=True)
class TopicReplicas:
    name: str
    partitions: tuple[PartitionReplicas, ...]
    min_insync: int  # the topic's min.insync.replicas (its own, or the brokers' default)

    def factors(self) -> set[int]:
        return {len(p.replicas) for p in self.partitions}


def read(admin: AdminClient, names: Sequence[str], *, timeout_s: float) -> list[TopicReplicas]:
    """The copies and min.insync.replicas of each of ``names`` that exists."""
    if not names:
        return []
    metadata = admin.list_topics(timeout=timeout_s)
    present = [n for n in names if n in metadata.topics]
    by_topic: dict[str, list[PartitionReplicas]] = {}
    for p in partition_replicas(metadata, present):
        by_topic.setdefault(p.topic, []).append(p)
    configs = admin.describe_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present],
        request_timeout=timeout_s)
    min_insync = {resource.name: int(future.result(timeout=timeout_s)[MIN_INSYNC].value)
                  for resource, future in configs.items()}
    return [TopicReplicas(n, tuple(by_topic.get(n, ())), min_insync[n]) for n in present]


def drift(have: TopicReplicas, want: Target, cluster: Brokers) -> str | None:
    """What differs from ``want`` and the fix, in one sentence (None: as asked). The same
    drift reads the same for every topic, so a report names the fix once."""
    factors = have.factors()
    if factors <= {want.factor} and have.min_insync == want.in_sync:
        return None
    low, high = min(factors, default=0), max(factors, default=0)
    copies = f"{low}" if low == high else f"{low}-{high}"
    found = (f"has {copies} replica{'s' * (high != 1)} per partition and {MIN_INSYNC}="
             f"{have.min_insync}, expected {want.factor} and {want.in_sync}")
    if have.min_insync > low:
        found += " (no acks=all write to it can succeed now)"
    if want.factor > len(cluster.known):
        setting = Settings.model_fields["topic_replication_factor"].alias
        return (f"{found}, but the cluster has {len(cluster.known)} broker"
                f"{'s' * (len(cluster.known) != 1)}: add brokers, or set "
                f"{setting}={len(cluster.known)}")
    return f"{found}: run `{FIX_COMMAND}` (copies are made while the topic is in use)"


def fixable(want: Target, cluster: Brokers) -> bool:
    return want.factor <= len(cluster.known)


def plan(topics: Sequence[TopicReplicas], factor: int,
         up: Iterable[int]) -> dict[tuple[str, int], list[int]]:
    """The new replica list of every partition of ``topics`` with another count than
    ``factor``. A copy that stays keeps its place (the preferred leader stays first); new ones
    go to the brokers holding the fewest of these topics' copies, listed in turn after the
    leader; a copy removed is the last listed that is not the leader."""
    brokers = sorted(up)
    load = Counter(r for t in topics for p in t.partitions for r in p.replicas)
    targets: dict[tuple[str, int], list[int]] = {}
    for topic in topics:
        for p in topic.partitions:
            replicas = list(p.replicas)
            if len(replicas) == factor:
                continue
            if len(replicas) > factor:
                removable = [r for r in reversed(replicas) if r != p.leader]
                for r in removable[:len(replicas) - factor]:
                    replicas.remove(r)
                    load[r] -= 1
            else:
                # The brokers after the leader, in turn: a failed leader's partitions then
                # move to different brokers.
                def turn(b: int, first: int = replicas[0]) -> int:
                    return (b - first) % (brokers[-1] + 1)

                free = sorted((b for b in brokers if b not in replicas),
                              key=lambda b: (load[b], turn(b)))
                for b in sorted(free[:factor - len(replicas)], key=turn):
                    replicas.append(b)
                    load[b] += 1
            targets[(p.topic, p.partition)] = replicas
    return targets


class Mover:
    """Kafka's partition reassignment (AlterPartitionReassignments and
    ListPartitionReassignments, KIP-455), which librdkafka lacks: kafka-python's admin client,
    connected on first use."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self._client = None

    def _admin(self):
        if self._client is None:
            from kafka.errors import KafkaError as ClientError

            from streamflow.kafka_clients import partition_admin

            try:
                self._client = partition_admin(self.kafka)
            except ClientError as exc:
                raise KafkaUnavailable(f"Kafka at {self.kafka.describe()} did not answer the "
                                       f"reassignment client: {exc}") from exc
        return self._client

    @contextmanager
    def _answers(self, doing: str) -> Iterator[None]:
        """kafka-python's errors as one line each, like every StreamFlow error."""
        from kafka.errors import KafkaError as ClientError

        try:
            yield
        except ClientError as exc:
            raise TopicMismatch(f"Kafka at {self.kafka.describe()} refused {doing}: "
                                f"{exc!r}") from exc

    def move(self, targets: Mapping[tuple[str, int], Sequence[int]], *,
             timeout_s: float) -> None:
        """Ask the controller to give each partition ``targets``' replicas; raises
        ``TopicMismatch`` naming each partition it refused."""
        from kafka import TopicPartition

        with self._answers("the partition reassignment"):
            answers = self._admin().alter_partition_reassignments(
                {TopicPartition(t, p): list(r) for (t, p), r in targets.items()},
                timeout_ms=int(timeout_s * 1000))
        taken = {(tp.topic, tp.partition) for tp, error in answers.items() if error is None}
        refused = [f"{t}[{p}] ({answers.get(TopicPartition(t, p), 'no answer')})"
                   for t, p in sorted(set(targets) - taken)]
        if refused:
            raise TopicMismatch(f"Kafka did not take the new replicas of {', '.join(refused)}")

    def moving(self, names: Iterable[str], *, timeout_s: float) -> set[tuple[str, int]]:
        """The partitions of ``names`` whose reassignment is still under way."""
        wanted = set(names)
        with self._answers("to list the reassignments under way"):
            ongoing = self._admin().list_partition_reassignments(
                timeout_ms=int(timeout_s * 1000))
        return {(tp.topic, tp.partition) for tp in ongoing if tp.topic in wanted}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def fix(admin: AdminClient, mover: Mover, drifted: Sequence[TopicReplicas], want: Target,
        cluster: Brokers, *, timeout_s: float = 30.0,
        catch_up_s: float = CATCH_UP_TIMEOUT_S) -> dict[str, str]:
    """Bring ``drifted`` topics to ``want``; what was done, by topic.

    Writes stay possible throughout (docs/ARCHITECTURE.md): min.insync.replicas is lowered
    before copies are removed and raised only once every copy is in sync. Refused while a
    broker is down (a copy placed there, or kept there, could not catch up)."""
    if not drifted:
        return {}
    names = [t.name for t in drifted]
    if cluster.down:
        raise TopicMismatch(
            f"cannot fix the replication of {', '.join(names)} while broker(s) "
            f"{', '.join(map(str, sorted(cluster.down)))} are down (their copies could not "
            f"catch up): start them (`streamflow kafka start`), then run `{FIX_COMMAND}` again")
    _set_min_insync(admin, [t.name for t in drifted if t.min_insync > want.in_sync],
                    want.in_sync, timeout_s)
    targets = plan(drifted, want.factor, cluster.up)
    if targets:
        mover.move(targets, timeout_s=timeout_s)
    _wait_in_sync(admin, mover, names, want.factor, timeout_s=timeout_s, catch_up_s=catch_up_s)
    _set_min_insync(admin, [t.name for t in drifted if t.min_insync < want.in_sync],
                    want.in_sync, timeout_s)
    return {name: f"replication fixed: {want.factor} replicas per partition, in sync, "
                  f"{MIN_INSYNC}={want.in_sync}" for name in names}


def _set_min_insync(admin: AdminClient, names: Sequence[str], value: int,
                    timeout_s: float) -> None:
    if not names:
        return
    entry = ConfigEntry(MIN_INSYNC, str(value), incremental_operation=AlterConfigOpType.SET)
    futures = admin.incremental_alter_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, n, incremental_configs=[entry])
         for n in names], request_timeout=timeout_s)
    for resource, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise TopicMismatch(f"could not set {MIN_INSYNC}={value} on topic "
                                f"{resource.name}: {exc}") from exc


def _wait_in_sync(admin: AdminClient, mover: Mover, names: Sequence[str], factor: int, *,
                  timeout_s: float, catch_up_s: float) -> None:
    """Until no partition of ``names`` is being moved and each has ``factor`` copies, all in
    sync; ``TopicMismatch`` after ``catch_up_s``."""
    deadline = time.monotonic() + catch_up_s
    while True:
        moving = mover.moving(names, timeout_s=timeout_s)
        behind = [f"{p.topic}[{p.partition}]"
                  for p in partition_replicas(admin.list_topics(timeout=timeout_s), names)
                  if (p.topic, p.partition) in moving or len(p.replicas) != factor
                  or set(p.isr) != set(p.replicas)]
        if not behind:
            return
        if time.monotonic() > deadline:
            raise TopicMismatch(
                f"{len(behind)} partition(s) ({', '.join(behind[:5])}) still catching up after "
                f"{catch_up_s:.0f}s: Kafka goes on copying; run `{FIX_COMMAND}` again to "
                f"finish (it sets {MIN_INSYNC} once every copy is in sync)")
        time.sleep(POLL_S)
