"""The sink loop: consume a batch, land it in one transaction, then (and only then) commit.

Offsets live in PostgreSQL with the rows (raw.consumer_offsets); on assignment the sink seeks
to them, so Kafka's committed offsets are only for lag tooling. They are stored with the
topic's id: offsets of another id are a deleted topic's, and the topic now under that name is
read from its beginning. Offsets gone before the sink read them are a hole, recorded as an
``offset_gap`` dead letter (sink.gaps), never jumped over silently.

Two batches are in play at most: one landing on a background thread (PostgreSQL does the work;
the thread mostly waits) while the main thread consumes and decodes the next. Landings stay
strictly sequential, and rebalance callbacks first wait for the landing in flight, so a
revoked partition's written offsets are known and nothing decoded is kept across a rebalance.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from streamflow import kafka_clients, metrics, topics
from streamflow.contract import MAX_EVENT_BYTES
from streamflow.db.landing import (
    CONNECTION_ERRORS,
    Batch,
    LandingWriter,
    LandResult,
    StoredOffset,
)
from streamflow.db.tables import LANDING_INDEX
from streamflow.dlq import DeadLetter, Reason, Stage, publish
from streamflow.errors import ConsumerFailed
from streamflow.kafka_connection import KafkaConnection
from streamflow.sink.decode import decode
from streamflow.sink.gaps import OffsetGap, OffsetJump, gap_dead_letter, lost_range
from streamflow.workers.runtime import Backoff, Progress, StopFlag

log = logging.getLogger("streamflow.sink")

GIL_SWITCH_INTERVAL_S = 0.001
# Seconds between offset commits to Kafka (for lag tooling only: the truth is in PostgreSQL).
KAFKA_COMMIT_INTERVAL_S = 1.0
# Seconds to wait for the broker's answer about a topic's id or a partition's log start:
# asked only on assignment and when something looks wrong, never per batch.
BROKER_QUERY_TIMEOUT_S = 10.0
# Seconds between probes of the topic's id while running (one small metadata request, never
# waited for). librdkafka follows a topic created again without a word when the new one
# already holds more than the old position: the probe notices within this time, and the new
# topic is read again from its beginning (nothing lost; rows landed meanwhile keep the old id).
TOPIC_ID_CHECK_S = 1.0
# Messages of a batch whose produce->row latency is observed, evenly spaced: all of them at
# the usual rates (a batch holds what arrived during one ~0.1 s poll), a sample of a full
# backlog batch, which would otherwise spend ~10 ms per 10k messages in Histogram.observe.
LATENCY_SAMPLES_PER_BATCH = 64


class Outcome(Enum):
    """How a batch in flight ended."""

    LANDED = "landed"
    # Landed again after the database came back; the consumer was sought to the offsets in
    # PostgreSQL, so what was decoded meanwhile is read again.
    RESEEKED = "reseeked"
    STOPPED = "stopped"  # asked to stop during an outage: nothing committed, replayed later


@dataclass(frozen=True)
class SinkConfig:
    kafka: KafkaConnection
    database_url: str
    topic: str = topics.USER_EVENTS
    group_id: str = topics.SINK_GROUP
    dlq_topic: str = topics.DEAD_LETTER
    # Most messages per transaction. 10k keeps a batch ~3 MB and ~0.1-0.2 s of work: big
    # enough to amortise the commit, small enough for a quick replay.
    batch_size: int = 10_000
    # Seconds the sink waits for a first message when it has none (the idle poll). A batch
    # never waits to fill: it is what the consumer holds at that moment (see next_messages).
    poll_timeout_s: float = 0.1
    synchronous_commit: bool = False
    max_event_bytes: int = MAX_EVENT_BYTES
    stop_when_idle_s: float | None = None  # benchmarks: exit after this long without data
    # Static group membership (KIP-345): a sink restarted under the same id takes its
    # partitions back at once, without waiting for the session timeout or a rebalance.
    instance_id: str | None = None


class Decoded(NamedTuple):
    batch: Batch
    jumps: list[OffsetJump]  # messages not at the offset expected next (see sink.gaps)


def build_batch(messages, max_event_bytes: int = MAX_EVENT_BYTES,
                topic_ids: Mapping[str, str] | None = None,
                expected: Mapping[tuple[str, int], int] | None = None) -> Decoded:
    """Decode messages into rows and dead letters, note the offsets to store, and every
    offset jump (pure).

    ``topic_ids``: topic name -> id of the incarnation being read (see topics).
    ``expected``: (topic, partition) -> the offset its next message should have; a partition
    absent there has no expectation for its first message."""
    batch = Batch(topic_ids=dict(topic_ids or {}))
    rows, letters, next_offsets = batch.rows, batch.dead_letters, batch.next_offsets
    ids, expected, jumps = batch.topic_ids, expected or {}, []
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        where = (topic, partition)
        # One dict look-up per message: this loop is the sink's hot path.
        want = next_offsets.get(where)
        if want is None:
            want = expected.get(where, offset)
        if offset != want:
            jumps.append(OffsetJump(topic, partition, want, offset))
        decoded = decode(msg.value(), msg.key(), msg.headers, topic, partition, offset,
                         topic_id=ids.get(topic, topics.UNKNOWN_TOPIC_ID),
                         max_bytes=max_event_bytes)
        if isinstance(decoded, DeadLetter):
            letters.append(decoded)
        else:
            rows.append(decoded)
        next_offsets[where] = offset + 1
    return Decoded(batch, jumps)


class Sink:
    def __init__(self, config: SinkConfig, stop: StopFlag) -> None:
        self.config = config
        self.stop = stop
        self.writer = LandingWriter(config.database_url, config.group_id,
                                    synchronous_commit=config.synchronous_commit)
        self.consumer: Consumer | None = None
        self.dlq_producer = None
        self.admin = None  # asks the broker for topic ids
        self.assigned: set[tuple[str, int]] = set()
        self.landed: dict[tuple[str, int], int] = {}  # next offsets written to PostgreSQL
        # The offset each partition's next message should have: a seek's target or the last
        # message read + 1. Anything else is an offset jump (see sink.gaps).
        self.expected: dict[tuple[str, int], int] = {}
        self.topic_ids: dict[str, str] = {}  # topic -> id of the incarnation being read
        self._id_probe: Future | None = None  # a question about the topic's id, in flight
        self._id_probed_at = 0.0
        self.progress = Progress("sink")
        self.consumed = self.inserted = self.dead_lettered = 0
        self._lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-land")
        self._in_flight: InFlight | None = None
        # The consumer has had partitions assigned (so it holds the topic's metadata), and the
        # topic was created again since: it is replaced before the next read (see _recreated).
        self._consumer_assigned = self._consumer_outdated = False
        self._kafka_offsets: dict[tuple[str, int], int] = {}  # landed, not yet told to Kafka
        self._kafka_committed_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    def setup(self) -> None:
        # The landing thread mostly waits on PostgreSQL; when the answer comes it must get
        # the GIL back quickly from the decoding thread. At Python's default 5 ms switch
        # interval it waits that long per round trip: landing halves (measured 28k -> 52k
        # rows/s under decode load at 1 ms).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._with_database(self.writer.setup)
        metrics.DB_AVAILABLE.set(1)  # it answered: an idle sink must not read as cut off
        self.admin = kafka_clients.admin_client(self.config.kafka)
        # Reports for failures only: dlq.publish() collects nothing else.
        self.dlq_producer = kafka_clients.producer(self.config.kafka,
                                                   **{"delivery.report.only.error": True})
        self.consumer = self._subscribed_consumer()

    def _subscribed_consumer(self) -> Consumer:
        consumer = kafka_clients.consumer(
            self.config.kafka, self.config.group_id,
            # A batch waits at most poll_timeout_s; fetch in big chunks to keep up at 50k/s+.
            **{"fetch.min.bytes": 1, "queued.max.messages.kbytes": 65536},
            **({"group.instance.id": self.config.instance_id} if self.config.instance_id else {}),
        )
        consumer.subscribe([self.config.topic], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_lost)
        return consumer

    def _renew_consumer(self) -> None:
        """Replace the consumer by a new one in the same group (see ``_recreated``): the old
        one leaves (its partitions forgotten, nothing of the deleted topic committed), the new
        one's assignment starts each partition at the offsets stored in PostgreSQL."""
        self._consumer_assigned = self._consumer_outdated = False
        topic = self.config.topic
        self._await_in_flight()
        self.landed = {tp: o for tp, o in self.landed.items() if tp[0] != topic}
        self._kafka_offsets = {tp: o for tp, o in self._kafka_offsets.items() if tp[0] != topic}
        self.consumer.close()  # serves the revocation (commits what is landed, forgets)
        self._forget([TopicPartition(t, p) for t, p in list(self.assigned)])
        self.consumer = self._subscribed_consumer()
        log.info("consumer replaced after the re-creation of topic %s", topic)

    def close(self) -> None:
        self._lander.shutdown(wait=True)
        if self.consumer is not None:
            try:
                self._commit_to_kafka(force=True)
            except Exception as exc:  # noqa: BLE001 - advisory offsets; PostgreSQL has them
                log.warning("final offset commit to Kafka failed (harmless): %s", exc)
            self.consumer.close()  # leaves the group: partitions move on at once
        if self.dlq_producer is not None:
            self.dlq_producer.flush(10)
        self.writer.close()
        self.progress.finish(self.consumed, self._detail())

    # -- rebalancing ------------------------------------------------------------------------
    def _await_in_flight(self) -> None:
        """Callbacks wait for the landing in flight (its result is handled by the loop)."""
        if self._in_flight is not None:
            wait([self._in_flight.future])

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored with the rows (PostgreSQL is truth)."""
        self._await_in_flight()
        # Inside a callback the consumer must not be polled: wait with plain sleeps.
        stored = self._with_database(lambda: self.writer.stored_offsets(self.config.topic),
                                     serve_group=False)
        if stored is None:  # stopping while the database was down: assign nothing
            return
        self._start_positions(partitions, stored, serve_group=False)
        if self.stop:  # stopped while the database was down: assign nothing
            return
        for tp in partitions:
            self.assigned.add((tp.topic, tp.partition))
        consumer.incremental_assign(partitions)
        self._consumer_assigned = True
        log.info("assigned %s", ", ".join(f"{tp.partition}@{tp.offset}" for tp in partitions))

    def _start_positions(self, partitions: list[TopicPartition],
                         stored: dict[int, StoredOffset], *, serve_group: bool = True) -> None:
        """Set each partition's ``offset`` to where reading starts: its stored offset; the
        beginning where none is stored, or where the stored one belongs to a deleted
        incarnation of the topic (another topic id)."""
        topic = self.config.topic
        live = self._learn_topic_id()
        old: dict[int, str] = {}
        for tp in partitions:
            at = stored.get(tp.partition)
            if at is not None and topics.is_old_incarnation(at.topic_id, live):
                old[tp.partition] = at.topic_id
                at = StoredOffset(0, live)  # a new topic's offsets start at 0
            where = (tp.topic, tp.partition)
            if at is None:
                tp.offset = OFFSET_BEGINNING
                self.expected.pop(where, None)  # never read: no hole can be ours
            else:
                tp.offset = OFFSET_BEGINNING if tp.partition in old else at.next_offset
                self.expected[where] = at.next_offset
        if old:
            self._recreated(topic, set(old.values()), live, list(old), serve_group=serve_group)

    def _learn_topic_id(self) -> str | None:
        """Ask the broker for the id of the topic read (None: it did not say; the stored
        offsets are then trusted as they are, as before topic ids were recorded)."""
        topic = self.config.topic
        try:
            live = topics.topic_ids(self.admin, [topic],
                                    timeout_s=BROKER_QUERY_TIMEOUT_S).get(topic)
        except KafkaException as exc:
            log.warning("could not learn the id of topic %s (%s): its stored offsets are "
                        "trusted", topic, exc)
            return None
        if live is not None:
            self.topic_ids[topic] = live
        return live

    def _recreated(self, topic: str, old_ids: set[str], live: str, partitions: list[int], *,
                   serve_group: bool = True) -> None:
        """Report a re-created topic once: log, metric, and the new id's offsets stored at
        once (replacing the deleted topic's), so a restart does not report it again."""
        log.warning("topic %s was deleted and created again (id %s -> %s): reading the new "
                    "topic from its beginning", topic, ", ".join(sorted(old_ids)), live)
        metrics.TOPIC_RECREATIONS.labels(topic).inc()
        self._with_database(lambda: self.writer.restart_offsets(topic, partitions, live),
                            serve_group=serve_group)
        # librdkafka keeps the deleted topic's partition leader epochs and ignores metadata of
        # the new one, whose epochs start again at 0 (confluentinc/librdkafka#4898): after any
        # leader change of the old topic (a broker restart) this consumer would never fetch the
        # new topic, and its offset lookups fail forever without an error the sink sees. A new
        # consumer has no such cache; the run loop replaces this one before it reads again (a
        # consumer assigned nothing yet, as at start-up, learnt only the new topic).
        self._consumer_outdated = self._consumer_assigned

    def _follow_recreation(self) -> bool:
        """While running: if the topic now has another id than the one being read, it was
        deleted and created again; every assigned partition restarts at its beginning."""
        topic = self.config.topic
        known = self.topic_ids.get(topic)
        live = self._learn_topic_id()
        partitions = sorted(p for t, p in self.assigned if t == topic)
        # None assigned (revoked while the topic was gone): the next assignment compares the
        # stored offsets' id with the live one, and acts there.
        if not partitions or not topics.is_old_incarnation(known, live):
            return False
        self._await_in_flight()  # the writer's connection is the landing thread's until then
        # Offset 0 of the new id is stored for every assigned partition; the replacement
        # consumer (see _recreated) starts there.
        self._recreated(topic, {known}, live, partitions)
        return True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is written (after the landing in flight), forget the rest."""
        self._await_in_flight()
        flight = self._in_flight
        if flight is not None and flight.future.exception() is None:
            self.landed.update(flight.batch.next_offsets)
        written = [TopicPartition(tp.topic, tp.partition, self.landed[(tp.topic, tp.partition)])
                   for tp in partitions if (tp.topic, tp.partition) in self.landed]
        self._forget(partitions)
        if written:
            try:
                consumer.commit(offsets=written, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - Kafka offsets are advisory here
                log.warning("commit on revoke failed (harmless, offsets are in PostgreSQL): %s",
                            exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget partitions the group took away (session timed out): no commit. The member
        is no longer in the group, so a commit is refused as fenced, and librdkafka turns
        that into a fatal error that kills the consumer (`make soak`, under CPU pressure).
        Nothing is lost: the offsets of what was written are in PostgreSQL."""
        self._await_in_flight()
        self._forget(partitions)
        log.warning("partitions lost (session timeout): %s; the group reassigns them",
                    ", ".join(str(tp.partition) for tp in partitions))

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
            self.landed.pop((tp.topic, tp.partition), None)
            self.expected.pop((tp.topic, tp.partition), None)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        assert self.consumer is not None
        idle_since = time.monotonic()
        while not self.stop:
            if self._consumer_outdated:
                self._renew_consumer()
            self._serve_client_logs()
            messages = [m for m in self.next_messages() if self._usable(m)]
            # Decoding overlaps with the landing in flight.
            batch, gaps = self._decode(messages)
            if self._in_flight is not None:
                outcome = self._finish(self._in_flight)
                self._in_flight = None
                if outcome is Outcome.STOPPED:  # during an outage: replayed on restart
                    return
                if outcome is Outcome.RESEEKED:
                    batch = None  # positions were reset to PostgreSQL's: re-read it
            if batch is not None or not self.assigned:  # idle counts once data could flow
                idle_since = time.monotonic()
            if batch is not None:
                self._in_flight = InFlight(batch, len(messages), time.perf_counter(),
                                           self._lander.submit(self.writer.land, batch,
                                                               self._publish_dead_letters),
                                           gaps, produced_at_ms(messages))
            elif (self._in_flight is None and self.config.stop_when_idle_s is not None
                  and time.monotonic() - idle_since > self.config.stop_when_idle_s):
                break
            else:
                self.progress.update(self.consumed, self._detail())
        if self._in_flight is not None:  # stopping: let the last landing commit
            self._finish(self._in_flight)
            self._in_flight = None

    def _serve_client_logs(self) -> None:
        """Hand the admin's and the dead-letter producer's librdkafka lines to logging: they
        are served only when a client is polled (kafka_clients), and while the broker is down
        an unpolled one piles them up in memory (measured: ~3 a second for an idle producer).
        The producer is left alone while a landing, which may publish with it, is in flight:
        its delivery callbacks stay on the landing thread. ~0.2 us a call."""
        self.admin.poll(0)
        if self._in_flight is None:
            self.dlq_producer.poll(0)

    def _decode(self, messages: list) -> tuple[Batch | None, list[OffsetGap]]:
        """Decode a batch and check its offsets. A jump back, or another id in the probe, may
        mean the topic was created again: if its id changed, read the new topic from its
        beginning (this batch is dropped). A jump forward past the log start is a hole: it
        lands in the batch as an ``offset_gap`` dead letter, never skipped silently."""
        decoded = (build_batch(messages, self.config.max_event_bytes, self.topic_ids,
                               self.expected) if messages else None)
        backwards = decoded is not None and any(not j.forward for j in decoded.jumps)
        probed = topics.is_old_incarnation(self.topic_ids.get(self.config.topic),
                                           self._probed_topic_id())
        if (backwards or probed) and self._follow_recreation():
            return None, []
        if decoded is None:
            return None, []
        batch, gaps = decoded.batch, [g for g in map(self._lost, decoded.jumps) if g]
        for gap in gaps:
            log.warning("%s", gap.describe())
            batch.dead_letters.append(gap_dead_letter(
                gap, batch.topic_ids.get(gap.topic, topics.UNKNOWN_TOPIC_ID)))
        self.expected.update(batch.next_offsets)
        return batch, gaps

    def _lost(self, jump: OffsetJump) -> OffsetGap | None:
        """What a jump lost: the broker's log start says which offsets are gone (sink.gaps)."""
        if not jump.forward:
            return None
        try:
            watermarks = self.consumer.get_watermark_offsets(
                TopicPartition(jump.topic, jump.partition), timeout=BROKER_QUERY_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("log start of %s[%d] unknown (%s): the whole jump counts as lost",
                        jump.topic, jump.partition, exc)
            watermarks = None
        return lost_range(jump, watermarks[0] if watermarks else None)

    def _probed_topic_id(self) -> str | None:
        """The topic's id, never waited for: a probe goes out every TOPIC_ID_CHECK_S and is
        read once answered (None meanwhile, when the topic is missing, or on failure)."""
        topic, probe = self.config.topic, self._id_probe
        if probe is None:
            if time.monotonic() - self._id_probed_at >= TOPIC_ID_CHECK_S:
                self._id_probed_at = time.monotonic()
                self._id_probe = topics.request_topic_ids(
                    self.admin, [topic], timeout_s=BROKER_QUERY_TIMEOUT_S)[topic]
            return None
        if not probe.done():
            return None
        self._id_probe = None
        try:
            return topics.topic_id_answer(probe)
        except KafkaException:
            return None  # the broker did not answer: the next probe asks again

    def next_messages(self) -> list:
        """Adaptive batching: what the consumer has fetched already, up to batch_size; only
        when it has nothing, wait (poll_timeout_s) for the first message and take it with
        whatever came along. With a backlog every batch is full (librdkafka prefetches far
        ahead), so the drain rate is unchanged; at low rates an event lands at once instead
        of waiting for a batch to fill (produce->row, `make bench` latency)."""
        size = self.config.batch_size
        messages = self.consumer.consume(size, 0)
        if not messages:
            messages = self.consumer.consume(1, self.config.poll_timeout_s)
            if messages and size > 1:
                messages += self.consumer.consume(size - 1, 0)
        return messages

    def _finish(self, flight: InFlight) -> Outcome:
        """Wait for a landing; on a lost database, land it again here with backoff."""
        try:
            result, outcome = flight.future.result(), Outcome.LANDED
        except CONNECTION_ERRORS:
            result, outcome = self._land_with_retry(flight.batch), Outcome.RESEEKED
            if result is None:
                return Outcome.STOPPED
        metrics.DB_AVAILABLE.set(1)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - flight.started)
        committed = time.time()
        for produced_ms in flight.produced_ms:
            metrics.PRODUCE_TO_ROW_SECONDS.observe(max(committed - produced_ms / 1000, 0.0))
        self._after_commit(flight.batch, result, flight.messages)
        for gap in flight.gaps:
            if (gap.topic, gap.partition) in self.assigned:
                metrics.OFFSET_GAP_MESSAGES.labels(gap.topic).inc(gap.count)
        return outcome

    def _usable(self, msg) -> bool:
        if msg.error() is None:
            # A message from a partition revoked in this very call is the new owner's.
            return (msg.topic(), msg.partition()) in self.assigned
        error = msg.error()
        if error.fatal():
            # A fatal consumer never consumes again: exit non-zero, so the supervisor starts
            # a fresh sink (it resumes from the offsets in PostgreSQL), instead of polling a
            # dead client while the lag grows.
            raise ConsumerFailed(f"Kafka consumer failed fatally: {error}")
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", error)
        return False

    def _land_with_retry(self, batch: Batch) -> LandResult | None:
        """Land the batch; while PostgreSQL is down, pause consumption and retry with backoff.

        Afterwards every partition is sought to its stored offset: whatever was fetched or
        decoded meanwhile is read again, and the database says from where.
        """
        backoff = Backoff()
        self.consumer.pause(self.consumer.assignment())
        while True:
            metrics.DB_AVAILABLE.set(0)
            self.writer.reset()
            delay = backoff.next()
            log.warning("PostgreSQL unavailable; retrying the batch in %.1fs", delay)
            self._idle(delay)
            if self.stop:
                return None
            # Partitions revoked meanwhile belong to another sink now.
            batch = _keep_partitions(batch, self.assigned)
            try:
                result = self.writer.land(batch, self._publish_dead_letters)
                break
            except CONNECTION_ERRORS as exc:
                log.warning("still unavailable: %s", str(exc).strip().splitlines()[0])
        self._resume_from_stored_offsets()
        return result

    def _idle(self, seconds: float) -> None:
        """Wait while serving group callbacks; anything fetched meanwhile is re-read later."""
        deadline = time.monotonic() + seconds
        while not self.stop and time.monotonic() < deadline:
            self.consumer.consume(self.config.batch_size, min(0.5, seconds))

    def _resume_from_stored_offsets(self) -> None:
        stored = self._with_database(lambda: self.writer.stored_offsets(self.config.topic)) or {}
        assignment = self.consumer.assignment()
        self.consumer.resume(assignment)
        self._start_positions(assignment, stored)
        for tp in assignment:
            self.consumer.seek(tp)

    def _with_database(self, action, *, serve_group: bool = True):
        """Run ``action`` until PostgreSQL answers (backoff), or return None when stopping."""
        backoff = Backoff()
        while True:
            try:
                return action()
            except CONNECTION_ERRORS as exc:
                self.writer.reset()
                delay = backoff.next()
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs",
                            str(exc).strip().splitlines()[0], delay)
                if serve_group and self.consumer is not None:
                    self._idle(delay)
                else:
                    time.sleep(delay)
                if self.stop:
                    return None

    def _publish_dead_letters(self, letters: list[DeadLetter]) -> None:
        publish(self.dlq_producer, self.config.dlq_topic, letters)

    def _after_commit(self, batch: Batch, result: LandResult, consumed: int) -> None:
        self.landed.update((tp, o) for tp, o in batch.next_offsets.items() if tp in self.assigned)
        self.consumed += consumed
        self.inserted += result.inserted
        self.dead_lettered += result.dead_lettered
        metrics.EVENTS_CONSUMED.inc(consumed)
        metrics.EVENTS_LANDED.inc(result.inserted)
        for letter in batch.dead_letters:
            metrics.DEAD_LETTERS.labels(letter.stage.value, letter.reason_code.value).inc()
        if result.db_rejected:
            metrics.DEAD_LETTERS.labels(Stage.INGEST.value, Reason.DB_REJECTED.value).inc(
                result.db_rejected)
        if result.rechecked:
            log.info("%d replayed contract rejects queued for a new contract check",
                     result.rechecked)
        # For lag tooling only: PostgreSQL already holds these offsets.
        # Only partitions still ours: a revoked one was committed by _on_revoke, and its new
        # owner's offset must not be moved back.
        self._kafka_offsets.update((tp, o) for tp, o in batch.next_offsets.items()
                                   if tp in self.assigned)
        self._commit_to_kafka()
        for (topic, partition), next_offset in batch.next_offsets.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True)
            if high >= 0:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(high - next_offset, 0))
        self.progress.update(self.consumed, self._detail())

    def _commit_to_kafka(self, *, force: bool = False) -> None:
        """Commit the newest landed offsets to Kafka, at most every KAFKA_COMMIT_INTERVAL_S.

        Adaptive batching lands a small transaction every few milliseconds at moderate rates:
        an OffsetCommit for each queued ahead of the group heartbeats on the coordinator
        connection until the session timed out (every ~35 s at 2,000 events/s, `make soak`)."""
        now = time.monotonic()
        if not self._kafka_offsets or (not force and
                                       now - self._kafka_committed_at < KAFKA_COMMIT_INTERVAL_S):
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._kafka_offsets.items()
                   if (t, p) in self.assigned]
        self._kafka_offsets.clear()
        self._kafka_committed_at = now
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=True)

    def _detail(self) -> str:
        return f"(landed {self.inserted:,}, dead-lettered {self.dead_lettered:,})"


@dataclass(frozen=True)
class InFlight:
    batch: Batch
    messages: int
    started: float
    future: Future
    gaps: list[OffsetGap]  # holes the batch records, counted once it committed
    produced_ms: list[int]  # Kafka timestamps of a sample of the batch (produced_at_ms)


def produced_at_ms(messages: list) -> list[int]:
    """The Kafka timestamps (ms) of at most LATENCY_SAMPLES_PER_BATCH messages, evenly
    spaced through the batch; messages without one are left out."""
    step = max(1, -(-len(messages) // LATENCY_SAMPLES_PER_BATCH))  # rounded up
    stamps = (msg.timestamp() for msg in messages[::step])
    return [ms for kind, ms in stamps if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0]


def _keep_partitions(batch: Batch, assigned: set[tuple[str, int]]) -> Batch:
    kafka_topic = LANDING_INDEX["kafka_topic"]
    kafka_partition = LANDING_INDEX["kafka_partition"]
    return Batch(
        rows=[r for r in batch.rows if (r[kafka_topic], r[kafka_partition]) in assigned],
        dead_letters=[d for d in batch.dead_letters
                      if (d.source_topic, d.source_partition) in assigned],
        next_offsets={tp: o for tp, o in batch.next_offsets.items() if tp in assigned},
        topic_ids=batch.topic_ids,
    )


def run_sink(config: SinkConfig, stop: StopFlag | None = None) -> Sink:
    """Set up, loop until stopped, close. Returns the sink (its counters) for callers/tests."""
    sink = Sink(config, stop if stop is not None else StopFlag().install())
    sink.setup()
    try:
        sink.run()
    finally:
        sink.close()
    return sink
