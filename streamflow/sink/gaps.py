"""Offset continuity: a partition read past offsets the sink never saw, and what it lost.

The rule (pure, unit-tested): the sink expects each partition's next message at the offset
it stored with its rows (after a seek) or at the last message read + 1. A message further on
is a *jump*. Not every jump is a loss: compaction, transaction markers (commit/abort
records take an offset the consumer never sees) and aborted transactional messages leave
offsets a consumer legitimately skips, and they are all still *in* the log. Offsets that
retention or ``delete_records`` removed are *below the log start offset* (the partition's
low watermark). So only the part of a jump below the low watermark, read from the broker
when the jump is seen, is a hole: ``lost_range``. user-events is neither compacted nor
written transactionally (the producer is idempotent only), so there every jump is a hole,
but the rule stays exact for a topic that is.

The log start is asked of the partition's leader. While that leader moves (a broker lost, a
restart) the broker cannot say: ``log_start`` asks again, with backoff, while the sink holds
its batch, and never takes "no answer" for "lost" (docs/ARCHITECTURE.md, delivery guarantees).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException

from streamflow.dlq import DeadLetter, Reason, Stage
from streamflow.errors import LogStartUnknown
from streamflow.workers.runtime import Backoff

log = logging.getLogger("streamflow.sink")

# Seconds the sink goes on asking for a partition's log start before it gives up and exits (it
# is started again and reads the batch again from the offsets in PostgreSQL). A leader lost
# with its broker moves after the broker's session timeout (9 s in Kafka 4) and an election;
# 120 s stays well inside the consumer's max.poll.interval.ms (300 s), past which the group
# would count the sink as gone while it waits.
LOG_START_PATIENCE_S = 120.0
# Seconds between two questions: doubling from 0.5 s up to this.
LOG_START_BACKOFF_CAP_S = 5.0


@dataclass(frozen=True)
class OffsetJump:
    """A message not at the offset expected next in its partition."""

    topic: str
    partition: int
    expected: int  # the next offset the sink expected
    offset: int    # the offset the message had

    @property
    def forward(self) -> bool:
        return self.offset > self.expected


@dataclass(frozen=True)
class OffsetGap:
    """Offsets ``first`` .. ``end - 1`` of a partition, gone before the sink read them."""

    topic: str
    partition: int
    first: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.first

    def describe(self) -> str:
        return (f"offsets {self.first}-{self.end - 1} of {self.topic}[{self.partition}] were "
                f"gone (retention or delete-records) before the sink read them: "
                f"{self.count:,} messages lost")


# ``OffsetGap.describe`` read back. raw.dead_letters keeps a hole's range only in its reason
# (the source offset is its first offset): an audit (`make chaos`) reads the rest from there.
_DESCRIBED = re.compile(r"offsets (?P<first>\d+)-(?P<last>\d+) of (?P<topic>.+)"
                        r"\[(?P<partition>\d+)\] were gone")


def described_gap(reason: str) -> OffsetGap | None:
    """The hole an ``offset_gap`` dead letter's reason describes (None: not such a text)."""
    found = _DESCRIBED.match(reason)
    if found is None:
        return None
    return OffsetGap(found["topic"], int(found["partition"]), int(found["first"]),
                     int(found["last"]) + 1)


def lost_range(jump: OffsetJump, log_start: int) -> OffsetGap | None:
    """The part of a forward jump below the partition's log start offset (None: nothing
    lost)."""
    if not jump.forward:
        return None
    end = min(jump.offset, log_start)
    if end <= jump.expected:
        return None  # markers, aborted or compacted records: still in the log, not lost
    return OffsetGap(jump.topic, jump.partition, jump.expected, end)


def log_start(ask: Callable[[], int], jump: OffsetJump, stop, *,
              patience_s: float = LOG_START_PATIENCE_S, sleep=time.sleep,
              clock=time.monotonic) -> int | None:
    """The log start offset of ``jump``'s partition, as ``ask`` (one broker query) reads it,
    asked again with backoff while the broker cannot say. None: ``stop`` came first (the
    batch is not landed, and read again on restart); ``LogStartUnknown`` after
    ``patience_s``. Never a guess: a hole is recorded only where the log start proves it."""
    deadline = clock() + patience_s
    backoff = Backoff(cap_s=LOG_START_BACKOFF_CAP_S)
    while True:
        try:
            return ask()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else exc
        where = f"{jump.topic}[{jump.partition}]"
        if stop:
            log.info("stopping before the log start of %s was known: offsets %d-%d are "
                     "read again on restart", where, jump.expected, jump.offset)
            return None
        if clock() >= deadline:
            raise LogStartUnknown(
                f"the log start of {where} stayed unknown for {patience_s:.0f}s ({error}): "
                f"whether offsets {jump.expected}-{jump.offset - 1} were lost cannot be said; "
                "the sink reads them again from its stored offsets when started again")
        delay = backoff.next()
        log.warning("log start of %s unknown (%s), a leader moving?: asking again in %.1fs "
                    "(offsets %d-%d are not counted as lost on a guess)", where, error, delay,
                    jump.expected, jump.offset - 1)
        sleep(delay)


def gap_dead_letter(gap: OffsetGap, topic_id: str) -> DeadLetter:
    """The hole as an ingest dead letter: no payload, keyed by its first missing offset."""
    return DeadLetter(stage=Stage.INGEST, reason_code=Reason.OFFSET_GAP, reason=gap.describe(),
                      payload=None, key=None, headers=(), source_topic=gap.topic,
                      source_partition=gap.partition, source_offset=gap.first,
                      source_topic_id=topic_id)
