"""Dead letters: the reason codes, the record, and how one is published to Kafka.

Every reject, at any stage, carries a code from this small set plus a human-readable detail.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum

import orjson
from confluent_kafka import KafkaException, Producer

from streamflow.contract import Failure
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.errors import DeadLetterPublishFailed
from streamflow.kafka_clients import REFUSED_FOR_GOOD
from streamflow.topics import UNKNOWN_TOPIC_ID

# A message's headers exactly as Kafka gave them: names are text, values any bytes (or None),
# in order, a name possibly repeated.
Headers = tuple[tuple[str, bytes | None], ...]


class Stage(StrEnum):
    INGEST = "ingest"      # the sink could not land the message
    CONTRACT = "contract"  # landed, but the Dagster contract check rejected it


class Reason(StrEnum):
    EMPTY = "empty"                        # no value (tombstone) or zero bytes
    TOO_LARGE = "too_large"                # over contract.MAX_EVENT_BYTES
    NOT_UTF8 = "not_utf8"                  # bytes that are not UTF-8 text
    NOT_JSON = "not_json"                  # text that is not one JSON document
    NOT_OBJECT = "not_object"              # JSON, but not an object
    MISSING_EVENT_ID = "missing_event_id"  # no event_id, or null
    BAD_EVENT_ID = "bad_event_id"          # event_id is not a UUID string
    DECODER_ERROR = "decoder_error"        # the decoder itself failed (a bug, kept as data)
    DB_REJECTED = "db_rejected"            # PostgreSQL refused the row; detail is its error
    CONTRACT = "contract"                  # failed the pandera contract; detail lists why
    # Offsets gone from Kafka (retention, delete-records) before the sink read them: the
    # source offset is the first missing one, the detail the range; no payload to replay.
    OFFSET_GAP = "offset_gap"


# Keyword-only: ten fields, four of them ints and strs in a row; a swapped pair built by
# position would still type-check.
@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    stage: Stage
    reason_code: Reason
    reason: str
    payload: bytes | None
    key: bytes | None
    headers: Headers  # every byte (stored whole: raw_headers where text cannot hold them)
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None = None
    source_topic_id: str = UNKNOWN_TOPIC_ID  # the topic incarnation (see topics)
    # Stage CONTRACT: every failure as a record (``reason`` is their text).
    failures: tuple[Failure, ...] = ()

    def failures_json(self) -> str | None:
        """The failures as JSON text (values shown cut, so no NUL that jsonb would refuse)."""
        return (orjson.dumps([f.as_json() for f in self.failures]).decode()
                if self.failures else None)

    def kafka_headers(self) -> list[tuple[str, bytes | None]]:
        """Original headers first, then why and where from (``dlq.*`` names never collide)."""
        return [*original_headers(self.headers), *self.dlq_headers()]

    def dlq_headers(self) -> list[tuple[str, bytes]]:
        """Why and where from: at most a few KiB whatever the message held."""
        return [
            ("dlq.stage", self.stage.value.encode()),
            ("dlq.reason_code", self.reason_code.value.encode()),
            ("dlq.reason", self.reason[:1000].encode()),
            ("dlq.source_topic", self.source_topic.encode()),
            ("dlq.source_partition", str(self.source_partition).encode()),
            ("dlq.source_offset", str(self.source_offset).encode()),
            ("dlq.source_topic_id", self.source_topic_id.encode()),
            # Values shown cut (contract.Failure): at most a few KiB for 11 fields.
            *([("dlq.failures", self.failures_json().encode())] if self.failures else []),
        ]


def original_headers(headers: Headers) -> list[tuple[str, bytes | None]]:
    """The message's own headers: a forged ``dlq.*`` header is not carried over."""
    return [(k, v) for k, v in headers if not k.startswith("dlq.")]


def as_headers(headers: list[tuple[str, bytes | None]] | None) -> Headers:
    """Kafka's headers (a list, or None for none) as a dead letter keeps them."""
    return tuple(headers) if headers else ()


def headers_text(headers: Headers) -> dict[str, str]:
    """Headers as text for people and for the ``headers`` json column: bytes that are not
    UTF-8 replaced, a repeated name keeps its last value. Lossy: see ``raw_headers_json``."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers}


def storable_text(text: str | None) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL: a reject must never be rejected itself."""
    return text.replace("\x00", "\ufffd") if text is not None else None


def storable_headers(headers: Headers) -> str:
    """Headers as the JSON text stored in PostgreSQL's ``headers`` column."""
    return orjson.dumps({storable_text(k): storable_text(v)
                         for k, v in headers_text(headers).items()}).decode()


def _exact_as_text(headers: Headers) -> bool:
    """Whether the ``headers`` column holds these headers exactly (names unique, values
    UTF-8 text without NUL, none missing): nearly every message."""
    if len({k for k, _ in headers}) != len(headers):
        return False
    for k, v in headers:
        if v is None or "\x00" in k or b"\x00" in v:
            return False
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def raw_headers_json(headers: Headers) -> str | None:
    """The headers byte for byte, as JSON ``[[name, base64 value or null], ...]``, for the
    ``raw_headers`` column; None where ``headers`` holds them exactly (docs/ARCHITECTURE.md)."""
    if not headers or _exact_as_text(headers):
        return None
    return orjson.dumps([[storable_text(k), None if v is None else base64.b64encode(v).decode()]
                         for k, v in headers]).decode()


def stored_headers(text: dict | None, raw: list | None) -> Headers:
    """The headers a row stored (``headers`` and ``raw_headers`` as psycopg loads them)."""
    if raw is not None:
        return tuple((k, None if v is None else base64.b64decode(v)) for k, v in raw)
    return tuple((k, str(v).encode()) for k, v in (text or {}).items())


# Almost every message carries the same few headers (the contract's): their JSON is built
# once, not per event on the sink's hot path. Bounded in bytes, not only in entries: a cached
# set pins its header bytes, so only small sets are kept (256 x 1 KiB of values at most).
_HEADERS_JSON: dict[tuple, tuple[str, str | None]] = {}
_HEADERS_JSON_MAX = 256
_CACHED_HEADER_BYTES = 1_024


def headers_json(headers: list[tuple[str, bytes | None]] | None
                 ) -> tuple[str | None, str | None]:
    """A message's headers as stored with its landed row: (``headers``, ``raw_headers``)."""
    if not headers:
        return None, None
    key = tuple(headers)
    stored = _HEADERS_JSON.get(key)
    if stored is None:
        stored = storable_headers(key), raw_headers_json(key)
        if (len(_HEADERS_JSON) < _HEADERS_JSON_MAX
                and _headers_size(key) <= _CACHED_HEADER_BYTES):
            _HEADERS_JSON[key] = stored
    return stored


# Per header, beside its name and value: Kafka's record framing (varint lengths, a few bytes).
_HEADER_FRAMING = 10


def _headers_size(headers) -> int:
    return sum(len(k.encode("utf-8", "replace")) + len(v or b"") + _HEADER_FRAMING
               for k, v in headers)


# librdkafka refuses, in produce() itself, a message over its message.max.bytes (1,000,000
# by default): a message the broker accepted can be just under that, and its dead letter adds
# headers. The copy keeps within this, framing included; raw.dead_letters keeps every byte.
MAX_COPY_BYTES = 1_000_000
_FRAMING_BYTES = 1_024
_NOTE_BYTES = 300  # the dlq.truncated header


def topic_copy(letter: DeadLetter) -> tuple[bytes | None, bytes | None, list]:
    """(key, value, headers) of the dead letter's copy on the dead-letter topic: the original
    message, cut to fit with a header saying so. The message's own headers get what the key
    and value leave (at least a quarter of the room): the largest are dropped until the rest
    fit; then the key and the value are cut (the value first). The ``dlq.*`` headers always
    stay: they are bounded (a few KiB)."""
    key, value = letter.key, letter.payload
    own, why = original_headers(letter.headers), letter.dlq_headers()
    fixed = _FRAMING_BYTES + _headers_size(why)
    body = len(key or b"") + len(value or b"")
    if fixed + _headers_size(own) + body <= MAX_COPY_BYTES:
        return key, value, [*own, *why]
    cut = {}
    room = MAX_COPY_BYTES - fixed - _NOTE_BYTES
    kept = list(own)
    for header in sorted(own, key=lambda h: _headers_size([h]), reverse=True):
        if _headers_size(kept) <= max(room - body, room // 4):
            break
        kept.remove(header)
    if len(kept) < len(own):
        cut["headers"] = (f"{len(own) - len(kept)} of {len(own)} dropped "
                          f"({_headers_size(own) - _headers_size(kept)} bytes)")
    room -= _headers_size(kept)
    if key is not None and len(key) > room // 2:
        cut["key"] = f"cut from {len(key)} bytes"
        key = key[:room // 2]
    if value is not None and len(value) > room - len(key or b""):
        cut["value"] = f"cut from {len(value)} bytes"
        value = value[:room - len(key or b"")]
    note = ", ".join(f"{part} {what}" for part, what in cut.items())
    return key, value, [*kept, *why, ("dlq.truncated", f"{note}; the whole message is in "
                                                         f"{dead_letter_table.fullname}".encode())]


@dataclass(frozen=True)
class Unpublished:
    """A dead letter whose topic copy Kafka refused for good: the table keeps it, and it is
    quarantined (streamflow.db.quarantine) instead of stopping the caller."""

    letter: DeadLetter
    error: str


def publish(producer: Producer, topic: str, letters: list[DeadLetter], *,
            timeout_s: float = 30.0) -> list[Unpublished]:
    """Send and flush: the topic copy is at-least-once, so it is sent before the DB commit.

    Returns the letters Kafka refused for good (``REFUSED_FOR_GOOD``) for the caller to
    quarantine in its transaction; anything else undelivered (a timeout, a broker gone) raises
    ``DeadLetterPublishFailed``: the caller retries the batch."""
    refused: dict[int, str] = {}
    failed: list[str] = []

    def on_delivery(index: int, err, _msg) -> None:
        if err is None:
            return
        if err.code() in REFUSED_FOR_GOOD:
            refused[index] = str(err)
        else:
            failed.append(str(err))

    for index, letter in enumerate(letters):
        key, value, headers = topic_copy(letter)
        while True:
            try:
                producer.produce(topic, value, key, headers=headers,
                                 on_delivery=lambda err, msg, i=index: on_delivery(i, err, msg))
                break
            except BufferError:
                producer.poll(0.1)
            except KafkaException as exc:
                if exc.args[0].code() not in REFUSED_FOR_GOOD:
                    raise DeadLetterPublishFailed(f"dead letter not sent: {exc}") from exc
                refused[index] = str(exc.args[0])
                break
    remaining = producer.flush(timeout_s)
    if remaining or failed:
        raise DeadLetterPublishFailed(
            f"{remaining} dead letters undelivered after {timeout_s:.0f}s, errors: {failed[:3]}")
    return [Unpublished(letters[i], why) for i, why in sorted(refused.items())]
