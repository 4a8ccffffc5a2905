"""What one consume() call brought, decoded (pure, no I/O): the landing it makes, and what the
consumer keeps about it until that landing committed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from streamflow import topics
from streamflow.contract import MAX_EVENT_BYTES
from streamflow.db.landing import Landing
from streamflow.db.tables import LandingRow
from streamflow.dlq import DeadLetter
from streamflow.sink.decode import decode
from streamflow.sink.gaps import OffsetGap, OffsetJump


@dataclass(frozen=True)
class Batch:
    landing: Landing        # rows, dead letters and offsets: one transaction
    messages: int           # consumed, counted once landed
    gaps: list[OffsetGap]   # holes the landing records, counted once it committed
    produced_ms: list[int]  # Kafka timestamps of a sample of the messages (produce->row)


class Decoded(NamedTuple):
    landing: Landing
    jumps: list[OffsetJump]  # messages not at the offset expected next (see sink.gaps)


def build_batch(messages, max_event_bytes: int = MAX_EVENT_BYTES,
                topic_ids: Mapping[str, str] | None = None,
                expected: Mapping[tuple[str, int], int] | None = None) -> Decoded:
    """Decode messages into rows and dead letters, note the offsets to store, and every
    offset jump.

    ``topic_ids``: topic name -> id of the incarnation being read (see topics).
    ``expected``: (topic, partition) -> the offset its next message should have; a partition
    absent there has no expectation for its first message."""
    landing = Landing(topic_ids=dict(topic_ids or {}))
    rows, letters, next_offsets = landing.rows, landing.dead_letters, landing.next_offsets
    ids, expected, jumps = landing.topic_ids, expected or {}, []
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
    return Decoded(landing, jumps)


def keep_partitions(landing: Landing, assigned: set[tuple[str, int]]) -> Landing:
    """The part of ``landing`` from partitions still ``assigned`` (the others' are another
    consumer's now)."""
    return Landing(
        rows=[r for r in map(LandingRow._make, landing.rows)
              if (r.kafka_topic, r.kafka_partition) in assigned],
        dead_letters=[d for d in landing.dead_letters
                      if (d.source_topic, d.source_partition) in assigned],
        next_offsets={tp: o for tp, o in landing.next_offsets.items() if tp in assigned},
        topic_ids=landing.topic_ids,
    )
