"""A corpus of hostile and malformed Kafka messages, as data, each with where it must end.

Every item is (kind, value, key, headers, expected outcome). The outcomes follow from
streamflow/sink/decode.py (what cannot land: ingest dead letters), streamflow/db/landing.py
(what PostgreSQL refuses: ``db_rejected``; a repeated event_id: dropped as a duplicate,
the first copy kept) and streamflow/validation.py (what lands but breaks the contract: a
``contract`` dead letter with every reason), and were checked against the real services by
tests/integration/test_bad_input_corpus.py.

``corpus()`` builds fresh event ids on every call: raw.events is idempotent on event_id for
the whole test session, so a corpus sent twice would otherwise land once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson

from streamflow import contract
from streamflow.dlq import Reason, Stage

VALID = "valid"          # lands in raw.events, passes the contract: a streamflow.notifications row
DUPLICATE = "duplicate"  # an event_id already sent: no row, no dead letter (the first copy stays)


@dataclass(frozen=True)
class Expect:
    """Where a message ends: an ingest or contract dead letter, a valid row, or a duplicate."""

    outcome: str                    # Stage.INGEST | Stage.CONTRACT | VALID | DUPLICATE
    reason_code: Reason | None = None
    # Substrings the dead letter's reason must hold (contract: one per failed rule).
    reasons: tuple[str, ...] = ()
    duplicate_of: str | None = None  # kind whose first copy the duplicate must leave alone


def ingest(reason: Reason, *reasons: str) -> Expect:
    return Expect(Stage.INGEST, reason, reasons)


def rejected_by_contract(*reasons: str) -> Expect:
    return Expect(Stage.CONTRACT, Reason.CONTRACT, reasons)


VALID_EVENT = Expect(VALID)


@dataclass(frozen=True)
class BadInput:
    kind: str
    value: bytes | None
    key: bytes | None = b"corpus"
    headers: list[tuple[str, bytes | None]] | None = field(
        default_factory=lambda: list(contract.HEADERS))
    expect: Expect = VALID_EVENT

    @property
    def event_id(self) -> str | None:
        """The event_id the message carries, when it is a JSON object with a string id."""
        try:
            event = orjson.loads(self.value or b"")
        except orjson.JSONDecodeError:
            return None
        value = event.get("event_id") if isinstance(event, dict) else None
        return value if isinstance(value, str) else None


INJECTION = "'; DROP TABLE raw.events; --"
SCRIPT = "<script>alert(document.cookie)</script>"


class _Events:
    """Valid contract-v1 events with fresh ids, one hour before ``now`` (in the past, so the
    windows they touch are not the ones tests that run "now" look at)."""

    def __init__(self, now: datetime) -> None:
        self.at = now - timedelta(hours=1)

    def __call__(self, event_type: str = "page_view", **fields) -> dict:
        event = {"event_id": str(uuid.uuid4()), "schema_version": contract.SCHEMA_VERSION,
                 "event_type": event_type, "user_id": "user-corpus",
                 "email_hash": "c0" * 32, "email_masked": "c***@example.com",
                 "occurred_at": contract.format_time(self.at), "country": "DE",
                 "device": "mobile"}
        if event_type == "login":
            event["success"] = True
        if event_type == "purchase":
            event["amount_cents"] = 1999
        event.update(fields)
        return {k: v for k, v in event.items() if v is not ...}  # `...` removes a field

    def nested(self, depth: int) -> bytes:
        """An event with a ``depth``-deep array in an extra field (JSON text, by hand)."""
        head = orjson.dumps(self())[:-1]
        return head + b',"nested":' + b"[" * depth + b"]" * depth + b"}"

    def padded_to(self, size: int) -> bytes:
        """A valid event of exactly ``size`` bytes (padding in an extra field)."""
        empty = orjson.dumps(self(padding=""))
        return orjson.dumps({**orjson.loads(empty), "padding": "x" * (size - len(empty))})


def _raw(event_id: str, rest: str) -> bytes:
    """JSON-ish text by hand, for what orjson cannot be made to write."""
    return ('{"event_id": "' + event_id + '"' + rest).encode()


def corpus(now: datetime | None = None) -> list[BadInput]:
    now = now or datetime.now(UTC)
    ev = _Events(now)
    enc = orjson.dumps
    first = ev("login", user_id="user-first-copy")
    return [
        # -- cannot land: no value -------------------------------------------------------------
        BadInput("tombstone (no value)", None, expect=ingest(Reason.EMPTY)),
        BadInput("empty value", b"", expect=ingest(Reason.EMPTY)),
        # -- cannot land: not JSON ---------------------------------------------------------------
        BadInput("whitespace only", b" \t\r\n ", expect=ingest(Reason.NOT_JSON, "empty")),
        BadInput("truncated JSON", enc(ev())[:-7], expect=ingest(Reason.NOT_JSON)),
        BadInput("trailing comma", _raw(str(uuid.uuid4()), ', "user_id": "u",}'),
                 expect=ingest(Reason.NOT_JSON)),
        BadInput("single quotes", f"{{'event_id': '{uuid.uuid4()}'}}".encode(),
                 expect=ingest(Reason.NOT_JSON)),
        BadInput("NaN literal", _raw(str(uuid.uuid4()), ', "amount_cents": NaN}'),
                 expect=ingest(Reason.NOT_JSON)),
        BadInput("number beyond double (1e400)", _raw(str(uuid.uuid4()), ', "x": 1e400}'),
                 expect=ingest(Reason.NOT_JSON, "infinity")),
        BadInput("two JSON documents", enc(ev()) + enc(ev()), expect=ingest(Reason.NOT_JSON)),
        BadInput("UTF-8 BOM prefix", b"\xef\xbb\xbf" + enc(ev()),
                 expect=ingest(Reason.NOT_JSON, "BOM")),
        BadInput("raw NUL byte inside a string", _raw(str(uuid.uuid4()), ', "x": "a\x00b"}'),
                 expect=ingest(Reason.NOT_JSON)),
        BadInput("lone surrogate escape", _raw(str(uuid.uuid4()), ', "user_id": "\\udc00"}'),
                 expect=ingest(Reason.NOT_JSON)),
        BadInput("arrays nested 5000 deep", b"[" * 5000 + b"]" * 5000,
                 expect=ingest(Reason.NOT_JSON, "depth")),
        BadInput("event with a field nested 2000 deep", ev.nested(2000),
                 expect=ingest(Reason.NOT_JSON, "depth")),
        BadInput("XML", b"<event><id>1</id></event>", expect=ingest(Reason.NOT_JSON)),
        # -- cannot land: not UTF-8 --------------------------------------------------------------
        BadInput("latin-1 text", '{"user_id": "café"}'.encode("latin-1"),
                 expect=ingest(Reason.NOT_UTF8)),
        BadInput("binary garbage", b"\xff\xfe\x00\x01\x80\x81", expect=ingest(Reason.NOT_UTF8)),
        BadInput("UTF-8 overlong '/' (C0 AF)",
                 _raw(str(uuid.uuid4()), ', "x": "@"}').replace(b"@", b"\xc0\xaf"),
                 expect=ingest(Reason.NOT_UTF8)),
        BadInput("UTF-8 encoded surrogate (ED A0 80)",
                 _raw(str(uuid.uuid4()), ', "x": "@"}').replace(b"@", b"\xed\xa0\x80"),
                 expect=ingest(Reason.NOT_UTF8)),
        BadInput("truncated multi-byte sequence", enc(ev(user_id="€"))[:-30] + b"\xe2\x82",
                 expect=ingest(Reason.NOT_UTF8)),
        # -- cannot land: JSON, but not an object ------------------------------------------------
        BadInput("JSON array", enc([ev()]), expect=ingest(Reason.NOT_OBJECT, "list")),
        BadInput("JSON string", b'"event"', expect=ingest(Reason.NOT_OBJECT, "str")),
        BadInput("JSON number", b"42.5", expect=ingest(Reason.NOT_OBJECT, "float")),
        BadInput("JSON null", b"null", expect=ingest(Reason.NOT_OBJECT, "NoneType")),
        BadInput("JSON true", b"true", expect=ingest(Reason.NOT_OBJECT, "bool")),
        # -- cannot land: no usable event_id -----------------------------------------------------
        BadInput("empty object", b"{}", expect=ingest(Reason.MISSING_EVENT_ID)),
        BadInput("event without event_id", enc(ev(event_id=...)),
                 expect=ingest(Reason.MISSING_EVENT_ID)),
        BadInput("null event_id", enc(ev(event_id=None)), expect=ingest(Reason.MISSING_EVENT_ID)),
        BadInput("numeric event_id", enc(ev(event_id=7)), expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("non-UUID event_id", enc(ev(event_id="evt-1234")),
                 expect=ingest(Reason.BAD_EVENT_ID, "evt-1234")),
        BadInput("empty-string event_id", enc(ev(event_id="")),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("UUID without hyphens", enc(ev(event_id=uuid.uuid4().hex)),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("UUID in braces", enc(ev(event_id="{" + str(uuid.uuid4()) + "}")),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("UUID with a leading space", enc(ev(event_id=" " + str(uuid.uuid4()))),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("object event_id", enc(ev(event_id={"uuid": str(uuid.uuid4())})),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        BadInput("SQL injection as event_id", enc(ev(event_id=INJECTION)),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        # `$` would also match before a final newline: the decoder matches the whole string.
        BadInput("UUID with a trailing newline", enc(ev(event_id=str(uuid.uuid4()) + "\n")),
                 expect=ingest(Reason.BAD_EVENT_ID)),
        # -- cannot land: too large --------------------------------------------------------------
        BadInput("200 KB payload", ev.padded_to(200_000),
                 expect=ingest(Reason.TOO_LARGE, "200000 bytes")),
        BadInput("one byte over the limit", ev.padded_to(contract.MAX_EVENT_BYTES + 1),
                 expect=ingest(Reason.TOO_LARGE, str(contract.MAX_EVENT_BYTES))),
        # -- decodes, but PostgreSQL refuses the row ---------------------------------------------
        # (An escaped NUL in an extra field lands: raw.events keeps the payload as json text,
        # verbatim; only a typed text column cannot hold NUL.)
        BadInput("escaped NUL in an extra field", enc(ev(note="nul \u0000 here"))),
        BadInput("escaped NUL in user_id", enc(ev(user_id="a\u0000b")),
                 expect=ingest(Reason.DB_REJECTED, "PostgreSQL rejected the row")),
        # -- hostile key and headers on a reject -------------------------------------------------
        BadInput("not JSON with binary key and hostile headers", b"not json",
                 key=b"\x00\xff binary key",
                 headers=[("origin", b"corpus"), ("nul", b"a\x00b"), ("binary", b"\xff\xfe"),
                          ("empty", None), ("dlq.reason_code", b"forged")],
                 expect=ingest(Reason.NOT_JSON)),
        # -- lands, then the contract rejects it -------------------------------------------------
        # Its dead letter is the message as sent: these bytes (spaces, key order), key, headers.
        BadInput("contract reject in its own layout, key and headers",
                 json.dumps(dict(reversed(ev(event_type="teleport").items())), indent=1
                            ).encode(),
                 key=b"original-key", headers=[*contract.HEADERS, ("trace-id", b"t-42")],
                 expect=rejected_by_contract("event_type: isin")),
        BadInput("schema_version 2", enc(ev(schema_version=2)),
                 expect=rejected_by_contract("schema_version: equal_to(1)")),
        BadInput('schema_version "1" (string)', enc(ev(schema_version="1")),
                 expect=rejected_by_contract("schema_version: expected int (64-bit), got '1'")),
        BadInput("schema_version true", enc(ev(schema_version=True)),
                 expect=rejected_by_contract("schema_version: expected int (64-bit), got True")),
        BadInput("amount_cents as a string", enc(ev("purchase", amount_cents="1999")),
                 expect=rejected_by_contract("amount_cents: expected int (64-bit), got '1999'",
                                             "purchase_has_amount")),
        BadInput('success "yes"', enc(ev("login", success="yes")),
                 expect=rejected_by_contract("success: expected bool, got 'yes'",
                                             "login_has_success")),
        BadInput("negative amount", enc(ev("purchase", amount_cents=-500)),
                 expect=rejected_by_contract("amount_cents: greater_than(0)")),
        BadInput("zero amount", enc(ev("purchase", amount_cents=0)),
                 expect=rejected_by_contract("amount_cents: greater_than(0)")),
        # orjson reads 2**70 as a float (the typed column is NULL); the contract step reads
        # the jsonb back as an int too big for Int64 and drops it: only the rule is reported.
        BadInput("amount_cents 2**70", enc(ev("purchase", amount_cents=...))[:-1]
                 + b',"amount_cents":' + str(2**70).encode() + b"}",
                 expect=rejected_by_contract("purchase_has_amount")),
        BadInput("unknown event_type", enc(ev("teleport")),
                 expect=rejected_by_contract("event_type: isin")),
        BadInput("upper-case event_type", enc(ev("LOGIN", success=True)),
                 expect=rejected_by_contract("event_type: isin")),
        BadInput("script tag as event_type", enc(ev(SCRIPT)),
                 expect=rejected_by_contract("event_type: isin")),
        BadInput("occurred_at in year 2200", enc(ev(occurred_at="2200-01-01T00:00:00.000Z")),
                 expect=rejected_by_contract("not_in_the_future")),
        BadInput("occurred_at 10 minutes ahead", enc(ev(occurred_at=contract.format_time(
            now + timedelta(minutes=10)))),
                 expect=rejected_by_contract("not_in_the_future")),
        BadInput("occurred_at in year 1900", enc(ev(occurred_at="1900-01-01T00:00:00.000Z")),
                 expect=rejected_by_contract("occurred_at: greater_than_or_equal_to")),
        BadInput("occurred_at not a date", enc(ev(occurred_at="not a date")),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("occurred_at as epoch millis", enc(ev(occurred_at=1_700_000_000_000)),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("occurred_at Feb 30", enc(ev(occurred_at=f"{now.year}-02-30T00:00:00Z")),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("missing email_hash", enc(ev(email_hash=...)),
                 expect=rejected_by_contract("email_hash: missing")),
        BadInput("email_masked not masked", enc(ev(email_masked="nobody")),
                 expect=rejected_by_contract("email_masked: str_matches")),
        BadInput("unknown country", enc(ev(country="XX")),
                 expect=rejected_by_contract("country: isin")),
        BadInput("unknown device", enc(ev(device="fridge")),
                 expect=rejected_by_contract("device: isin")),
        BadInput("empty user_id", enc(ev(user_id="")),
                 expect=rejected_by_contract("user_id: str_length")),
        BadInput("user_id of 129 characters", enc(ev(user_id="u" * 129)),
                 expect=rejected_by_contract("user_id: str_length")),
        BadInput("numeric user_id", enc(ev(user_id=42)),
                 expect=rejected_by_contract("user_id: expected str, got 42")),
        BadInput("login without success", enc(ev("login", success=...)),
                 expect=rejected_by_contract("login_has_success")),
        BadInput("purchase without amount", enc(ev("purchase", amount_cents=...)),
                 expect=rejected_by_contract("purchase_has_amount")),
        # UUIDs are case-insensitive: the sink and the contract both read them lower-case.
        BadInput("upper-case UUID event_id", enc(ev(event_id=str(uuid.uuid4()).upper())),
                 expect=VALID_EVENT),
        BadInput("everything wrong at once", enc(ev(
            "teleport", schema_version=3, user_id="", email_hash="x", email_masked="unmasked",
            occurred_at="yesterday", country="", device=None, success="no")),
                 expect=rejected_by_contract(
                     "event_type: isin", "schema_version: equal_to(1)", "user_id: str_length",
                     "email_hash: str_matches", "email_masked: str_matches",
                     "occurred_at: expected an ISO-8601 time", "country: isin",
                     "device: missing", "success: expected bool")),
        # -- lands and validates -----------------------------------------------------------------
        BadInput("valid login", enc(first), key=b"user-first-copy"),
        BadInput("valid purchase", enc(ev("purchase"))),
        BadInput("SQL injection as user_id", enc(ev(user_id=INJECTION)), key=INJECTION.encode()),
        BadInput("script tag as user_id", enc(ev(user_id=SCRIPT))),
        BadInput("emoji user_id", enc(ev(user_id="🦄 user 👩‍👩‍👧"))),
        BadInput("RTL override in user_id", enc(ev(user_id="user\u202egpj.exe"))),
        BadInput("combining characters in user_id", enc(ev(user_id="Z\u0351\u0300\u0301e\u0301"))),
        BadInput("zero-width characters in user_id", enc(ev(user_id="\u200bu\u200d\u2060\ufeff"))),
        BadInput("user_id of 128 characters", enc(ev(user_id="u" * 128))),
        BadInput("unknown extra fields", enc(ev(extra={"a": [1, 2, {"b": None}]}, v2_field=1))),
        BadInput("duplicate JSON keys (the last wins)",
                 enc(ev(user_id=...))[:-1] + b',"user_id":"first","user_id":"user-second"}'),
        BadInput("a field nested 100 deep", ev.nested(100)),
        BadInput("exactly MAX_EVENT_BYTES", ev.padded_to(contract.MAX_EVENT_BYTES)),
        BadInput("occurred_at with a +05:30 offset", enc(ev(
            occurred_at=(ev.at + timedelta(hours=5, minutes=30)).strftime(
                "%Y-%m-%dT%H:%M:%S.000+05:30")))),
        BadInput("naive occurred_at (read as UTC)", enc(ev(
            occurred_at=ev.at.strftime("%Y-%m-%dT%H:%M:%S")))),
        BadInput("binary key and odd headers", enc(ev()), key=b"\xff\x00",
                 headers=[("schema_version", b"\xff"), ("empty", None)]),
        # -- once poison pills: the contract step raised on them and stopped every batch ---------
        BadInput("occurred_at in year 9999", enc(ev(occurred_at="9999-12-31T23:59:59.999Z")),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("occurred_at in year 1600", enc(ev(occurred_at="1600-01-01T00:00:00.000Z")),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("occurred_at past year 9999 in UTC (its offset)",
                 enc(ev(occurred_at="9999-12-31T23:59:59-05:00")),
                 expect=rejected_by_contract("occurred_at: expected an ISO-8601 time")),
        BadInput("schema_version 2**63",
                 enc(ev(schema_version=...))[:-1] + b',"schema_version":' + str(2**63).encode()
                 + b"}", expect=rejected_by_contract("schema_version: expected int (64-bit)")),
        BadInput("a field nested 1000 deep", ev.nested(1000), expect=VALID_EVENT),
        # -- duplicates: dropped, the first copy stays ------------------------------------------
        BadInput("same event_id, different body",
                 enc({**{k: v for k, v in first.items() if k != "success"},
                      "event_type": "logout", "user_id": "user-second-copy"}),
                 key=b"user-first-copy",
                 expect=Expect(DUPLICATE, duplicate_of="valid login")),
        BadInput("same message again", enc(first), key=b"user-first-copy",
                 expect=Expect(DUPLICATE, duplicate_of="valid login")),
    ]
