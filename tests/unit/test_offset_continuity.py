"""Offset gaps and topic incarnations, the pure parts: which jumps are holes, how a hole is
recorded, which stored offsets belong to a deleted topic, and how status says so."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Uuid

from streamflow.dlq import Reason, Stage
from streamflow.errors import LogStartUnknown
from streamflow.sink.batch import build_batch
from streamflow.sink.gaps import (
    LOG_START_BACKOFF_CAP_S,
    OffsetGap,
    OffsetJump,
    described_gap,
    gap_dead_letter,
    log_start,
    lost_range,
)
from streamflow.sink.incarnation import StoredIncarnation, is_old_incarnation, uuid_text
from streamflow.topics import UNKNOWN_TOPIC_ID
from streamflow.workers.runtime import StopFlag

A = "0b5e1c57-8a43-4cb4-9f83-9f2b8f6fe0a1"
B = "7d0e3f1a-52c9-4e0a-b0a4-2f1f0d6b9e44"


def message(offset: int, partition: int = 0, topic: str = "user-events") -> Message:
    value = orjson.dumps({"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"})
    return Message(topic=topic, partition=partition, offset=offset, value=value, key=b"k")


def jumps(offsets: list[tuple[int, int]], expected: dict | None = None) -> list[OffsetJump]:
    """(partition, offset) messages through build_batch; the jumps it notes."""
    return build_batch([message(o, p) for p, o in offsets], expected=expected).jumps


def test_contiguous_offsets_from_where_the_sink_expects_them_are_no_jump():
    assert jumps([(0, 10), (1, 5), (0, 11), (1, 6)],
                 {("user-events", 0): 10, ("user-events", 1): 5}) == []


def test_a_partition_with_no_expectation_starts_wherever_its_first_message_is():
    assert jumps([(0, 1000), (0, 1001)]) == []


def test_a_first_message_past_the_stored_offset_is_a_jump():
    assert jumps([(0, 1050), (0, 1051)], {("user-events", 0): 1000}) == [
        OffsetJump("user-events", 0, 1000, 1050)]


def test_jumps_inside_a_batch_and_backwards_are_noted_per_partition():
    found = jumps([(0, 1), (1, 7), (0, 2), (0, 9), (1, 3)])
    assert found == [OffsetJump("user-events", 0, 3, 9), OffsetJump("user-events", 1, 8, 3)]
    assert [j.forward for j in found] == [True, False]


def test_build_batch_labels_rows_and_offsets_with_the_topic_id():
    landing = build_batch([message(0)], topic_ids={"user-events": A}).landing
    assert landing.topic_ids == {"user-events": A}
    assert A in landing.rows[0]
    assert landing.next_offsets == {("user-events", 0): 1}


def test_a_jump_entirely_below_the_log_start_is_lost_whole():
    gap = lost_range(OffsetJump("user-events", 0, 1000, 1050), log_start=1050)
    assert gap == OffsetGap("user-events", 0, 1000, 1050)
    assert gap.count == 50


def test_offsets_still_in_the_log_are_not_lost_markers_and_compaction():
    # A transaction marker at 41 (or a compacted record): the log starts well before it.
    assert lost_range(OffsetJump("t", 0, 41, 42), log_start=0) is None
    assert lost_range(OffsetJump("t", 0, 41, 42), log_start=41) is None


def test_only_the_part_below_the_log_start_counts_when_it_is_inside_the_jump():
    assert lost_range(OffsetJump("t", 2, 100, 130), log_start=110) == OffsetGap("t", 2, 100, 110)


class Broker:
    """One log-start query per call: fails (a leader moving) ``failures`` times, then says
    ``start``; the time each wait took is recorded."""

    def __init__(self, failures: int, start: int = 0) -> None:
        self.failures, self.start, self.asked, self.waits = failures, start, 0, []
        self.now = 0.0

    def __call__(self) -> int:
        self.asked += 1
        if self.asked <= self.failures:
            raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
        return self.start

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


MARKER_JUMP = OffsetJump("t", 0, 10, 11)  # a transaction marker at 10: nothing lost


def test_a_log_start_the_broker_cannot_say_yet_is_asked_again_never_guessed():
    broker = Broker(failures=3, start=0)
    start = log_start(broker, MARKER_JUMP, StopFlag(), sleep=broker.sleep,
                      clock=lambda: broker.now)
    assert (start, broker.asked, broker.waits) == (0, 4, [0.5, 1.0, 2.0])
    assert lost_range(MARKER_JUMP, start) is None


def test_the_questions_back_off_up_to_a_cap_and_give_up_after_the_patience():
    broker = Broker(failures=10**6)
    with pytest.raises(LogStartUnknown, match=r"log start of t\[0\] stayed unknown for 60s .*"
                       r"whether offsets 10-10 were lost cannot be said"):
        log_start(broker, MARKER_JUMP, StopFlag(), patience_s=60, sleep=broker.sleep,
                  clock=lambda: broker.now)
    assert max(broker.waits) == LOG_START_BACKOFF_CAP_S
    assert 60 <= broker.now < 60 + LOG_START_BACKOFF_CAP_S


def test_a_stop_while_the_broker_cannot_say_lands_nothing_of_the_batch():
    stop = StopFlag()
    stop._handle(15, None)  # SIGTERM
    broker = Broker(failures=1)
    assert log_start(broker, MARKER_JUMP, stop, sleep=broker.sleep) is None


def test_a_backward_jump_loses_nothing():
    assert lost_range(OffsetJump("t", 0, 500, 0), log_start=0) is None


def test_the_hole_is_an_ingest_dead_letter_at_its_first_missing_offset():
    letter = gap_dead_letter(OffsetGap("user-events", 0, 1000, 1050), B)
    assert (letter.stage, letter.reason_code) == (Stage.INGEST, Reason.OFFSET_GAP)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "user-events", 0, 1000)
    assert letter.source_topic_id == B
    assert letter.payload is None and letter.key is None and letter.headers == ()
    assert letter.reason == ("offsets 1000-1049 of user-events[0] were gone (retention or "
                             "delete-records) before the sink read them: 50 messages lost")


def test_the_range_a_hole_records_reads_back_from_its_reason():
    """An audit (`make chaos`) needs the range, which raw.dead_letters keeps in the reason."""
    for gap in (OffsetGap("user-events", 0, 1000, 1050), OffsetGap("chaos-1f.x_y", 12, 7, 8)):
        assert described_gap(gap_dead_letter(gap, B).reason) == gap
    assert described_gap("value is 1,048,576 bytes, over the limit") is None


@pytest.mark.parametrize("stored, live, old", [
    (A, A, False),
    (A, B, True),
    (None, B, False),              # stored before ids were recorded: trusted
    (UNKNOWN_TOPIC_ID, B, False),  # the nil id means "not known": trusted
    (A, None, False),              # the broker did not say: trusted
])
def test_which_stored_offsets_belong_to_a_deleted_incarnation(stored, live, old):
    assert is_old_incarnation(stored, live) is old


def test_kafka_topic_ids_become_uuid_text_even_with_the_high_bit_set():
    assert uuid_text(Uuid(0x0123456789ABCDEF, -1)) == "01234567-89ab-cdef-ffff-ffffffffffff"


def test_status_names_the_incarnation_of_the_stored_offsets():
    assert StoredIncarnation("user-events", {}, A).describe() == (
        "user-events: no offsets stored yet")
    assert StoredIncarnation("user-events", {A: 3}, A).describe() == (
        f"user-events: offsets of topic id {A} (3 partitions)")
    stale = StoredIncarnation("user-events", {A: 3}, B)
    assert stale.outdated
    assert f"deleted and created again as {B}" in stale.describe()
    assert not StoredIncarnation("user-events", {None: 3}, B).outdated
