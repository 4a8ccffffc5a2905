"""What the live view reads out of one Kafka message: pure functions over whatever the broker
accepted (any bytes in any value or header, of any size), so unit tests call them without Kafka.

None of them trusts a message: a payload is shown as text, cut to PREVIEW_CHARS; a dead
letter's reason is read from its headers if they can be read at all; a window is kept only
if it has the shape the page draws and a frame can carry it (`window_of` says why not,
with NotAWindow). See docs/ARCHITECTURE.md, "the live view".
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

import orjson

from streamflow import contract
from streamflow.errors import NotAWindow

PREVIEW_CHARS = 2000  # a payload is cut here: the page shows, it does not archive
# Bytes of an `analytics` message kept as a window: the micro-batch writes ~250 B
# (microbatch.windows.WindowRow); the stall tests pad theirs to ~5 KB. The frame carries the
# newest 60 windows whole, so a bigger one would make every frame up to 60 MB.
WINDOW_MAX_BYTES = 8 * 1024
# How far ahead of this clock a window may start: `analytics` carries closed windows only, and
# a start far in the future would sort after every real window and hide them from the page.
# Ten minutes cover any sane skew between the micro-batch's host and this one.
FUTURE_SLACK = timedelta(minutes=10)
DEAD_LETTER_HEADERS = ("dlq.reason_code", "dlq.reason")


def preview(value: bytes | None) -> str:
    """A payload or header as text, cut to PREVIEW_CHARS (bytes that are not UTF-8 are
    shown as U+FFFD). Cut before decoding, so a 1 MB value costs no more than a short one."""
    if not value:
        return ""
    if not isinstance(value, bytes):
        value = str(value).encode("utf-8", "replace")
    # 4 bytes per character at most in UTF-8.
    return value[:4 * PREVIEW_CHARS].decode("utf-8", "replace")[:PREVIEW_CHARS]


class DeadLetterLabel(NamedTuple):
    reason_code: str
    reason: str


def dead_letter_label(headers_fn) -> DeadLetterLabel:
    """The reason code and reason a dead letter's headers give (``headers_fn``: the message's
    ``headers`` method, called here: confluent-kafka raises when a header key is not UTF-8).
    Empty strings when they are missing or unreadable."""
    try:
        headers = headers_fn() or ()
    except Exception:  # noqa: BLE001 - unreadable headers: the message is still shown
        headers = ()
    found = dict.fromkeys(DEAD_LETTER_HEADERS, "")
    for header in headers:
        if isinstance(header, tuple) and len(header) == 2 and header[0] in found:
            found[header[0]] = preview(header[1])
    return DeadLetterLabel(*found.values())


class Window(NamedTuple):
    """One `analytics` window as the page draws it: keyed by its start and event type."""

    start: datetime  # aware, UTC: every key sorts against every other
    event_type: str
    document: dict  # the message's JSON object, passed to the page whole


def window_of(value: bytes | None, now: datetime) -> Window:
    """The window an `analytics` message carries, or NotAWindow saying why it is none."""
    if not value:
        raise NotAWindow("no value")
    if len(value) > WINDOW_MAX_BYTES:
        raise NotAWindow(f"{len(value)} bytes > {WINDOW_MAX_BYTES}")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise NotAWindow(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise NotAWindow(f"JSON {type(document).__name__}, not an object")
    start, event_type = document.get("window_start"), document.get("event_type")
    # The page cuts the clock time out of the text: a string that reads as a time.
    moment = contract.parse_time(start)
    if moment is None:
        raise NotAWindow(f"window_start {str(start)[:60]!r} is not an ISO-8601 time")
    if moment > now + FUTURE_SLACK:
        raise NotAWindow(f"window_start {start} is in the future")
    if not isinstance(event_type, str):
        raise NotAWindow(f"event_type is {type(event_type).__name__}, not a string")
    try:
        # orjson reads 1024 levels deep but writes only 254: a frame must be able to carry it.
        orjson.dumps(document)
    except TypeError as exc:
        raise NotAWindow(f"cannot be sent on: {exc}") from None
    return Window(moment, event_type, document)

