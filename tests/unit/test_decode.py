import uuid
from datetime import UTC, datetime

import orjson
import pytest

from streamflow import contract
from streamflow.db.tables import LandingRow, events
from streamflow.dlq import DeadLetter, Reason
from streamflow.sink.decode import decode

EID = "0b7e3c1e-9a55-4c62-8f1d-3b7a0e42f00d"



def _decode(value, **kw):
    """A dead letter, or the row's values read as a LandingRow."""
    out = decode(value, b"user-1", lambda: [("h", b"v")], "user-events", 2, 41, **kw)
    return out if isinstance(out, DeadLetter) else LandingRow._make(out)


def test_a_valid_event_becomes_a_typed_row():
    event = {"event_id": EID.upper(), "schema_version": 1, "event_type": "purchase",
             "user_id": "u1", "email_hash": "a" * 64, "email_masked": "j***@example.com",
             "occurred_at": "2026-11-25T10:00:01.250Z", "country": "DE", "device": "mobile",
             "amount_cents": 1999}
    row = _decode(orjson.dumps(event))
    assert not isinstance(row, DeadLetter)
    assert row.event_id == EID
    assert row.occurred_at == datetime(2026, 11, 25, 10, 0, 1, 250000, tzinfo=UTC)
    assert row.amount_cents == 1999 and row.success is None
    assert orjson.loads(row.payload) == event
    assert (row.kafka_topic, row.kafka_partition, row.kafka_offset) == (
        "user-events", 2, 41)


def test_fields_of_the_wrong_type_land_as_null():
    event = {"event_id": EID, "schema_version": "1", "amount_cents": True, "success": "yes",
             "occurred_at": "yesterday", "user_id": 42}
    row = _decode(orjson.dumps(event))
    for name in ("schema_version", "amount_cents", "success", "occurred_at", "user_id"):
        assert getattr(row, name) is None, name


def test_huge_integers_do_not_overflow_bigint():
    row = _decode(orjson.dumps({"event_id": EID, "amount_cents": 2**63}))
    assert row.amount_cents is None


@pytest.mark.parametrize("occurred_at", ["9999-12-31T23:59:59-05:00",
                                         "0001-01-01T00:00:00+05:00"])
def test_a_time_its_offset_carries_past_the_calendar_lands_untyped(occurred_at):
    """Its own calendar has the date, UTC does not: the row lands with no typed time (the
    contract then rejects it), not as a decoder error."""
    assert contract.parse_time(occurred_at) is None
    row = _decode(orjson.dumps({"event_id": EID, "occurred_at": occurred_at}))
    assert not isinstance(row, DeadLetter) and row.occurred_at is None


@pytest.mark.parametrize(("value", "reason"), [
    (None, Reason.EMPTY),
    (b"", Reason.EMPTY),
    (b"\xff\xfe\x00garbage", Reason.NOT_UTF8),
    ("café".encode("latin-1"), Reason.NOT_UTF8),
    (b'{"event_id": "x"', Reason.NOT_JSON),
    (b"hello world", Reason.NOT_JSON),
    (b"NaN", Reason.NOT_JSON),
    ("\ufeff{}".encode(), Reason.NOT_JSON),
    (b'{"event_id": "\\ud800"}', Reason.NOT_JSON),
    (b"[1, 2, 3]", Reason.NOT_OBJECT),
    (b'"a string"', Reason.NOT_OBJECT),
    (b"42", Reason.NOT_OBJECT),
    (b"null", Reason.NOT_OBJECT),
    (b"{}", Reason.MISSING_EVENT_ID),
    (b'{"event_id": null}', Reason.MISSING_EVENT_ID),
    (b'{"event_id": 12345}', Reason.BAD_EVENT_ID),
    (b'{"event_id": "not-a-uuid"}', Reason.BAD_EVENT_ID),
    (b'{"event_id": ""}', Reason.BAD_EVENT_ID),
    (b'{"event_id": "0b7e3c1e9a554c628f1d3b7a0e42f00d"}', Reason.BAD_EVENT_ID),
    (b"[" * 2000 + b"]" * 2000, Reason.NOT_JSON),
])
def test_what_cannot_land_is_dead_lettered_with_a_reason(value, reason):
    letter = _decode(value)
    assert isinstance(letter, DeadLetter)
    assert letter.reason_code is reason
    assert letter.reason
    assert letter.payload == value and letter.key == b"user-1"
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        "user-events", 2, 41)
    assert letter.headers == (("h", b"v"),)


def test_too_large():
    value = orjson.dumps({"event_id": str(uuid.uuid4()), "pad": "x" * 100})
    letter = _decode(value, max_bytes=50)
    assert isinstance(letter, DeadLetter) and letter.reason_code is Reason.TOO_LARGE


def test_a_decoder_bug_is_dead_lettered_not_raised(monkeypatch):
    from streamflow.sink import decode as module

    def broken(*_args):
        raise RuntimeError("boom")

    monkeypatch.setattr(module, "to_row", broken)
    letter = _decode(orjson.dumps({"event_id": EID}))
    assert letter.reason_code is Reason.DECODER_ERROR and "boom" in letter.reason


def test_unreadable_headers_do_not_lose_the_message():
    def broken_headers():
        raise RuntimeError("boom")

    letter = decode(b"{}", None, broken_headers, "t", 0, 0)
    assert letter.reason_code is Reason.MISSING_EVENT_ID and letter.headers == ()


def test_dead_letter_headers_say_why_and_where_from():
    letter = _decode(b"nope")
    headers = dict(letter.kafka_headers())
    assert headers["dlq.reason_code"] == b"not_json"
    assert headers["dlq.source_offset"] == b"41"
    assert headers["h"] == b"v"


def test_mistyped_marks_only_rows_with_a_field_its_column_could_not_hold():
    complete = {"event_id": EID, "schema_version": 1, "event_type": "page_view", "user_id": "u",
                "email_hash": "a" * 64, "email_masked": "j***@example.com",
                "occurred_at": "2026-11-25T10:00:01.250Z", "country": "DE", "device": "mobile"}
    assert _decode(orjson.dumps(complete)).mistyped is False  # optional ones absent
    assert _decode(orjson.dumps({**complete, "success": None})).mistyped is False
    for name, bad in (("success", "yes"), ("amount_cents", 1.5), ("user_id", 42),
                      ("occurred_at", "yesterday")):
        assert _decode(orjson.dumps({**complete, name: bad})).mistyped is True, name
    assert _decode(orjson.dumps({"event_id": EID})).mistyped is False  # all missing


def test_the_message_travels_with_its_row():
    from streamflow.db.landing import key_from_copy

    sent = '{"event_id": "' + EID + '"}'  # spaces and all
    row = LandingRow._make(decode(sent.encode(), b"\x00\xffkey",
                                  lambda: [("trace", b"t-1")], "user-events", 0, 7,
                                  topic_id="id-1"))
    assert key_from_copy(row.message_key) == b"\x00\xffkey"
    assert orjson.loads(row.headers) == {"trace": "t-1"}
    assert row.raw_headers is None  # the text column holds them exactly
    assert row.payload == sent  # verbatim
    assert row.kafka_topic_id == "id-1"


def test_a_landing_row_is_the_contract_then_the_message_and_its_source():
    """COPY writes rows by position: the record's fields are raw.events' columns, the
    contract's fields first in its order."""
    assert LandingRow._fields[:len(contract.FIELDS)] == tuple(contract.FIELDS)
    assert set(LandingRow._fields) <= set(events.c.keys())
    row = decode(orjson.dumps({"event_id": EID}), None, lambda: None, "user-events", 2, 41)
    assert type(row) is tuple and len(row) == len(LandingRow._fields)  # plain: see decode
    assert LandingRow._make(row).kafka_offset == 41


def test_headers_that_are_not_text_land_byte_for_byte():
    """The text column replaces bytes that are not UTF-8; raw_headers keeps every byte, so a
    contract dead letter or a replay of the event carries the original headers."""
    from streamflow.dlq import stored_headers

    sent = [("blob", b"\xff" * 1000), ("blob", b"second")]
    row = LandingRow._make(decode(orjson.dumps({"event_id": EID}), None, lambda: sent,
                                  "user-events", 0, 7))
    assert stored_headers(orjson.loads(row.headers), orjson.loads(row.raw_headers)) == tuple(sent)
