"""The Kafka topics StreamFlow uses: names, partitions and retention live here only."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamflow.errors import TopicMismatch
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import Settings

USER_EVENTS = "user-events"
ANALYTICS = "analytics"
NOTIFICATIONS = "notifications"
DEAD_LETTER = "dead-letter-topic"
# The sink's consumer group: its lag is the pipeline's lag.
SINK_GROUP = "db-sink"
# Stored where a topic's id (Kafka 4 tells incarnations of a name apart by it) is not known:
# rows from before ids were recorded. Never a real topic's id.
UNKNOWN_TOPIC_ID = "00000000-0000-0000-0000-000000000000"

HOUR_MS = 3_600_000
_UINT64 = (1 << 64) - 1


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The four topics of the pipeline, from settings where they are tunable."""
    week = 168 * HOUR_MS
    return [
        # Keyed by user_id: one user's events stay ordered within a partition.
        TopicSpec(USER_EVENTS, settings.user_events_partitions,
                  settings.user_events_retention_hours * HOUR_MS),
        TopicSpec(ANALYTICS, 1, week),
        TopicSpec(NOTIFICATIONS, 1, week),
        # Dead letters are evidence: keep them longer (30 days) than the events themselves.
        TopicSpec(DEAD_LETTER, 1, 30 * 24 * HOUR_MS),
    ]


@dataclass(frozen=True)
class TopicStatus:
    name: str
    outcome: str  # created | exists | mismatch
    detail: str = ""


def _partitions(admin: AdminClient, name: str, timeout_s: float) -> int:
    """The partition count of a topic just created: the broker's metadata can list it with
    no partitions for a moment (seen in `make test`), which is not its layout."""
    deadline = time.monotonic() + timeout_s
    while True:
        topic = admin.list_topics(name, timeout=timeout_s).topics.get(name)
        have = len(topic.partitions) if topic is not None and topic.error is None else 0
        if have or time.monotonic() > deadline:
            return have
        time.sleep(0.1)


def _layout(spec: TopicSpec, have: int) -> TopicStatus:
    if have != spec.partitions:
        return TopicStatus(spec.name, "mismatch",
                           f"has {have} partitions, expected {spec.partitions}")
    return TopicStatus(spec.name, "exists")


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], *, replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[TopicStatus]:
    """Create missing topics; report (never silently accept) existing ones laid out otherwise.

    Raises ``TopicMismatch`` after creating what it can, when an existing topic has fewer or
    more partitions than its spec (key -> partition mapping would differ).
    """
    existing = admin.list_topics(timeout=timeout_s).topics
    statuses: list[TopicStatus] = []
    to_create = []
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions) or _partitions(admin, spec.name, timeout_s)
            statuses.append(_layout(spec, have))
        else:
            to_create.append(NewTopic(
                spec.name, num_partitions=spec.partitions, replication_factor=replication_factor,
                config={"retention.ms": str(spec.retention_ms), **spec.config},
            ))
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout_s).items():
            try:
                future.result()
                statuses.append(TopicStatus(name, "created"))
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                # Created meanwhile (another `up`), or metadata that lagged a creation: its
                # layout is checked all the same.
                statuses.append(_layout(by_name[name], _partitions(admin, name, timeout_s)))
    mismatches = [s for s in statuses if s.outcome == "mismatch"]
    if mismatches:
        raise TopicMismatch("; ".join(f"topic {s.name} {s.detail}" for s in mismatches)
                            + " (delete and recreate it, or set STREAMFLOW_USER_EVENTS_PARTITIONS)")
    return statuses


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    retention_ms: int | None
    end_offsets: list[int]

    @property
    def messages(self) -> int:
        return sum(self.end_offsets)


def describe_topics(admin: AdminClient, consumer: Consumer, names: list[str],
                    *, timeout_s: float = 10.0) -> list[TopicInfo]:
    """Partitions, retention and per-partition end offsets of ``names`` that exist."""
    metadata = admin.list_topics(timeout=timeout_s).topics
    present = [n for n in names if n in metadata]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in present]
    retention: dict[str, int | None] = {}
    if resources:
        for resource, future in admin.describe_configs(resources).items():
            entry = future.result(timeout=timeout_s).get("retention.ms")
            retention[resource.name] = int(entry.value) if entry and entry.value else None
    infos = []
    for name in present:
        offsets = end_offsets(consumer, name, metadata[name].partitions, timeout_s=timeout_s)
        infos.append(TopicInfo(name, len(offsets), retention.get(name), offsets))
    return infos


def end_offsets(consumer: Consumer, name: str, partitions, *,
                timeout_s: float = 10.0) -> list[int]:
    """The end (high watermark) offset of each partition of ``name``, in partition order."""
    return [consumer.get_watermark_offsets(TopicPartition(name, pid), timeout=timeout_s)[1]
            for pid in sorted(partitions)]


def message_count(kafka: KafkaConnection, name: str, *, timeout_s: float = 30.0) -> int:
    """Messages ever written to ``name`` (end offsets summed; these topics are not compacted)."""
    from streamflow.kafka_clients import consumer

    probe = consumer(kafka, "streamflow-probe")
    try:
        partitions = probe.list_topics(name, timeout=timeout_s).topics[name].partitions
        return sum(end_offsets(probe, name, partitions, timeout_s=timeout_s))
    finally:
        probe.close()


def topic_ids(admin: AdminClient, names: list[str], *, timeout_s: float = 10.0) -> dict[str, str]:
    """Topic name -> topic id (a UUID's text), for those of ``names`` that exist.

    Kafka 4 gives every topic an id at creation: a topic deleted and created again under the
    same name has a new one, which is how readers tell the incarnations apart. Raises
    ``KafkaException`` when the broker does not answer."""
    if not names:
        return {}
    futures = request_topic_ids(admin, names, timeout_s=timeout_s)
    answers = {name: topic_id_answer(future, timeout_s=timeout_s)
               for name, future in futures.items()}
    return {name: topic_id for name, topic_id in answers.items() if topic_id is not None}


def request_topic_ids(admin: AdminClient, names: list[str], *,
                      timeout_s: float = 10.0) -> dict[str, Future]:
    """Ask for the ids of ``names`` without waiting: name -> future (``topic_id_answer``)."""
    return admin.describe_topics(TopicCollection(list(names)), request_timeout=timeout_s)


def topic_id_answer(future: Future, *, timeout_s: float | None = None) -> str | None:
    """The id a ``request_topic_ids`` future holds; None: the topic does not exist (deleted,
    and not created again yet). Raises ``KafkaException`` for any other failure."""
    try:
        description = future.result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return uuid_text(description.topic_id)


def uuid_text(topic_id) -> str:
    """A confluent_kafka ``Uuid`` (its ``str`` is Kafka's base64 form) as UUID text."""
    high = topic_id.get_most_significant_bits() & _UINT64  # Java longs: may come signed
    low = topic_id.get_least_significant_bits() & _UINT64
    return str(uuid.UUID(int=(high << 64) | low))


def is_old_incarnation(stored_id: str | None, live_id: str | None) -> bool:
    """True when offsets stored under ``stored_id`` belong to a topic since deleted and created
    again as ``live_id``. Not known on either side (None, or the nil id): trusted as stored."""
    known = stored_id not in (None, UNKNOWN_TOPIC_ID) and live_id not in (None, UNKNOWN_TOPIC_ID)
    return known and stored_id != live_id
