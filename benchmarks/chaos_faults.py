"""The edge faults `make chaos` injects besides kills and restarts: a message near Kafka's
1 MB limit, a message whose headers are 340 KB of bytes that are not UTF-8, and offsets
deleted (delete_records) while the sink is down. (The third, the topic
deleted and created again, is `sink.incarnation.recreate_topic`, after the main run: see chaos.py.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
from confluent_kafka import TopicPartition

from benchmarks.harness import poll_until
from streamflow import kafka_clients
from streamflow.db.engine import libpq_url
from streamflow.db.landing import LandingWriter, application_name
from streamflow.kafka_connection import KafkaConnection

# The hole is made in one partition and the oversized message sent to another, so the hole
# can never swallow the oversized message before the sink has read it.
GAP_PARTITION = 0
OVERSIZED_PARTITION = 1
# Bytes of the oversized value: the broker accepts it (its limit is 1 MB with framing); the
# sink's dead letter for it, with its headers, is over librdkafka's 1,000,000 bytes.
OVERSIZED_BYTES = 999_900
# A value that is not JSON under a header of 340 KB of \xff: as replaced text (U+FFFD, 3 bytes
# each) its dead letter's copy was over librdkafka's 1,000,000 bytes, and the sink stopped
# for good (issue 21); its dead letter must keep every header byte.
POISON_VALUE = b"chaos: not JSON, under a header of raw bytes"
POISON_HEADERS = (("chaos-blob", b"\xff" * 340_000), ("chaos-trace", b"poison"))
# Seconds to wait for a SIGKILLed sink's PostgreSQL session to end: a COMMIT it sent just
# before the kill may still be applied until then, moving its stored offsets.
SESSION_END_TIMEOUT_S = 30.0
# Seconds to wait for the producer to put enough unread messages into the partition.
BACKLOG_WAIT_S = 10.0


@dataclass(frozen=True)
class Sent:
    """A message chaos wrote itself, where the broker put it."""

    partition: int
    offset: int
    size: int  # of the value


@dataclass(frozen=True)
class DeletedRange:
    """Offsets ``first`` .. ``end - 1`` of a partition, deleted before the sink read them."""

    partition: int
    first: int  # the sink's stored offset: the first it had not landed
    end: int    # the partition's new log start

    @property
    def count(self) -> int:
        return self.end - self.first


def send_oversized(kafka: KafkaConnection, topic: str, size: int = OVERSIZED_BYTES,
                   partition: int = OVERSIZED_PARTITION) -> Sent:
    """Produce one ``size``-byte value; where it landed."""
    return _send_one(kafka, topic, b"x" * size, b"chaos-oversized", None, partition)


def send_poison_headers(kafka: KafkaConnection, topic: str,
                        partition: int = OVERSIZED_PARTITION) -> Sent:
    """Produce POISON_VALUE under POISON_HEADERS; where it landed."""
    return _send_one(kafka, topic, POISON_VALUE, b"chaos-poison", list(POISON_HEADERS),
                     partition)


def _send_one(kafka: KafkaConnection, topic: str, value: bytes, key: bytes,
              headers: list | None, partition: int) -> Sent:
    """Produce one message; where it landed, from its delivery report."""
    reports = []
    producer = kafka_clients.producer(kafka)
    producer.produce(topic, value, key, headers=headers, partition=partition,
                     on_delivery=lambda err, msg: reports.append((err, msg)))
    producer.flush(30)
    if len(reports) != 1 or reports[0][0] is not None:
        raise RuntimeError(f"chaos's own message ({key.decode()}) was not delivered: {reports}")
    return Sent(partition, reports[0][1].offset(), len(value))


def delete_unread(kafka: KafkaConnection, database_url: str, topic: str, group: str, messages: int,
                  partition: int = GAP_PARTITION) -> DeletedRange:
    """With the sink stopped: delete_records on ``partition`` up to ``messages`` offsets past
    the sink's stored offset (fewer if the producer has not written that many within
    BACKLOG_WAIT_S). Nothing is deleted when the sink never stored an offset there."""
    poll_until(lambda: not _sessions(database_url, group), SESSION_END_TIMEOUT_S,
               f"the stopped sink's PostgreSQL session ({group}) to end")
    writer = LandingWriter(database_url, group)
    writer.setup()
    try:
        stored = writer.stored_offsets(topic).get(partition)
    finally:
        writer.close()
    if stored is None:
        return DeletedRange(partition, 0, 0)
    first = stored.next_offset
    end = _end_offset_reaching(kafka, topic, partition, first + messages)
    if end <= first:
        return DeletedRange(partition, first, first)
    admin = kafka_clients.admin_client(kafka)
    (future,) = admin.delete_records([TopicPartition(topic, partition, end)]).values()
    log_start = future.result(30).low_watermark
    if log_start != end:
        raise RuntimeError(f"delete_records left {topic}[{partition}] starting at {log_start}, "
                           f"not {end}")
    return DeletedRange(partition, first, end)


def _sessions(database_url: str, group: str) -> int:
    """Open PostgreSQL sessions of the sink of ``group``."""
    with psycopg.connect(libpq_url(database_url), autocommit=True, connect_timeout=3) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (application_name(group),)).fetchone()[0]


def _end_offset_reaching(kafka: KafkaConnection, topic: str, partition: int, target: int) -> int:
    """``target``, or the partition's end offset if it stays below it for BACKLOG_WAIT_S."""
    probe = kafka_clients.consumer(kafka, "streamflow-probe")
    try:
        deadline = time.monotonic() + BACKLOG_WAIT_S
        while True:
            _, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high >= target or time.monotonic() > deadline:
                return min(high, target)
            time.sleep(0.2)
    finally:
        probe.close()
