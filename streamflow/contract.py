"""The event contract, version 1: the one definition used by the producer, the sink, the
Dagster contract check and the dbt docs.

On the wire an event is a JSON object (orjson), keyed by ``user_id``, with the headers
``schema_version`` and ``content-type``. No clear e-mail ever appears: only its keyed hash
(``email_hash``) and a masked form (``email_masked``, e.g. ``j***@example.com``).
"""

from __future__ import annotations

import re
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
# UUIDs are case-insensitive (RFC 9562); they are stored and compared lower-case.
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
                     re.IGNORECASE)
INT64 = 2**63  # integers are 64-bit: -INT64 <= n < INT64
EMAIL_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
EMAIL_MASKED_RE = re.compile(r"^[^@\s*]\*\*\*@[^@\s]+\.[^@\s]+$")

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
    except ValueError:
        return None
    if moment.tzinfo is None:  # the contract says UTC; a naive time is read as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
