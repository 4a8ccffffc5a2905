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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streamflow.dlq import DeadLetter, Reason, Stage


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


def lost_range(jump: OffsetJump, log_start: int | None) -> OffsetGap | None:
    """The part of a forward jump below the partition's log start offset (None: nothing lost).

    ``log_start`` None (the broker did not say) counts the whole jump: a hole is reported
    rather than skipped silently."""
    if not jump.forward:
        return None
    end = jump.offset if log_start is None else min(jump.offset, log_start)
    if end <= jump.expected:
        return None  # markers, aborted or compacted records: still in the log, not lost
    return OffsetGap(jump.topic, jump.partition, jump.expected, end)


def gap_dead_letter(gap: OffsetGap, topic_id: str) -> DeadLetter:
    """The hole as an ingest dead letter: no payload, keyed by its first missing offset."""
    return DeadLetter(stage=Stage.INGEST, reason_code=Reason.OFFSET_GAP, reason=gap.describe(),
                      payload=None, key=None, headers=(), source_topic=gap.topic,
                      source_partition=gap.partition, source_offset=gap.first,
                      source_topic_id=topic_id)
