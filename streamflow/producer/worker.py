"""The producer loop: generate (or replay) events, send them keyed by user_id, never drop one.

Delivery: idempotent producer with acks=all (kafka_clients.PRODUCER_DEFAULTS). A full local
queue is backpressure: poll for delivery reports and retry the same event. An event whose
delivery report says "not yet" (timed out, cluster briefly unable) is sent again, however long
the outage. On stop: flush, then exit 0; an event Kafka refuses for good is counted and makes
the run fail loudly.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaError, Producer

from streamflow import contract, kafka_clients, metrics, topics
from streamflow.errors import ProducerDeliveryFailed, TopicMissing
from streamflow.kafka_connection import KafkaConnection
from streamflow.producer.generator import EventGenerator, Message, replay_file
from streamflow.workers.runtime import Progress, StopFlag

log = logging.getLogger("streamflow.producer")

# Events generated per step. At full speed 1,000 amortises the per-step bookkeeping; at a
# set rate the step shrinks to about 10 ms worth of events so pacing stays smooth.
MAX_STEP = 1_000
# At a set rate, a step waits until this much time's worth of events is due. Stepping one
# event at a time woke the producer every 1/rate s: at 2,000 events/s it used ~70 % of a
# core (measured in `make soak`); 5 ms steps cost ~2 % and stamp each event as it is sent.
MIN_STEP_S = 0.005
FLUSH_TIMEOUT_S = 60.0
NEW_TOPIC_GRACE_S = 5.0
# Seconds of a full local queue before each warning that the broker is not taking events;
# also the quiet time after which a new timed-out delivery report counts as a new stall.
STALL_WARNING_S = 10.0
# librdkafka's message.timeout.ms for this worker. 0 = never give up: with the idempotent
# producer a queued event then waits out any outage in its partition's order and is written
# once. A finite timeout (tests set a few seconds) hands events back as _MSG_TIMED_OUT reports;
# they are sent again, which can reorder them and, for one that was in flight, write it twice:
# the sink keeps one row per event_id.
MESSAGE_TIMEOUT_MS = 0
# Delivery report errors that mean "not delivered yet": librdkafka's message timeout ran out,
# or the cluster could not take the event for a while (Kafka calls these retriable). Anything
# else (too large, not authorised, unknown topic, a fatal idempotence error) fails the run.
RESENDABLE = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT_QUEUE, KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.KAFKA_STORAGE_ERROR,
})


@dataclass(frozen=True)
class ProducerConfig:
    kafka: KafkaConnection
    topic: str = topics.USER_EVENTS
    rate: float | None = None  # events/s; None = as fast as the broker takes them
    count: int | None = None
    duration_s: float | None = None
    invalid_rate: float = 0.0
    late_rate: float = 0.0
    from_file: Path | None = None
    users: int = 10_000
    seed: int | None = None
    message_timeout_ms: int = MESSAGE_TIMEOUT_MS


@dataclass
class ProducerStats:
    produced: int = 0  # new events handed to the client (a re-send is not counted again)
    delivered: int = 0  # acknowledged by the broker
    failed: int = 0
    resent: int = 0  # re-sends after a "not delivered yet" report
    elapsed_s: float = 0.0
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s else 0.0


def _generated(config: ProducerConfig, key: bytes) -> Callable[[int], list[Message]]:
    """Events are made when they are sent: their event time is the send time (a step made
    ahead and sent at a low rate would stamp events up to MAX_STEP / rate seconds early)."""
    generator = EventGenerator(key, users=config.users, seed=config.seed,
                               late_rate=config.late_rate, invalid_rate=config.invalid_rate)
    return generator.batch


def _replayed(path: Path, key: bytes) -> Callable[[int], list[Message]]:
    messages = replay_file(path, key)
    return lambda n: list(itertools.islice(messages, n))


class Pacer:
    """How many events may go now to hold ``rate`` (None: no limit); sleeps when ahead."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()

    def allowance(self, sent: int, producer: Producer) -> int:
        if self.rate is None:
            return MAX_STEP
        step = max(1, int(self.rate * MIN_STEP_S))
        while True:
            due = int((time.monotonic() - self.started) * self.rate) - sent
            if due >= step:
                return min(due, MAX_STEP)
            # Ahead of schedule: serve delivery reports while the next step comes due.
            producer.poll(min(0.05, (step - due) / self.rate))


class Redelivery:
    """Events whose delivery report said "not delivered yet", waiting to be sent again."""

    def __init__(self) -> None:
        self.pending: list[Message] = []
        self._last_report: float | None = None  # monotonic time of the last such report

    def add(self, err: KafkaError, msg) -> None:
        now = time.monotonic()
        if self._last_report is None or now - self._last_report >= STALL_WARNING_S:
            log.warning("Kafka did not take events in time (%s): sending them again until "
                        "it does", err.str())  # once per stall: reports come per event
        self._last_report = now
        # The report carries the key and value; the headers are the same for every event.
        self.pending.append((msg.key(), msg.value()))

    def send(self, producer: Producer, topic: str, on_delivery, stop: StopFlag) -> None:
        if not self.pending:
            return
        again, self.pending = self.pending, []
        sent = _send(producer, topic, again, on_delivery, stop)
        # What a stop left unsent stays pending (and counts as undelivered); reports served
        # while sending may have added more.
        self.pending = again[sent:] + self.pending


def run_producer(config: ProducerConfig, key: bytes, stop: StopFlag | None = None,
                 *, progress: Progress | None = None,
                 stats: ProducerStats | None = None) -> ProducerStats:
    """``stats`` (optional) is filled in as the run goes, so a caller has the counts even
    when the run ends with ProducerDeliveryFailed."""
    stop = stop if stop is not None else StopFlag().install()
    progress = progress or Progress("producer")
    stats = stats if stats is not None else ProducerStats()
    redelivery = Redelivery()
    # Reports only for failures: a Python callback per delivered event would cost ~15% of
    # the producer's throughput. Delivered = produced - failed - still undelivered at the end.
    producer = kafka_clients.producer(
        config.kafka,
        **{"delivery.report.only.error": True, "message.timeout.ms": config.message_timeout_ms})

    def on_delivery(err, msg) -> None:
        if err.code() in RESENDABLE:
            redelivery.add(err, msg)
            stats.resent += 1
            metrics.EVENTS_RESENT.inc()
            return
        stats.failed += 1
        stats.first_error = stats.first_error or str(err)
        metrics.DELIVERY_FAILURES.inc()

    wait_for_topic(producer, config.topic)
    take = _replayed(config.from_file, key) if config.from_file else _generated(config, key)
    pacer = Pacer(config.rate)
    deadline = time.monotonic() + config.duration_s if config.duration_s else None
    started = time.monotonic()
    try:
        while not stop and not stats.failed:  # a refused event ends the run, loudly
            if deadline is not None and time.monotonic() >= deadline:
                break
            redelivery.send(producer, config.topic, on_delivery, stop)
            want = pacer.allowance(stats.produced, producer)
            if config.count is not None:
                want = min(want, config.count - stats.produced)
                if want <= 0:
                    break
            step = take(want)
            if not step:
                break  # a replayed file is exhausted
            sent = _send(producer, config.topic, step, on_delivery, stop)
            stats.produced += sent
            metrics.EVENTS_PRODUCED.inc(sent)
            producer.poll(0)
            progress.update(stats.produced, f"(queued {len(producer):,})")
    finally:
        # Stop or not, everything handed to the client is delivered before we exit.
        remaining = _drain(producer, config.topic, redelivery, on_delivery, stop)
        stats.delivered = stats.produced - stats.failed - remaining
        stats.elapsed_s = time.monotonic() - started
        metrics.EVENTS_DELIVERED.inc(stats.delivered)
        progress.finish(stats.produced, f"(delivered {stats.delivered:,}, failed {stats.failed})")
    if remaining or stats.failed:
        raise ProducerDeliveryFailed(
            f"{stats.failed} events failed and {remaining} were undelivered after "
            f"{FLUSH_TIMEOUT_S:.0f}s; first error: {stats.first_error}")
    return stats


def _drain(producer: Producer, topic: str, redelivery: Redelivery, on_delivery,
           stop: StopFlag) -> int:
    """Flush for up to FLUSH_TIMEOUT_S, sending again what comes back not delivered yet;
    returns how many events are still undelivered (queued or waiting to be sent again)."""
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while True:
        remaining = producer.flush(max(0.0, deadline - time.monotonic()))
        if not redelivery.pending or time.monotonic() >= deadline:
            return remaining + len(redelivery.pending)
        redelivery.send(producer, topic, on_delivery, stop)


def _send(producer: Producer, topic: str, messages: list[Message], on_delivery,
          stop: StopFlag) -> int:
    """Hand ``messages`` to the client in order; returns how many it took (all of them,
    unless a stop came while the local queue was full)."""
    produce = producer.produce
    headers = contract.HEADERS
    for sent, (key, value) in enumerate(messages):
        blocked_since = None
        while True:
            try:
                produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                # Backpressure: the local queue is full. Let deliveries drain and retry the
                # same event: slowing down is allowed, dropping is not.
                producer.poll(0.05)
                blocked_since = _report_stall(producer, blocked_since)
                if stop:  # the event was never handed over: nothing to lose by stopping
                    return sent
    return len(messages)


def _report_stall(producer: Producer, blocked_since: float | None) -> float:
    now = time.monotonic()
    if blocked_since is None:
        return now
    if now - blocked_since >= STALL_WARNING_S:
        log.warning("local queue full for %.0fs (%d events waiting): the broker is not "
                    "accepting events; still retrying", now - blocked_since, len(producer))
        return now
    return blocked_since


def wait_for_topic(producer: Producer, topic: str, timeout_s: float = 30.0) -> None:
    """Fail fast on a missing topic, and wait until every partition has a leader."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        metadata = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        error = metadata.error if metadata is not None else None
        # A topic created a moment ago can be unknown to the broker's metadata cache for a
        # little while: only a topic still unknown after a few seconds is missing.
        if (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                and time.monotonic() - started > NEW_TOPIC_GRACE_S):
            raise TopicMissing(f"topic {topic!r} does not exist: run `streamflow topics create`"
                               " (or `streamflow up`)")
        if (metadata is not None and error is None and metadata.partitions
                and all(p.leader >= 0 for p in metadata.partitions.values())):
            return
        if time.monotonic() > deadline:
            raise TopicMissing(f"topic {topic!r} has no leader for every partition after "
                               f"{timeout_s:.0f}s: {error}")
        time.sleep(0.2)
