"""A topic's identity: which incarnation of its name the sink reads, and what follows from it.

Kafka 4 gives every topic an id at creation; a topic deleted and created again under the same
name has a new one. The sink stores the id with its offsets, rows and dead letters
(``topics.UNKNOWN_TOPIC_ID`` where it was not known), so offsets stored under another id are a
deleted incarnation's, and the topic now under that name is read from its beginning
(docs/ARCHITECTURE.md, delivery guarantees). Everything about the id lives here: asking the
broker (``topic_ids``), comparing (``is_old_incarnation``), following it in the running sink
(``TopicIdentity``), reporting it (``stored_incarnation``, for `streamflow status`) and
replacing a topic for tests and benchmarks (``recreate_topic``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from streamflow import topics
from streamflow.db.compose import statement
from streamflow.db.engine import connect_admin
from streamflow.db.landing import StoredOffset
from streamflow.db.tables import consumer_offsets
from streamflow.kafka_clients import admin_client
from streamflow.kafka_connection import KafkaConnection

log = logging.getLogger("streamflow.sink")

# Seconds to wait for the broker's answer about a topic's id: asked on assignment and when
# something looks wrong, never per batch.
LOOKUP_TIMEOUT_S = 10.0
# Seconds between probes of the topic's id while the sink runs (one small metadata request,
# never waited for). librdkafka follows a topic created again without a word when the new one
# already holds more than the old position: the probe notices within this time, and the new
# topic is read again from its beginning (nothing lost; rows landed meanwhile keep the old id).
# A lookup that failed is asked again at the same pace.
TOPIC_ID_CHECK_S = 1.0

_UINT64 = (1 << 64) - 1


# -- asking the broker ----------------------------------------------------------------------
def topic_ids(admin: AdminClient, names: list[str], *, timeout_s: float = 10.0) -> dict[str, str]:
    """Topic name -> topic id (a UUID's text), for those of ``names`` that exist. Raises
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
    except FutureTimeout:  # the request outlived its own timeout (a broker killed meanwhile)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                        "the topic description did not come back")) from None
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


def is_known(topic_id: str | None) -> bool:
    """Whether ``topic_id`` names an incarnation (None and the nil id do not)."""
    return topic_id not in (None, topics.UNKNOWN_TOPIC_ID)


def is_old_incarnation(stored_id: str | None, live_id: str | None) -> bool:
    """True when offsets stored under ``stored_id`` belong to a topic since deleted and created
    again as ``live_id``. Not known on either side (None, or the nil id): trusted as stored."""
    return is_known(stored_id) and is_known(live_id) and stored_id != live_id


# -- the running sink -----------------------------------------------------------------------
@dataclass(frozen=True)
class Restart:
    """Partitions whose offsets are a deleted incarnation's: read again from ``live``'s
    beginning (``Checkpoint.restart_topic``)."""

    old_ids: set[str]
    live: str
    partitions: list[int]


class TopicIdentity:
    """The id of the topic a sink reads, learnt from the broker and followed while it runs.

    ``known`` is the id of the incarnation being read: rows and offsets are stored with it.
    Every assignment compares the stored offsets' ids with the live one (``assigned``); while
    running, a probe every TOPIC_ID_CHECK_S asks again (``questioned``, never waited for) and
    ``follow`` acts on what it found. When the broker does not answer a lookup (busy, a leader
    moving, a timeout), the stored ids wait in ``unverified`` and are compared with the first
    answer a later probe gets, exactly as at assignment: a failed lookup delays the
    protection, never turns it off. Rows landed meanwhile carry the unknown id, and stored
    offsets keep the id they had (db/landing.py), so the comparison still has it."""

    def __init__(self, topic: str, *, timeout_s: float = LOOKUP_TIMEOUT_S) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.admin: AdminClient | None = None  # set once the sink's clients exist
        self.known: str | None = None
        # Partition -> the id its stored offsets had, assigned while the live id was unknown.
        self.unverified: dict[int, str] = {}
        self._probe: Future | None = None  # a question about the id, in flight
        self._probed_at = 0.0

    @property
    def ids(self) -> dict[str, str]:
        """Topic -> id of the incarnation being read, as rows and offsets are labelled."""
        return {self.topic: self.known} if self.known is not None else {}

    def learn(self) -> str | None:
        """Ask the broker and wait (None: it did not say, or the topic does not exist now)."""
        try:
            return topic_ids(self.admin, [self.topic],
                             timeout_s=self.timeout_s).get(self.topic)
        except KafkaException as exc:
            log.warning("could not learn the id of topic %s (%s): asked again within %.0f s",
                        self.topic, exc, TOPIC_ID_CHECK_S)
            return None

    def assigned(self, stored: Mapping[int, StoredOffset],
                 partitions: Iterable[int]) -> tuple[str | None, dict[int, str]]:
        """For newly assigned ``partitions``: (the live id, partition -> the deleted
        incarnation's id for each whose stored offsets are of another). Without an answer
        from the broker, their stored ids wait for the next one (``unverified``)."""
        live = self.learn()
        if live is not None:
            self.known = live
        old: dict[int, str] = {}
        for partition in partitions:
            at = stored.get(partition)
            stored_id = at.topic_id if at is not None else None
            self.unverified.pop(partition, None)
            if live is None:
                if is_known(stored_id):
                    self.unverified[partition] = stored_id
            elif is_old_incarnation(stored_id, live):
                old[partition] = stored_id
        return live, old

    def questioned(self) -> bool:
        """Whether the latest probe's answer calls for ``follow``: an id other than the one
        being read, or any id while stored offsets wait to be compared. Never waits: a probe
        goes out every TOPIC_ID_CHECK_S and is read once answered (False meanwhile, and when
        it failed: the next one asks again)."""
        probe = self._probe
        if probe is None:
            if time.monotonic() - self._probed_at >= TOPIC_ID_CHECK_S:
                self._probed_at = time.monotonic()
                self._probe = request_topic_ids(self.admin, [self.topic],
                                                timeout_s=self.timeout_s)[self.topic]
            return False
        if not probe.done():
            if time.monotonic() - self._probed_at > 2 * self.timeout_s:
                self._probe = None  # lost (its broker killed): the next one asks again
            return False
        self._probe = None
        try:
            answer = topic_id_answer(probe)
        except KafkaException:
            return False
        return answer is not None and (answer != self.known or bool(self.unverified))

    def follow(self, assigned: Iterable[int]) -> Restart | None:
        """Ask the broker now (waits) and say which of the ``assigned`` partitions restart:
        all of them when the topic has another id than the one being read (deleted and
        created again meanwhile); else those assigned while the id was unknown whose stored
        offsets had another id. None: nothing to restart, or no answer (asked again later).
        With none assigned (revoked while the topic was gone) nothing restarts here: the next
        assignment compares the stored offsets with the id learnt now."""
        live = self.learn()
        if live is None:
            return None
        known, self.known = self.known, live
        pending, self.unverified = self.unverified, {}
        assigned = sorted(assigned)
        late = {p: pending[p] for p in assigned if is_old_incarnation(pending.get(p), live)}
        if is_old_incarnation(known, live):
            return Restart({known, *late.values()}, live, assigned) if assigned else None
        return Restart(set(late.values()), live, list(late)) if late else None


# -- `streamflow status` --------------------------------------------------------------------
_STORED_IDS = statement(
    "SELECT {o.topic_id}::text, count(*) FROM {o} WHERE {o.group_id} = %s AND {o.topic} = %s "
    "AND {o.next_offset} IS NOT NULL GROUP BY {o.topic_id} ORDER BY count(*) DESC",
    o=consumer_offsets)


@dataclass(frozen=True)
class StoredIncarnation:
    topic: str
    stored: dict[str | None, int]  # topic id -> partitions stored under it (None: before ids)
    live_id: str | None            # the topic's id now (None: missing or the broker did not say)

    @property
    def outdated(self) -> bool:
        """Offsets of a deleted incarnation: the sink reads the new topic from its beginning."""
        return any(is_old_incarnation(i, self.live_id) for i in self.stored)

    def describe(self) -> str:
        if not self.stored:
            return f"{self.topic}: no offsets stored yet"
        ids = ", ".join(f"{i or 'not recorded'} ({n} partitions)" for i, n in self.stored.items())
        if self.outdated:
            return (f"{self.topic}: offsets of topic id {ids}, but the topic was deleted and "
                    f"created again as {self.live_id}: the sink reads it from its beginning")
        return f"{self.topic}: offsets of topic id {ids}" + (
            "" if self.live_id else " (live topic id unknown)")


def stored_incarnation(database_url: str, kafka: KafkaConnection, *,
                       topic: str = topics.USER_EVENTS, group: str = topics.SINK_GROUP,
                       timeout_s: float = 2.0) -> StoredIncarnation:
    """One small query on raw.consumer_offsets and one topic description: cheap enough for
    every status call."""
    with connect_admin(database_url, "streamflow-status") as conn:
        stored = dict(conn.execute(_STORED_IDS, (group, topic)).fetchall())
    live = topic_ids(admin_client(kafka), [topic], timeout_s=timeout_s).get(topic)
    return StoredIncarnation(topic, stored, live)


# -- replacing a topic (tests and benchmarks) -----------------------------------------------
def recreate_topic(kafka: KafkaConnection, name: str, partitions: int = 3, *,
                   timeout_s: float = 60.0) -> str:
    """Delete ``name``, wait until the broker has forgotten it, create it again: the new
    incarnation's topic id. Raises TimeoutError when a step takes longer than ``timeout_s``."""
    from streamflow.infra.processes import wait_until

    admin = admin_client(kafka)
    admin.delete_topics([name])[name].result(timeout_s)

    def created() -> bool:
        if name in topic_ids(admin, [name]):
            return False  # not forgotten yet
        try:
            topics.create_topic(kafka, name, partitions, timeout_s=timeout_s)
        except KafkaException:  # still being deleted in the background
            return False
        return True

    def new_id() -> str | None:
        return topic_ids(admin, [name]).get(name)

    for step, what in ((created, "created again"), (new_id, "given its new id")):
        if not wait_until(step, timeout_s=timeout_s, interval_s=0.5):
            raise TimeoutError(f"topic {name} not {what} within {timeout_s:.0f} s")
    return new_id()
