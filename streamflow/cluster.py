"""What the Kafka cluster holds, as data: brokers, topics with their offsets, consumer groups
with their lag, and the newest messages of a topic. Used by the CLI (`topics list`, `groups`,
`tail`) and the live page's Cluster view; rendering is theirs, nothing here prints.

Reads only: no client here commits an offset or joins a group. Metadata and offsets come from
an admin client and a probe consumer that never subscribes; `tail` assigns partitions
explicitly under a random group id that never commits.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource

from streamflow import topics
from streamflow.errors import KafkaUnavailable, TopicMissing
from streamflow.kafka_clients import admin_client, consumer
from streamflow.kafka_connection import KafkaConnection
from streamflow.replicas import MIN_INSYNC, PartitionReplicas, partition_replicas

# The probe consumer's group id: it only asks for watermarks, so the group never exists.
PROBE_GROUP = "streamflow-cluster-probe"
# Prefix of `tail`'s random group ids (never committed, so never listed as a group).
TAIL_GROUP_PREFIX = "streamflow-tail-"
# Most messages one consume() call returns while tailing: one call per batch, not per message
# (librdkafka's prefetch, queued.max.messages.kbytes, bounds what is held meanwhile).
TAIL_BATCH = 500
# Seconds one consume() call waits: how soon Ctrl-C (or a `stop`) is noticed when idle.
TAIL_POLL_S = 0.5


class PartitionId(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True)
class BrokerInfo:
    id: int
    host: str
    port: int
    controller: bool  # the broker the cluster names as its controller


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group committed an offset on or has assigned to a member."""

    topic: str
    partition: int
    committed: int | None  # None: nothing committed yet
    end: int | None        # None: the topic is gone (deleted since the commit)
    owner: str | None = None  # the member's client id and host holding it, if assigned

    @property
    def lag(self) -> int | None:
        """Messages after the committed offset; None when either side is not known. Never
        negative (a topic created again under the name has smaller offsets)."""
        return lag(self.committed, self.end)


def lag(committed: int | None, end: int | None) -> int | None:
    if committed is None or end is None:
        return None
    return max(end - committed, 0)


@dataclass(frozen=True)
class GroupMember:
    member_id: str
    client_id: str
    host: str
    instance_id: str | None  # static membership (group.instance.id), if set
    assignment: tuple[PartitionId, ...]


@dataclass(frozen=True)
class GroupInfo:
    group_id: str
    state: str  # stable, empty, preparing_rebalancing, completing_rebalancing, dead, unknown
    members: tuple[GroupMember, ...]
    partitions: tuple[PartitionLag, ...]  # by topic, then partition

    @property
    def member_count(self) -> int:
        return len(self.members)

    @property
    def total_lag(self) -> int:
        """Sum of the known per-partition lags."""
        return sum(p.lag or 0 for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id, "state": self.state, "member_count": self.member_count,
            "members": [{"member_id": m.member_id, "client_id": m.client_id, "host": m.host,
                         "instance_id": m.instance_id,
                         "assignment": [p._asdict() for p in m.assignment]}
                        for m in self.members],
            "partitions": [{"topic": p.topic, "partition": p.partition,
                            "committed": p.committed, "end": p.end, "lag": p.lag,
                            "owner": p.owner} for p in self.partitions],
            "total_lag": self.total_lag,
        }


def topic_dict(info: topics.TopicInfo) -> dict[str, Any]:
    """A topic's JSON-safe document (`topics list --json`, the overview)."""
    return {"name": info.name, "pipeline": info.name in topics.PIPELINE_TOPICS,
            "partitions": info.partitions, "retention_ms": info.retention_ms,
            "end_offsets": list(info.end_offsets), "messages": info.messages}


@dataclass(frozen=True)
class ClusterOverview:
    cluster_id: str | None
    # The metadata's controller id. A KRaft cluster names a random live broker there (its
    # controllers are not reachable by clients): the quorum's leader is known to the embedded
    # cluster only (infra/kafka_server.quorum_leader).
    controller_id: int | None
    brokers: tuple[BrokerInfo, ...]
    topics: tuple[topics.TopicInfo, ...]  # the pipeline's first, then by name; no internal
    groups: tuple[GroupInfo, ...]  # the sink's first, then by id
    replication: Replication | None = None  # from the same metadata (not in as_dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id, "controller_id": self.controller_id,
            "brokers": [{"id": b.id, "host": b.host, "port": b.port,
                         "controller": b.controller} for b in self.brokers],
            "topics": [topic_dict(t) for t in self.topics],
            "groups": [g.as_dict() for g in self.groups],
        }


@dataclass(frozen=True)
class Replication:
    """Every partition's replicas (internal topics too: a consumer group needs
    __consumer_offsets) and the brokers the metadata lists."""

    brokers: tuple[int, ...]
    partitions: tuple[PartitionReplicas, ...]
    addresses: Mapping[int, str] = field(default_factory=dict)  # listed broker -> host:port
    # min.insync.replicas of each topic with a partition under-replicated (the others take
    # acks=all writes whatever it is); a topic whose configuration did not answer is absent.
    min_insync: Mapping[str, int] = field(default_factory=dict)

    @property
    def under_replicated(self) -> list[PartitionReplicas]:
        return [p for p in self.partitions if p.under_replicated]

    @property
    def offline(self) -> list[PartitionReplicas]:
        return [p for p in self.partitions if p.offline]


def replication(kafka: KafkaConnection, *, timeout_s: float = 5.0) -> Replication:
    """The cluster's replicas as its metadata says; ``KafkaUnavailable`` if it does not
    answer within ``timeout_s``."""
    with _answers(kafka):
        return read_replication(admin_client(kafka), timeout_s=timeout_s)


def read_replication(admin: AdminClient, *, timeout_s: float) -> Replication:
    """``replication`` through a client the caller keeps (the live view's health probe asks
    every second); raises ``KafkaException`` when the cluster does not answer."""
    return _replication(admin, admin.list_topics(timeout=timeout_s), timeout_s)


def _replication(admin: AdminClient, metadata: ClusterMetadata, timeout_s: float) -> Replication:
    partitions = tuple(partition_replicas(metadata))
    short = sorted({p.topic for p in partitions if p.under_replicated})
    return Replication(tuple(sorted(metadata.brokers)), partitions,
                       {b.id: f"{b.host}:{b.port}" for b in metadata.brokers.values()},
                       _min_insync(admin, short, timeout_s) if short else {})


def _min_insync(admin: AdminClient, names: list[str], timeout_s: float) -> dict[str, int]:
    """Each topic's min.insync.replicas (its own or the broker default); a topic whose
    configuration does not answer is left out rather than failing the whole reading."""
    asked = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, name)
                                    for name in names], request_timeout=timeout_s)
    found = {}
    for resource, future in asked.items():
        try:
            found[resource.name] = int(future.result(timeout_s)[MIN_INSYNC].value)
        except (KafkaException, FutureTimeout, KeyError, ValueError):
            continue
    return found


class Header(NamedTuple):
    name: str
    value: bytes | None


@dataclass(frozen=True)
class TailedMessage:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None  # None: the producer set none
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


# -- reading the cluster -------------------------------------------------------------------

@contextmanager
def _answers(kafka: KafkaConnection) -> Iterator[None]:
    """A broker that does not answer (or refuses) is one ``KafkaUnavailable`` line."""
    try:
        yield
    except (KafkaException, FutureTimeout) as exc:
        raise KafkaUnavailable(f"Kafka at {kafka.describe()} did not answer: "
                               f"{str(exc) or 'timed out'}") from exc


@contextmanager
def _clients(kafka: KafkaConnection) -> Iterator[tuple[AdminClient, Consumer]]:
    probe = consumer(kafka, PROBE_GROUP)
    try:
        with _answers(kafka):
            yield admin_client(kafka), probe
    finally:
        probe.close()


def is_internal(name: str) -> bool:
    """Kafka's own topics (``__consumer_offsets``, ``__transaction_state``, ...)."""
    return name.startswith("__")


def topic_order(names: Iterable[str]) -> list[str]:
    """The pipeline's topics first (in their order), then the others by name; no internal."""
    rank = {name: i for i, name in enumerate(topics.PIPELINE_TOPICS)}
    return sorted((n for n in names if not is_internal(n)),
                  key=lambda n: (rank.get(n, len(rank)), n))


def overview(kafka: KafkaConnection, *, timeout_s: float = 5.0) -> ClusterOverview:
    """Brokers, every topic but Kafka's internal ones, and every consumer group with its lag.

    Raises ``KafkaUnavailable`` when the cluster does not answer within ``timeout_s`` (each
    request)."""
    with _clients(kafka) as (admin, probe):
        metadata = admin.list_topics(timeout=timeout_s)
        replicas = _replication(admin, metadata, timeout_s)
        controller = metadata.controller_id if metadata.controller_id >= 0 else None
        brokers = tuple(BrokerInfo(b.id, b.host, b.port, b.id == controller)
                        for b in sorted(metadata.brokers.values(), key=lambda b: b.id))
        infos = topics.describe_topics(admin, probe, topic_order(metadata.topics),
                                       timeout_s=timeout_s)
        ends = {info.name: info.end_offsets for info in infos}
        found = _groups(admin, probe, ends, timeout_s)
    return ClusterOverview(metadata.cluster_id, controller, brokers, tuple(infos), tuple(found),
                           replicas)


def topic_infos(kafka: KafkaConnection, names: list[str] | None = None, *,
                timeout_s: float = 5.0) -> list[topics.TopicInfo]:
    """Partitions, retention and end offsets of ``names`` that exist (None: every topic but
    Kafka's internal ones, the pipeline's first)."""
    with _clients(kafka) as (admin, probe):
        if names is None:
            names = topic_order(admin.list_topics(timeout=timeout_s).topics)
        return topics.describe_topics(admin, probe, names, timeout_s=timeout_s)


def groups(kafka: KafkaConnection, *, timeout_s: float = 5.0) -> list[GroupInfo]:
    """Every consumer group: state, members, and per partition its committed offset, end
    offset and lag. Raises ``KafkaUnavailable`` when the cluster does not answer."""
    with _clients(kafka) as (admin, probe):
        return _groups(admin, probe, {}, timeout_s)


def _groups(admin: AdminClient, probe: Consumer, ends: dict[str, list[int]],
            timeout_s: float) -> list[GroupInfo]:
    """``ends``: end offsets already known per topic (the overview's), others are asked."""
    listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout_s)
    if listed.errors and not listed.valid:  # no broker answered: errors are KafkaErrors
        error = listed.errors[0]
        raise error if isinstance(error, KafkaException) else KafkaException(error)
    ids = sorted({g.group_id for g in listed.valid},
                 key=lambda g: (g != topics.SINK_GROUP, g))
    if not ids:
        return []
    described = admin.describe_consumer_groups(ids, request_timeout=timeout_s)
    # The API takes one group per request: all are sent before any answer is awaited.
    offsets = {gid: admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(gid)], request_timeout=timeout_s)[gid] for gid in ids}
    found = []
    for gid in ids:
        description = _gone_is_none(described[gid], timeout_s)
        committed = _gone_is_none(offsets[gid], timeout_s)
        if description is None:  # deleted since it was listed
            continue
        members = tuple(_member(m) for m in description.members)
        state = description.state.name.lower() if description.state else "unknown"
        found.append(GroupInfo(
            gid, state, members,
            partition_lags(_committed(committed), members,
                           lambda name: _end_offsets(probe, name, ends, timeout_s))))
    return found


def _gone_is_none(future: Future, timeout_s: float):
    try:
        return future.result(timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return None
        raise


def _member(member) -> GroupMember:
    assigned = (member.assignment.topic_partitions or []) if member.assignment else []
    return GroupMember(member.member_id, member.client_id, member.host,
                       member.group_instance_id,
                       tuple(sorted(PartitionId(tp.topic, tp.partition) for tp in assigned)))


def _committed(answer) -> dict[PartitionId, int]:
    if answer is None:
        return {}
    return {PartitionId(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions
            if tp.error is None and tp.offset >= 0}


def _end_offsets(probe: Consumer, name: str, known: dict[str, list[int]],
                 timeout_s: float) -> list[int] | None:
    if name not in known:
        topic = probe.list_topics(name, timeout=timeout_s).topics.get(name)
        if topic is None or topic.error is not None:
            return None
        known[name] = topics.end_offsets(probe, name, topic.partitions, timeout_s=timeout_s)
    return known[name]


def partition_lags(committed: dict[PartitionId, int], members: Iterable[GroupMember],
                   end_offsets: Callable[[str], list[int] | None]) -> tuple[PartitionLag, ...]:
    """A row per partition the group committed on or has assigned, by topic and partition.
    ``end_offsets``: a topic's end offset per partition (None: the topic is gone)."""
    owners = {part: f"{m.client_id}@{m.host}" for m in members for part in m.assignment}
    rows = []
    for part in sorted(committed.keys() | owners.keys()):
        ends = end_offsets(part.topic)
        end = ends[part.partition] if ends is not None and part.partition < len(ends) else None
        rows.append(PartitionLag(part.topic, part.partition, committed.get(part), end,
                                 owners.get(part)))
    return tuple(rows)


# -- tail ----------------------------------------------------------------------------------

def tail(kafka: KafkaConnection, topic: str, *, last: int | None, follow: bool,
         timeout_s: float = 15.0, stop: Callable[[], bool] = lambda: False,
         ) -> Iterator[TailedMessage]:
    """The newest ``last`` messages of ``topic`` across its partitions, oldest first (merged
    by timestamp), then, with ``follow``, every new one as it arrives until ``stop()`` says so
    (or the caller stops iterating: Ctrl-C). ``last`` None or 0: none of the messages held.

    Reads each partition from ``end - last`` (the newest ``last`` overall are among them) with
    a consumer under a random group id that is assigned the partitions and never commits.
    Raises ``TopicMissing`` for a topic that does not exist, ``KafkaUnavailable`` when the
    cluster does not answer, or reading stalls for ``timeout_s``."""
    reader = consumer(kafka, f"{TAIL_GROUP_PREFIX}{uuid.uuid4().hex}",
                      **{"enable.partition.eof": True})
    try:
        with _answers(kafka):
            partitions = _partitions_of(reader, topic, timeout_s)
            ends = {p: reader.get_watermark_offsets(TopicPartition(topic, p),
                                                    timeout=timeout_s) for p in partitions}
            starts = {p: max(low, high - (last or 0)) for p, (low, high) in ends.items()}
            reader.assign([TopicPartition(topic, p, starts[p]) for p in partitions])
            newest, later = _read_newest(reader, topic, starts,
                                         {p: high for p, (_, high) in ends.items()},
                                         last or 0, keep_later=follow, timeout_s=timeout_s)
            yield from newest
            yield from later
            while follow and not stop():
                for msg in reader.consume(TAIL_BATCH, TAIL_POLL_S):
                    if _readable(msg, topic):
                        yield tailed(msg)
    finally:
        reader.close()


def _partitions_of(reader: Consumer, topic: str, timeout_s: float) -> list[int]:
    # A metadata request for one topic: the consumer never creates it
    # (allow.auto.create.topics is false for consumers).
    found = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if found is None or found.error is not None:
        if found is not None and found.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(found.error)
        raise TopicMissing(f"topic {topic} does not exist (`streamflow topics list --all` "
                           "shows the topics there are)")
    return sorted(found.partitions)


def _read_newest(reader: Consumer, topic: str, starts: dict[int, int], highs: dict[int, int],
                 last: int, *, keep_later: bool, timeout_s: float,
                 ) -> tuple[list[TailedMessage], list[TailedMessage]]:
    """Read every partition from its start up to its end offset at the call; keep the
    ``last`` newest by (timestamp, partition, offset) in a bounded heap. Returns them oldest
    first, and (``keep_later``) what arrived beyond those ends meanwhile, in arrival order."""
    pending = {p for p in starts if starts[p] < highs[p]}
    heap: list[tuple[int, int, int, TailedMessage]] = []
    later: list[TailedMessage] = []
    quiet_since = time.monotonic()
    while pending:
        batch = reader.consume(TAIL_BATCH, TAIL_POLL_S)
        if batch:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > timeout_s:
            raise KafkaUnavailable(f"reading {topic}: partitions {sorted(pending)} sent "
                                   f"nothing for {timeout_s:g}s")
        for msg in batch:
            part = msg.partition()
            if msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF:
                if msg.offset() >= highs[part]:  # past the end (compaction, markers): done
                    pending.discard(part)
                continue
            if not _readable(msg, topic):
                continue
            if msg.offset() >= highs[part]:
                if keep_later:
                    later.append(tailed(msg))
                continue
            if msg.offset() + 1 >= highs[part]:
                pending.discard(part)
            item = tailed(msg)
            entry = (item.timestamp_ms or -1, part, msg.offset(), item)
            if len(heap) < last:
                heapq.heappush(heap, entry)
            elif last:
                heapq.heappushpop(heap, entry)
    return [entry[3] for entry in sorted(heap, key=lambda e: e[:3])], later


def _readable(msg: Message, topic: str) -> bool:
    """True for a message; False for end-of-partition events and errors librdkafka recovers
    from itself (it retries); raises for a deleted topic or a fatal error."""
    error = msg.error()
    if error is None:
        return True
    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise TopicMissing(f"topic {topic} was deleted while it was read")
    if error.fatal():
        raise KafkaException(error)
    return False


def tailed(msg: Message) -> TailedMessage:
    kind, stamp = msg.timestamp()
    return TailedMessage(
        msg.topic(), msg.partition(), msg.offset(),
        None if kind == TIMESTAMP_NOT_AVAILABLE or stamp < 0 else stamp,
        msg.key(), msg.value(), tuple(Header(k, v) for k, v in msg.headers() or ()))
