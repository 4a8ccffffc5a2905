"""Pure parts of dead-letter operations: safe display, durations, pacing, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streamflow.dlq import Stage
from streamflow.dlq_ops.display import escape, preview, safe_payload
from streamflow.dlq_ops.replay import REPLAY_HEADER, Pacer, check_topic, message
from streamflow.dlq_ops.selection import Selection, StoredDeadLetter, parse_duration
from streamflow.errors import ReplayTopicRefused, SettingsError


@pytest.mark.parametrize("raw, shown", [
    ("plain text", "plain text"),
    ("bell\x07 and escape\x1b[31m", "bell\\x07 and escape\\x1b[31m"),
    ("rtl \u202e override", "rtl \\u202e override"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\nbreak", "line\\x0abreak"),
    ("emoji 🎉 and é", "emoji 🎉 and é"),
])
def test_escape_makes_control_and_format_characters_visible(raw, shown):
    assert escape(raw) == shown


def test_newlines_can_be_kept_for_multi_line_display():
    assert escape("a\nb\x1b", keep_newlines=True) == "a\nb\\x1b"


def test_payloads_that_are_not_utf8_are_shown_as_hex():
    safe = safe_payload(b"\xff\xfe\x00A")
    assert (safe.encoding, safe.text, safe.size) == ("hex", "ff fe 00 41", 4)
    assert preview(b"\xff\xfe") == "hex: ff fe"


def test_empty_payloads_and_long_previews():
    assert safe_payload(None).encoding == "empty" and preview(b"") == "(empty)"
    cut = preview(b"x" * 500, width=20)
    assert len(cut) == 20 and cut.endswith("…")


@pytest.mark.parametrize("text, expected", [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)), ("1w", timedelta(weeks=1)), ("1.5h", timedelta(minutes=90)),
])
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "2 hours", "-1h", "1y"])
def test_bad_durations_say_what_is_expected(text):
    with pytest.raises(SettingsError, match="15m, 2h, 7d"):
        parse_duration(text)


def test_pacing_holds_the_rate_over_every_chunk_with_a_fake_clock():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(5.0, clock=lambda: now[0], sleep=sleep)
    sent_at = []
    for chunk in (range(4), range(4), range(3)):
        for _ in pacer.paced(chunk):
            sent_at.append(now[0])
        now[0] += 0.1  # the next chunk is read meanwhile: its time counts towards the pace
    assert sent_at == pytest.approx([i / 5.0 for i in range(11)])
    unpaced = Pacer(None, clock=lambda: 0.0, sleep=slept.append)
    assert list(unpaced.paced(range(3))) == [0, 1, 2]


def test_filters_are_bound_parameters_never_sql_text():
    selection = Selection(stage=Stage.CONTRACT, reason="50%_off'; DROP TABLE x; --",
                          since=timedelta(hours=1), source_topic="t", ids=(3, 4))
    clause, params = selection.where()
    rendered = repr(clause)
    assert "DROP TABLE" not in rendered and "50%" not in rendered
    assert params["reason"] == "50%_off'; DROP TABLE x; --"
    assert params["reason_like"] == "%50\\%\\_off'; DROP TABLE x; --%"
    assert params["stage"] == "contract" and params["ids"] == [3, 4]
    assert Selection().where()[1] == {}


def test_a_pinned_selection_counts_since_back_from_the_moment_it_was_planned():
    planned = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    pinned = Selection(since=timedelta(hours=2), source_topic="t").pinned(planned)
    clause, params = pinned.where()
    assert "since" not in params and params["created_from"] == planned - timedelta(hours=2)
    assert Selection(source_topic="t").pinned(planned) == Selection(source_topic="t")


def test_a_topic_the_deployment_does_not_allow_is_refused_before_anything_is_read():
    check_topic("user-events", ("user-events",))
    with pytest.raises(ReplayTopicRefused, match="'notifications' refused.*user-events"):
        check_topic("notifications", ("user-events",))


def test_a_replayed_message_keeps_its_bytes_and_headers_and_links_its_dead_letter():
    letter = StoredDeadLetter(
        id=42, created_at=None, stage="ingest", reason_code="not_json", reason="x",
        payload=b"{broken", message_key=b"user-1",
        headers={"schema_version": "1", "dlq.reason": "old", REPLAY_HEADER: "7"},
        raw_headers=None, event_id=None, source_topic="user-events", source_partition=0,
        source_offset=9, replay_count=0, last_replayed_at=None, failures=None)
    key, value, headers = message(letter)
    assert (key, value) == (b"user-1", b"{broken")
    assert headers == [("schema_version", b"1"), (REPLAY_HEADER, b"42")]


def test_a_replay_sends_headers_that_are_not_text_byte_for_byte():
    """The text column replaced the bytes; raw_headers kept them, and the replay sends them."""
    from dataclasses import replace

    from streamflow.dlq import raw_headers_json

    sent = (("blob", b"\xff\xfe"), ("blob", b"again"), ("dlq.reason", b"forged"))
    letter = StoredDeadLetter(
        id=42, created_at=None, stage="ingest", reason_code="not_json", reason="x",
        payload=b"{broken", message_key=None, headers={"blob": "again"},
        raw_headers=orjson.loads(raw_headers_json(sent)), event_id=None,
        source_topic="user-events", source_partition=0, source_offset=9, replay_count=0,
        last_replayed_at=None, failures=None)
    assert message(letter)[2] == [*sent[:2], (REPLAY_HEADER, b"42")]
    assert message(replace(letter, raw_headers=None))[2] == [("blob", b"again"),
                                                              (REPLAY_HEADER, b"42")]
