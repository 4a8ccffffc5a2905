"""The sink loop: consume a batch, decode it, hand it to the checkpoint to land; read the next
while it lands.

The write path is ``db.landing`` (one transaction per batch: rows, dead letters, offsets);
``sink.checkpoint`` owns the order around it: positions, landing in flight, commits to Kafka,
rebalances and outages. This module owns the Kafka clients and decoding; it asks
``sink.incarnation`` whether the topic being read is still the one whose offsets are stored
(a topic deleted and created again is read from its beginning). Offsets gone before the sink
read them are a hole, recorded as an ``offset_gap`` dead letter (sink.gaps), never jumped over
silently.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import dataclass

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    TopicPartition,
)

from streamflow import kafka_clients, metrics, topics
from streamflow.contract import MAX_EVENT_BYTES
from streamflow.db.landing import LandingWriter
from streamflow.db.quarantine import Kind
from streamflow.dlq import DeadLetter, Reason, Stage, Unpublished, publish
from streamflow.errors import ConsumerFailed
from streamflow.kafka_connection import KafkaConnection
from streamflow.sink.batch import Batch, build_batch
from streamflow.sink.checkpoint import Checkpoint, Finished, Outcome
from streamflow.sink.gaps import OffsetGap, OffsetJump, gap_dead_letter, log_start, lost_range
from streamflow.sink.incarnation import TopicIdentity
from streamflow.workers.runtime import Progress, StopFlag

log = logging.getLogger("streamflow.sink")

GIL_SWITCH_INTERVAL_S = 0.001
# Decoding allocates a dict per message and holds a batch of young row tuples: at Python's
# default gen-0 threshold (700 allocations) the cyclic GC ran every few dozen messages and
# walked them again (0.55 µs of a ~5.3 µs decode per event: build_batch of 10k demo events,
# best of 15). The hot path makes no cycles; 50,000 keeps collections rare.
GC_THRESHOLD = (50_000, 10, 10)
# Seconds to wait for the broker's answer about a topic's id or a partition's log start:
# asked only on assignment and when something looks wrong, never per batch.
BROKER_QUERY_TIMEOUT_S = 10.0
# Messages of a batch whose produce->row latency is observed, evenly spaced: all of them at
# the usual rates (a batch holds what arrived during one ~0.1 s poll), a sample of a full
# backlog batch, which would otherwise spend ~10 ms per 10k messages in Histogram.observe.
LATENCY_SAMPLES_PER_BATCH = 64


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
    # STREAMFLOW_KAFKA_GROUP_PROTOCOL: "classic" or "consumer" (KIP-848).
    group_protocol: str = "classic"


class Sink:
    def __init__(self, config: SinkConfig, stop: StopFlag) -> None:
        self.config = config
        self.stop = stop
        self.identity = TopicIdentity(config.topic, timeout_s=BROKER_QUERY_TIMEOUT_S)
        self.checkpoint = Checkpoint(
            LandingWriter(config.database_url, config.group_id,
                          synchronous_commit=config.synchronous_commit),
            config.topic, stop, publish=self._publish_dead_letters,
            identity=self.identity, idle_batch=config.batch_size)
        self.dlq_producer = None
        self.admin = None  # asks the broker for topic ids (sink.incarnation)
        self.progress = Progress("sink")
        self.consumed = self.inserted = self.dead_lettered = 0

    @property
    def consumer(self) -> Consumer | None:
        return self.checkpoint.consumer

    @consumer.setter
    def consumer(self, consumer: Consumer) -> None:
        self.checkpoint.consumer = consumer

    # -- lifecycle --------------------------------------------------------------------------
    def setup(self) -> None:
        # The landing thread mostly waits on PostgreSQL; when the answer comes it must get
        # the GIL back quickly from the decoding thread. At Python's default 5 ms switch
        # interval it waits that long per round trip: landing halves (measured 28k -> 52k
        # rows/s under decode load at 1 ms).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        gc.set_threshold(*GC_THRESHOLD)
        self.checkpoint.setup()
        self.admin = self.identity.admin = kafka_clients.admin_client(self.config.kafka)
        # Reports for failures only: dlq.publish() collects nothing else.
        self.dlq_producer = kafka_clients.producer(self.config.kafka,
                                                   **{"delivery.report.only.error": True})
        self.consumer = self._subscribed_consumer()

    def _subscribed_consumer(self) -> Consumer:
        consumer = kafka_clients.consumer(
            self.config.kafka, self.config.group_id, group_protocol=self.config.group_protocol,
            # A batch waits at most poll_timeout_s. 16 MB of prefetched messages keeps the
            # sink fed as 64 MB did, for ~40 MB less peak RSS on a 1M backlog (198-202
            # against 238-242 MB; 8-12 MB slowed the drain ~10 %).
            **{"fetch.min.bytes": 1, "queued.max.messages.kbytes": 16384},
            **({"group.instance.id": self.config.instance_id} if self.config.instance_id else {}),
        )
        checkpoint = self.checkpoint
        consumer.subscribe([self.config.topic], on_assign=checkpoint.on_assign,
                           on_revoke=checkpoint.on_revoke, on_lost=checkpoint.on_lost)
        return consumer

    def close(self) -> None:
        self.checkpoint.close()
        if self.dlq_producer is not None:
            self.dlq_producer.flush(10)
        self.progress.finish(self.consumed, self._detail())

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> None:
        assert self.consumer is not None
        checkpoint = self.checkpoint
        idle_since = time.monotonic()
        while not self.stop:
            if checkpoint.consumer_outdated:
                why = checkpoint.consumer_outdated
                checkpoint.replace_consumer(self._subscribed_consumer)
                log.info("consumer replaced after %s: it rejoined group %s and reads %s from "
                         "the offsets stored in PostgreSQL", why, self.config.group_id,
                         self.config.topic)
            self._serve_client_logs()
            messages = self._usable(self.next_messages())
            # Decoding overlaps with the landing in flight.
            batch = self._decode(messages)
            outcome = self._finish()
            if outcome is Outcome.STOPPED:  # during an outage: replayed on restart
                return
            if outcome in (Outcome.RESEEKED, Outcome.FENCED):
                batch = None  # positions are reset to PostgreSQL's: re-read it
            if batch is not None or not checkpoint.assigned:  # idle counts once data could flow
                idle_since = time.monotonic()
            if batch is not None:
                checkpoint.submit(batch)
            elif (self.config.stop_when_idle_s is not None
                  and time.monotonic() - idle_since > self.config.stop_when_idle_s):
                break
            else:
                self.progress.update(self.consumed, self._detail())
        self._finish()  # stopping: let the last landing commit

    def _finish(self) -> Outcome | None:
        """Wait for the landing in flight and count it (None: there was none). The landed
        batch is dropped here, not held by the loop while the next two are decoded and
        landed: a third batch alive cost 14 MB of the sink's peak RSS (`make bench`)."""
        finished = self.checkpoint.finish()
        if finished is None:
            return None
        if finished.result is not None:  # landed (not STOPPED, not FENCED)
            self._count(finished)
        return finished.outcome

    def _serve_client_logs(self) -> None:
        """Hand the admin's and the dead-letter producer's librdkafka lines to logging: they
        are served only when a client is polled (kafka_clients), and while the broker is down
        an unpolled one piles them up in memory (measured: ~3 a second for an idle producer).
        The producer is left alone while a landing, which may publish with it, is in flight:
        its delivery callbacks stay on the landing thread. ~0.2 us a call."""
        self.admin.poll(0)
        if not self.checkpoint.busy:
            self.dlq_producer.poll(0)

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

    def _usable(self, messages: list) -> list:
        """The messages to decode: not errors, and from partitions still assigned (a message
        from a partition revoked in this very consume() is the new owner's)."""
        assigned = self.checkpoint.assigned
        usable = []
        for msg in messages:
            error = msg.error()
            if error is None:
                if (msg.topic(), msg.partition()) in assigned:
                    usable.append(msg)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                # A fatal consumer never consumes again: exit non-zero, so the supervisor
                # starts a fresh sink (it resumes from the offsets in PostgreSQL), instead of
                # polling a dead client while the lag grows. librdkafka reports it to
                # consume() as code _FATAL with the fatal flag unset (a static member fenced
                # after a broker restart, `make chaos`).
                raise ConsumerFailed(f"Kafka consumer failed fatally: {error}")
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", error)
        return usable

    def _decode(self, messages: list) -> Batch | None:
        """Decode a batch and check its offsets. A jump back, or the probe's answer about the
        topic's id, may mean the topic was created again: if so, the partitions concerned
        read the new topic from its beginning (this batch is dropped). A jump forward past the
        log start is a hole: it lands in the batch as an ``offset_gap`` dead letter, never
        skipped silently."""
        expected = self.checkpoint.expected
        decoded = (build_batch(messages, self.config.max_event_bytes, self.identity.ids,
                               expected)
                   if messages else None)
        backwards = decoded is not None and any(not j.forward for j in decoded.jumps)
        questioned = self.identity.questioned()
        if (backwards or questioned) and self._follow_recreation():
            return None
        if decoded is None:
            return None
        landing, gaps = decoded.landing, self._gaps(decoded.jumps)
        if gaps is None:  # stopping before the broker said what a jump lost: read it again
            return None
        for gap in gaps:
            log.warning("%s", gap.describe())
            landing.dead_letters.append(gap_dead_letter(
                gap, landing.topic_ids.get(gap.topic, topics.UNKNOWN_TOPIC_ID)))
        expected.update(landing.next_offsets)
        return Batch(landing, len(messages), gaps, produced_at_ms(messages))

    def _gaps(self, jumps: list[OffsetJump]) -> list[OffsetGap] | None:
        """What the forward jumps lost: the part below their partition's log start, asked of
        the broker until it says (sink.gaps); None: asked to stop before it did."""
        gaps = []
        for jump in (j for j in jumps if j.forward):
            partition = TopicPartition(jump.topic, jump.partition)
            start = log_start(lambda p=partition: self.consumer.get_watermark_offsets(
                p, timeout=BROKER_QUERY_TIMEOUT_S)[0], jump, self.stop)
            if start is None:
                return None
            if gap := lost_range(jump, start):
                gaps.append(gap)
        return gaps

    def _count(self, finished: Finished) -> None:
        """Counters and metrics of a committed landing."""
        batch, result = finished.batch, finished.result
        metrics.BATCH_SECONDS.observe(finished.seconds)
        committed = time.time()
        for produced_ms in batch.produced_ms:
            metrics.PRODUCE_TO_ROW_SECONDS.observe(max(committed - produced_ms / 1000, 0.0))
        self.consumed += batch.messages
        self.inserted += result.inserted
        self.dead_lettered += result.dead_lettered
        metrics.EVENTS_CONSUMED.inc(batch.messages)
        metrics.EVENTS_LANDED.inc(result.inserted)
        for letter in batch.landing.dead_letters:
            metrics.DEAD_LETTERS.labels(letter.stage.value, letter.reason_code.value).inc()
        if result.db_rejected:
            metrics.DEAD_LETTERS.labels(Stage.INGEST.value, Reason.DB_REJECTED.value).inc(
                result.db_rejected)
        if result.quarantined:
            metrics.QUARANTINED.labels(Kind.DEAD_LETTER_COPY.value).inc(result.quarantined)
            log.error("%d dead letters quarantined: the dead-letter topic refused their copy "
                      "(they are stored in PostgreSQL; `streamflow quarantine list`)",
                      result.quarantined)
        if result.rechecked:
            log.info("%d replayed contract rejects queued for a new contract check",
                     result.rechecked)
        for (topic, partition), next_offset in batch.landing.next_offsets.items():
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True)
            if high >= 0:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(high - next_offset, 0))
        self.progress.update(self.consumed, self._detail())
        assigned = self.checkpoint.assigned
        for gap in batch.gaps:
            if (gap.topic, gap.partition) in assigned:
                metrics.OFFSET_GAP_MESSAGES.labels(gap.topic).inc(gap.count)

    def _publish_dead_letters(self, letters: list[DeadLetter]) -> list[Unpublished]:
        return publish(self.dlq_producer, self.config.dlq_topic, letters)

    def _detail(self) -> str:
        return f"(landed {self.inserted:,}, dead-lettered {self.dead_lettered:,})"

    def _follow_recreation(self) -> bool:
        """If the topic was deleted and created again (sink.incarnation says which assigned
        partitions), those partitions restart at the new topic's beginning."""
        topic = self.config.topic
        restart = self.identity.follow(p for t, p in self.checkpoint.assigned if t == topic)
        if restart is None:
            return False
        # Offset 0 of the new id is stored for those partitions; the replacement consumer
        # (see Checkpoint.restart_topic) starts there.
        self.checkpoint.restart_topic(restart.old_ids, restart.live, restart.partitions)
        return True


def produced_at_ms(messages: list) -> list[int]:
    """The Kafka timestamps (ms) of at most LATENCY_SAMPLES_PER_BATCH messages, evenly
    spaced through the batch; messages without one are left out."""
    step = max(1, -(-len(messages) // LATENCY_SAMPLES_PER_BATCH))  # rounded up
    stamps = (msg.timestamp() for msg in messages[::step])
    return [ms for kind, ms in stamps if kind != TIMESTAMP_NOT_AVAILABLE and ms > 0]


def run_sink(config: SinkConfig, stop: StopFlag | None = None) -> Sink:
    """Set up, loop until stopped, close. Returns the sink (its counters) for callers/tests."""
    sink = Sink(config, stop if stop is not None else StopFlag().install())
    sink.setup()
    try:
        sink.run()
    finally:
        sink.close()
    return sink
