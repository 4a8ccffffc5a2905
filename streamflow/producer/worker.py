"""The producer loop: generate (or replay) events, send them keyed by user_id, never drop one.

Delivery: idempotent producer with acks=all (kafka_clients.PRODUCER_DEFAULTS). A full local
queue is backpressure: poll for delivery reports and retry the same event. On stop: flush,
then exit 0; an event Kafka finally refuses is counted and makes the run fail loudly.
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
# Seconds of a full local queue before each warning that the broker is not taking events.
STALL_WARNING_S = 10.0


@dataclass(frozen=True)
class ProducerConfig:
    bootstrap_servers: str
    topic: str = topics.USER_EVENTS
    rate: float | None = None  # events/s; None = as fast as the broker takes them
    count: int | None = None
    duration_s: float | None = None
    invalid_rate: float = 0.0
    late_rate: float = 0.0
    from_file: Path | None = None
    users: int = 10_000
    seed: int | None = None


@dataclass
class ProducerStats:
    produced: int = 0
    delivered: int = 0
    failed: int = 0
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


def run_producer(config: ProducerConfig, key: bytes, stop: StopFlag | None = None,
                 *, progress: Progress | None = None) -> ProducerStats:
    stop = stop if stop is not None else StopFlag().install()
    progress = progress or Progress("producer")
    stats = ProducerStats()
    # Reports only for failures: a Python callback per delivered event would cost ~15% of
    # the producer's throughput. Delivered = produced - failed - still queued at the end.
    producer = kafka_clients.producer(config.bootstrap_servers,
                                      **{"delivery.report.only.error": True})

    def on_delivery(err, _msg) -> None:
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
            want = pacer.allowance(stats.produced, producer)
            if config.count is not None:
                want = min(want, config.count - stats.produced)
                if want <= 0:
                    break
            step = take(want)
            if not step:
                break  # a replayed file is exhausted
            _send(producer, config.topic, step, on_delivery, stop)
            stats.produced += len(step)
            metrics.EVENTS_PRODUCED.inc(len(step))
            producer.poll(0)
            progress.update(stats.produced, f"(queued {len(producer):,})")
    finally:
        # Stop or not, everything handed to the client is delivered before we exit.
        remaining = producer.flush(FLUSH_TIMEOUT_S)
        stats.delivered = stats.produced - stats.failed - remaining
        stats.elapsed_s = time.monotonic() - started
        metrics.EVENTS_DELIVERED.inc(stats.delivered)
        progress.finish(stats.produced, f"(delivered {stats.delivered:,}, failed {stats.failed})")
    if remaining or stats.failed:
        raise ProducerDeliveryFailed(
            f"{stats.failed} events failed and {remaining} were undelivered after "
            f"{FLUSH_TIMEOUT_S:.0f}s; first error: {stats.first_error}")
    return stats


def _send(producer: Producer, topic: str, messages: list[Message], on_delivery,
          stop: StopFlag) -> None:
    produce = producer.produce
    headers = contract.HEADERS
    for key, value in messages:
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
                    return


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
