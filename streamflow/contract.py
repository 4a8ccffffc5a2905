"""The event contract, version 1: the one definition used by the producer, the sink, the
Dagster contract check and the dbt docs.

On the wire an event is a JSON object (orjson), keyed by ``user_id``, with the headers
``schema_version`` and ``content-type``. No clear e-mail ever appears: only its keyed hash
(``email_hash``) and a masked form (``email_masked``, e.g. ``j***@example.com``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/json"
# Largest event the sink lands (bytes); larger ones are dead-lettered as `too_large`.
# Real events are ~300 B: 64 KiB leaves room for rich payloads and stops accidental blobs.
MAX_EVENT_BYTES = 64 * 1024


class EventType(StrEnum):
    LOGIN = "login"
    LOGOUT = "logout"
    SIGNUP = "signup"
    PURCHASE = "purchase"
    PAGE_VIEW = "page_view"
    PASSWORD_RESET = "password_reset"


COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "CA", "AU", "NL", "ES", "PL")
DEVICES = ("desktop", "mobile", "tablet")

# Field -> (type, description). The order is the column order everywhere.
FIELDS: dict[str, tuple[type, str]] = {
    "event_id": (str, "UUID of the event; the idempotency key of the whole pipeline"),
    "schema_version": (int, f"contract version (this is {SCHEMA_VERSION})"),
    "event_type": (str, "one of " + ", ".join(t.value for t in EventType)),
    "user_id": (str, "stable pseudonymous user id; the Kafka message key"),
    "email_hash": (str, "HMAC-SHA256 (hex) of the normalised e-mail, keyed by STREAMFLOW_PII_KEY"),
    "email_masked": (str, "first character of the local part, *** and the domain"),
    "occurred_at": (str, "event time, ISO-8601 UTC with milliseconds"),
    "country": (str, "ISO 3166-1 alpha-2 country code"),
    "device": (str, "one of " + ", ".join(DEVICES)),
    "success": (bool, "login outcome (login events only)"),
    "amount_cents": (int, "purchase amount in cents, > 0 (purchase events only)"),
}
# UUIDs are case-insensitive (RFC 9562); they are stored and compared lower-case, and matched
# lower-cased (`text.lower()` and this: half the time of an IGNORECASE match, per event).
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INT64 = 2**63  # integers are 64-bit: -INT64 <= n < INT64
EMAIL_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# No ASCII whitespace, spelled out: the contract runs these in RE2 (pyarrow,
# streamflow.validation), whose \s lacks \v, and in Python's re (tests), whose \s is Unicode.
EMAIL_MASKED_RE = re.compile(r"^[^@ \t\n\v\f\r*]\*\*\*@[^@ \t\n\v\f\r]+\.[^@ \t\n\v\f\r]+$")

HEADERS: list[tuple[str, bytes]] = [
    ("schema_version", str(SCHEMA_VERSION).encode()),
    ("content-type", CONTENT_TYPE.encode()),
]


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z: ``2026-11-25T21:45:09.123Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z")


def format_epoch_ms(epoch_ms: int) -> str:
    return format_time(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


def parse_time(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO-8601 string, or None when it is not one."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:  # the contract says UTC; a naive time is read as UTC
            moment = moment.replace(tzinfo=UTC)
        # OverflowError: an offset that carries the time past year 1 or 9999 in UTC.
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# -- why an event fails the contract ------------------------------------------------------------

TYPE_CHECK = "type"              # the field's value is not of the contract's type
MISSING_CHECK = "not_nullable"   # pandera's name for a required field without a value
_SHOWN_CHARS = 60                # an offending value is shown this far (payloads reach 64 KiB)


class _NoValue:
    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()  # a failure without one offending value (a whole-column or row rule)


@dataclass(frozen=True, slots=True, kw_only=True, eq=True)
class Failure:
    """One reason an event fails the contract: which column, which check, what was there.

    Kept as a record from validation to the dead letter (raw.dead_letters.failures); rendered
    to text only for people (``str``: the dead letter's reason, its Kafka header, the CLI)."""

    check: str                    # a pandera check, TYPE_CHECK, MISSING_CHECK, or a row rule
    column: str | None = None     # None: a rule over the whole row
    value: object = NO_VALUE      # the offending value as it arrived
    expected: str | None = None   # TYPE_CHECK: what the contract wants

    @property
    def shown_value(self) -> str | None:
        return None if self.value is NO_VALUE else f"{self.value!r:.{_SHOWN_CHARS}}"

    @property
    def summary(self) -> str:
        """The failure without its value ("country: isin"): what failures are counted by."""
        if self.column is None:
            return self.check
        if self.check == TYPE_CHECK:
            return f"{self.column}: expected {self.expected}"
        if self.check == MISSING_CHECK:
            return f"{self.column}: missing"
        return f"{self.column}: {self.check}"

    def __str__(self) -> str:
        shown = self.shown_value
        if shown is None or self.column is None or self.check == MISSING_CHECK:
            return self.summary
        if self.check == TYPE_CHECK:
            return f"{self.summary}, got {shown}"
        return f"{self.summary} (got {shown})"

    def as_json(self) -> dict[str, str | None]:
        """JSON-safe, the value as shown (a payload's value can be any JSON, up to 64 KiB)."""
        return {"column": self.column, "check": self.check, "expected": self.expected,
                "got": self.shown_value}

    @classmethod
    def from_json(cls, document: dict) -> Failure:
        """A stored failure (``as_json``); its value is the text shown when it was found."""
        got = document.get("got")
        return cls(check=document["check"], column=document.get("column"),
                   expected=document.get("expected"),
                   value=NO_VALUE if got is None else _Shown(got))


class _Shown(str):
    """A value known only as it was shown: shown again as is, not quoted a second time."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def describe(failures: list[Failure]) -> str:
    """Every failure of one event as one line of text (a dead letter's ``reason``)."""
    return "; ".join(map(str, failures))
