"""`make chaos`, the pure parts: the order of the faults, the verdict on a result, and the
table docs/RELIABILITY.md shows."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from benchmarks.chaos import QUICK, ChaosPlan, problems
from benchmarks.report import chaos_table


def test_kills_are_spread_around_the_other_faults():
    assert ChaosPlan().faults() == [
        "sink_kill", "oversized", "sink_kill", "poison_headers", "sink_kill", "offset_gap",
        "sink_kill", "postgres", "sink_kill", "broker"]
    assert QUICK.faults() == ["sink_kill", "oversized", "sink_kill", "poison_headers",
                              "offset_gap", "postgres"]


def clean(**changes) -> dict:
    """A result as a clean QUICK run leaves it: 50,000 events + the oversized message, of
    which 1,000 were deleted unread and recorded as one hole."""
    result = {
        "plan": asdict(QUICK), "faults": [
            {"fault": "offset_gap", "at_s": 6.7, "took_s": 0.4, "covered_after": 20_000,
             "partition": 0, "deleted_from": 16_000, "deleted_to": 17_000,
             "deleted_unread": 1_000}],
        "produced": 50_000, "producer_exit_code": 0, "injected": 2, "kafka_messages": 50_002,
        "landed": 48_500, "dead_lettered": 502, "gone_by_delete_records": 1_000,
        "recorded_as_offset_gap": 1_000, "offset_gap_letters": 1, "offset_gaps_as_deleted": True,
        "oversized": [{"partition": 1, "offset": 9_000, "size": 999_900, "rows": 0,
                       "dead_letters": 1, "reason_codes": ["too_large"],
                       "stored_bytes": 999_900, "headers_kept": None}],
        "poison_headers": [{"partition": 1, "offset": 9_500, "size": 44, "rows": 0,
                            "dead_letters": 1, "reason_codes": ["not_json"],
                            "stored_bytes": 44, "headers_kept": True}],
        "duplicates": 0, "lost": 0,
        "recreation": {"old_topic_id": "a", "topic_id": "b", "produced": 5_000,
                       "producer_exit_code": 0, "kafka_messages": 5_000, "landed": 4_950,
                       "dead_lettered": 50, "offset_gap_letters": 0, "duplicates": 0,
                       "lost": 0, "old_incarnation_kept": True},
        "sink_exit_code_on_sigterm": 0, "seconds": 42.0,
    }
    return result | changes


def test_a_clean_run_has_no_problems():
    assert problems(clean()) == []


@pytest.mark.parametrize("changes, problem", [
    # A sink that jumps over a hole: the deleted offsets have no record at all.
    ({"recorded_as_offset_gap": 0, "offset_gap_letters": 0, "offset_gaps_as_deleted": False,
      "lost": 1_000}, "1000 offsets lost"),
    ({"gone_by_delete_records": 0, "recorded_as_offset_gap": 0, "offset_gap_letters": 0,
      "landed": 49_500}, "the offset gap fault deleted nothing"),
    ({"offset_gaps_as_deleted": False},
     "the offset_gap dead letters do not cover exactly the offsets deleted unread"),
    ({"produced": 50_001}, "messages in Kafka are not the acknowledged events plus chaos's "
                           "own"),
    ({"oversized": [{"partition": 1, "offset": 9_000, "size": 999_900, "rows": 0,
                     "dead_letters": 2, "reason_codes": ["too_large"],
                     "stored_bytes": 999_900}]}, "the oversized message is not one"),
    # The poison-header message landed without every header byte (or stopped the sink).
    ({"poison_headers": [{"partition": 1, "offset": 9_500, "size": 44, "rows": 0,
                          "dead_letters": 1, "reason_codes": ["not_json"], "stored_bytes": 44,
                          "headers_kept": False}]}, "the poison-header message is not one"),
    ({"poison_headers": []}, "poison-header messages missing"),
])
def test_each_broken_promise_is_named(changes, problem):
    assert any(p.startswith(problem) for p in problems(clean(**changes))), problems(
        clean(**changes))


def test_a_re_created_topic_is_judged_on_its_own():
    broken = clean()["recreation"] | {"landed": 4_000, "lost": 950}
    assert problems(clean(recreation=broken)) == [
        "new incarnation: 950 lost, 0 recorded twice",
        "new incarnation: rows + dead letters are not the messages in Kafka"]
    assert problems(clean(recreation=None)) == [
        "the topic was not created again under a new id"]


def test_the_table_shows_the_edge_faults():
    table = chaos_table(clean())
    assert "| oversized messages sent | 999,900 bytes: 1 `too_large` dead letter keeping " \
           "999,900 bytes, 0 rows |" in table
    assert "| gone by delete_records, recorded as offset_gap | 1,000 deleted unread, 1,000 in " \
           "1 offset_gap dead letter(s) |" in table
    assert "| after re-creation: **lost** / **duplicates** | **0** / **0** |" in table
    assert "| old incarnation's rows and dead letters kept | yes |" in table
    assert "offset_gap at 6.7 s (took 0.4 s)" in table
