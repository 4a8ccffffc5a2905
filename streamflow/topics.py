"""The Kafka topics StreamFlow uses: names, partitions and retention live here only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from streamflow import replicas
from streamflow.errors import TopicMismatch
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import Settings

USER_EVENTS = "user-events"
ANALYTICS = "analytics"
NOTIFICATIONS = "notifications"
DEAD_LETTER = "dead-letter-topic"
# The pipeline's topics, in the order every listing shows them.
PIPELINE_TOPICS = (USER_EVENTS, ANALYTICS, NOTIFICATIONS, DEAD_LETTER)
# The sink's consumer group: its lag is the pipeline's lag.
SINK_GROUP = "db-sink"
# Stored where a topic's id (Kafka 4 tells incarnations of a name apart by it, see
# sink/incarnation.py) is not known: rows from before ids were recorded. Never a real id.
UNKNOWN_TOPIC_ID = "00000000-0000-0000-0000-000000000000"

HOUR_MS = 3_600_000


def _setting(field_name: str) -> str:
    return Settings.model_fields[field_name].alias


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    config: dict[str, str] = field(default_factory=dict)
    # The environment variable that sets ``partitions``: named in a mismatch's fix.
    partitions_setting: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The four topics of the pipeline, from settings where they are tunable."""
    week = 168 * HOUR_MS
    others = settings.topic_partitions
    return [
        # Keyed by user_id: one user's events stay ordered within a partition.
        TopicSpec(USER_EVENTS, settings.user_events_partitions,
                  settings.user_events_retention_hours * HOUR_MS,
                  partitions_setting=_setting("user_events_partitions")),
        # Keyed too (a window's start and type, a notification's user, a dead letter's
        # original key): one key stays ordered, and every reader takes all partitions.
        TopicSpec(ANALYTICS, others, week, partitions_setting=_setting("topic_partitions")),
        TopicSpec(NOTIFICATIONS, others, week, partitions_setting=_setting("topic_partitions")),
        # Dead letters are evidence: keep them longer (30 days) than the events themselves.
        TopicSpec(DEAD_LETTER, others, 30 * 24 * HOUR_MS,
                  partitions_setting=_setting("topic_partitions")),
    ]


@dataclass(frozen=True)
class TopicStatus:
    name: str
    outcome: str  # created | exists | grown | mismatch
    detail: str = ""  # a mismatch: what differs and the fix, in one sentence
    # Replication other than the rule asks (``replication``): what differs and the fix, in one
    # sentence (replicas.drift); "" when as asked.
    replication_drift: str = ""
    replicated: str = ""  # what --fix-replication changed ("" : nothing)


def _partitions(admin: AdminClient, name: str, timeout_s: float, *, at_least: int = 1) -> int:
    """The partition count of a topic just created (or grown): the broker's metadata can list
    it with no partitions (or the old count) for a moment (seen in `make test`), which is not
    its layout."""
    deadline = time.monotonic() + timeout_s
    while True:
        topic = admin.list_topics(name, timeout=timeout_s).topics.get(name)
        have = len(topic.partitions) if topic is not None and topic.error is None else 0
        if have >= at_least or time.monotonic() > deadline:
            return have
        time.sleep(0.1)


ADD_PARTITIONS_COMMAND = "streamflow topics create --add-partitions"


def mismatch_detail(spec: TopicSpec, have: int) -> str:
    """What differs and the fix. Kafka adds partitions but never removes them, and keys
    written before a change map to other partitions after it (ordering per key restarts)."""
    setting = spec.partitions_setting or "its partitions setting"
    found = f"has {have} partition{'s' * (have != 1)}, expected {spec.partitions}"
    if have < spec.partitions:
        return (f"{found}: run `{ADD_PARTITIONS_COMMAND}` to add {spec.partitions - have} "
                f"(a key's later messages may then go to another partition), or set "
                f"{setting}={have} to keep it")
    return (f"{found}: Kafka cannot remove partitions; set {setting}={have}, "
            "or delete the topic and create it again")


def _layout(spec: TopicSpec, have: int) -> TopicStatus:
    if have != spec.partitions:
        return TopicStatus(spec.name, "mismatch", mismatch_detail(spec, have))
    return TopicStatus(spec.name, "exists")


def _grow(admin: AdminClient, specs: list[TopicSpec], timeout_s: float) -> list[TopicStatus]:
    """Add partitions to ``specs``' topics up to their spec's count."""
    if not specs:
        return []
    by_name = {spec.name: spec for spec in specs}
    futures = admin.create_partitions([NewPartitions(s.name, s.partitions) for s in specs],
                                      request_timeout=timeout_s)
    statuses = []
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            raise TopicMismatch(f"could not add partitions to topic {name}: {exc}") from exc
        have = _partitions(admin, name, timeout_s, at_least=by_name[name].partitions)
        statuses.append(TopicStatus(name, "grown", f"now {have} partitions")
                        if have == by_name[name].partitions else _layout(by_name[name], have))
    return statuses


def replication_for(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of ``brokers``: three copies
    where there are three brokers, a write held by two of them (one broker may be lost
    without a stop or a loss); with fewer, as many copies as brokers and one in sync."""
    factor = min(3, brokers)
    return factor, 2 if factor >= 3 else 1


def replication(brokers: int, settings_factor: int | None,
                settings_in_sync: int | None) -> replicas.Target:
    """The replication the pipeline's topics get: the settings' where set, else what the
    cluster's size (``brokers``, those down included: replicas.brokers) allows
    (``replication_for``)."""
    factor = settings_factor or replication_for(brokers)[0]
    return replicas.Target(factor, settings_in_sync or replication_for(factor)[1])


def ensure_topics(
    admin: AdminClient, specs: list[TopicSpec], *, replication_factor: int | None = None,
    min_insync_replicas: int | None = None, timeout_s: float = 30.0,
    add_partitions: bool = False, fix_replication: replicas.Mover | None = None,
    strict: bool = True,
) -> list[TopicStatus]:
    """Create missing topics; report (never silently accept) existing ones laid out otherwise.

    ``add_partitions``: grow existing topics with fewer partitions than their spec (Kafka can
    only add them). Existing topics' replication factor and min.insync.replicas are checked
    against ``replication``; ``fix_replication`` (a mover) moves them to it
    (replicas.fix). ``strict`` (the default) raises ``TopicMismatch`` after creating what it
    can when a layout or a replication still differs, the fix in its message; otherwise the
    mismatches are only returned (``streamflow up`` reports them and keeps going: the workers
    read any partition count, and a topic with fewer copies still works while its brokers do).
    """
    metadata = admin.list_topics(timeout=timeout_s)
    cluster = replicas.brokers(metadata)
    want = replication(len(cluster.known), replication_factor, min_insync_replicas)
    existing = metadata.topics
    statuses: list[TopicStatus] = []
    to_create = []
    to_grow = []
    by_name = {spec.name: spec for spec in specs}
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions) or _partitions(admin, spec.name, timeout_s)
            if add_partitions and have < spec.partitions:
                to_grow.append(spec)
            else:
                statuses.append(_layout(spec, have))
        else:
            to_create.append(NewTopic(
                spec.name, num_partitions=spec.partitions, replication_factor=want.factor,
                config={"retention.ms": str(spec.retention_ms),
                        "min.insync.replicas": str(want.in_sync), **spec.config},
            ))
    if to_create:
        for name, future in admin.create_topics(to_create, request_timeout=timeout_s).items():
            try:
                future.result()
                statuses.append(TopicStatus(name, "created"))
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR and cluster.down:
                    raise TopicMismatch(
                        f"cannot create topic {name} with {want.factor} replicas while "
                        f"broker(s) {', '.join(map(str, sorted(cluster.down)))} are down: "
                        "start them (`streamflow kafka start`) and run it again") from exc
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                # Created meanwhile (another `up`), or metadata that lagged a creation: its
                # layout is checked all the same.
                statuses.append(_layout(by_name[name], _partitions(admin, name, timeout_s)))
    statuses += _grow(admin, to_grow, timeout_s)
    statuses = _check_replication(admin, statuses, want, cluster, fix_replication, timeout_s)
    order = {spec.name: i for i, spec in enumerate(specs)}
    statuses.sort(key=lambda status: order[status.name])
    if strict and (problem := mismatch_message(statuses)):
        raise TopicMismatch(problem)
    return statuses


def _check_replication(admin: AdminClient, statuses: list[TopicStatus], want: replicas.Target,
                       cluster: replicas.Brokers, mover: replicas.Mover | None,
                       timeout_s: float) -> list[TopicStatus]:
    """``statuses`` with the replication drift of every topic not created just now (and, with
    a ``mover``, fixed where the cluster can hold ``want``)."""
    found = replicas.read(admin, [s.name for s in statuses if s.outcome != "created"],
                          timeout_s=timeout_s)
    drifts = {t.name: d for t in found if (d := replicas.drift(t, want, cluster))}
    fixed: dict[str, str] = {}
    if mover is not None and replicas.fixable(want, cluster):
        fixed = replicas.fix(admin, mover, [t for t in found if t.name in drifts], want,
                             cluster, timeout_s=timeout_s)
    return [replace(s, replication_drift="" if s.name in fixed else drifts.get(s.name, ""),
                    replicated=fixed.get(s.name, "")) for s in statuses]


def mismatch_message(statuses: list[TopicStatus]) -> str | None:
    """One line naming every topic laid out or replicated otherwise than asked, with the fix
    (said once for topics that share it); None when every topic is as asked."""
    by_detail: dict[str, list[str]] = {}
    for s in statuses:
        if s.outcome == "mismatch":
            by_detail.setdefault(s.detail, []).append(s.name)
        if s.replication_drift:
            by_detail.setdefault(s.replication_drift, []).append(s.name)
    return "; ".join(f"topic {names[0]} {detail}" if len(names) == 1 else
                     f"topics {', '.join(names)} each {detail}"
                     for detail, names in by_detail.items()) or None


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
    gone: set[str] = set()  # deleted since the listing: left out, not an error
    if resources:
        for resource, future in admin.describe_configs(resources).items():
            try:
                entry = future.result(timeout=timeout_s).get("retention.ms")
            except KafkaException as exc:
                if not _unknown_topic(exc):
                    raise
                gone.add(resource.name)
                continue
            retention[resource.name] = int(entry.value) if entry and entry.value else None
    infos = []
    for name in present:
        try:
            offsets = end_offsets(consumer, name, metadata[name].partitions, timeout_s=timeout_s)
        except KafkaException as exc:
            if not _unknown_topic(exc):
                raise
            continue
        if name not in gone:
            infos.append(TopicInfo(name, len(offsets), retention.get(name), offsets))
    return infos


def _unknown_topic(exc: KafkaException) -> bool:
    return exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


# A partition whose leader is moving (a topic just created, a broker restarting): asked again.
_LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


def end_offsets(consumer: Consumer, name: str, partitions, *,
                timeout_s: float = 10.0) -> list[int]:
    """The end (high watermark) offset of each partition of ``name``, in partition order."""
    return [_high_watermark(consumer, TopicPartition(name, pid), timeout_s)
            for pid in sorted(partitions)]


def _high_watermark(consumer: Consumer, partition: TopicPartition, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(
                partition, timeout=max(deadline - time.monotonic(), 0.1))[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _LEADER_MOVING or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def message_count(kafka: KafkaConnection, name: str, *, timeout_s: float = 30.0) -> int:
    """Messages ever written to ``name`` (end offsets summed; these topics are not compacted)."""
    from streamflow.kafka_clients import consumer

    probe = consumer(kafka, "streamflow-probe")
    try:
        partitions = probe.list_topics(name, timeout=timeout_s).topics[name].partitions
        return sum(end_offsets(probe, name, partitions, timeout_s=timeout_s))
    finally:
        probe.close()


def create_topic(kafka: KafkaConnection, name: str, partitions: int = 3, *,
                 replication_factor: int = 1, config: dict[str, str] | None = None,
                 timeout_s: float = 30.0) -> str:
    """Create one topic (broker defaults for its configuration, but ``config``) and wait until
    the broker has it; its name. Raises the broker's ``KafkaException`` (TOPIC_ALREADY_EXISTS
    included): for the scratch topics of tests and benchmarks, where the pipeline's use
    ``ensure_topics``."""
    from streamflow.kafka_clients import admin_client

    admin = admin_client(kafka)  # must outlive the future it returns
    admin.create_topics([NewTopic(name, num_partitions=partitions,
                                  replication_factor=replication_factor,
                                  config=config or {})],
                        request_timeout=timeout_s)[name].result(timeout_s)
    return name
