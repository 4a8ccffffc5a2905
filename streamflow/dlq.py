"""Dead letters: the reason codes, the record, and how one is published to Kafka.

Every reject, at any stage, carries a code from this small set plus a human-readable detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson
from confluent_kafka import Producer

from streamflow.contract import Failure
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.errors import DeadLetterPublishFailed
from streamflow.kafka_clients import deliver
from streamflow.topics import UNKNOWN_TOPIC_ID


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
    headers: dict[str, str]
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

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Original headers first, then why and where from (``dlq.*`` names never collide)."""
        return [
            *((k, v.encode()) for k, v in self.headers.items() if not k.startswith("dlq.")),
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


def headers_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a dead letter keeps them: text (bytes that are not UTF-8 replaced)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}


def storable_text(text: str | None) -> str | None:
    """PostgreSQL text and jsonb cannot hold NUL: a reject must never be rejected itself."""
    return text.replace("\x00", "\ufffd") if text is not None else None


def storable_headers(headers: dict[str, str]) -> str:
    """Headers as the JSON text stored in PostgreSQL."""
    return orjson.dumps({storable_text(k): storable_text(v)
                         for k, v in headers.items()}).decode()


# Almost every message carries the same few headers (the contract's): their JSON is built
# once, not per event on the sink's hot path.
_HEADERS_JSON: dict[tuple, str] = {}
_HEADERS_JSON_MAX = 256


def headers_json(headers: list[tuple[str, bytes | None]] | None) -> str | None:
    """A message's headers as stored with its landed row (None: it had none)."""
    if not headers:
        return None
    key = tuple(headers)
    text = _HEADERS_JSON.get(key)
    if text is None:
        text = storable_headers(headers_dict(headers))
        if len(_HEADERS_JSON) < _HEADERS_JSON_MAX:
            _HEADERS_JSON[key] = text
    return text


# librdkafka refuses, in produce() itself, a message over its message.max.bytes (1,000,000
# by default): a message the broker accepted can be just under that, and its dead letter adds
# headers. The copy keeps within this, framing included; raw.dead_letters keeps every byte.
MAX_COPY_BYTES = 1_000_000
_FRAMING_BYTES = 1_024


def topic_copy(letter: DeadLetter) -> tuple[bytes | None, bytes | None, list]:
    """(key, value, headers) of the dead letter's copy on the dead-letter topic: the original
    message, cut to fit (value first, then key) with a header saying so."""
    key, value, headers = letter.key, letter.payload, letter.kafka_headers()
    fixed = _FRAMING_BYTES + sum(len(k) + len(v) for k, v in headers)
    if fixed + len(key or b"") + len(value or b"") <= MAX_COPY_BYTES:
        return key, value, headers
    cut = {}
    room = MAX_COPY_BYTES - fixed - 200  # the note below
    if key is not None and len(key) > room // 2:
        cut["key"] = len(key)
        key = key[:room // 2]
    if value is not None and len(value) > room - len(key or b""):
        cut["value"] = len(value)
        value = value[:room - len(key or b"")]
    note = ", ".join(f"{part} cut from {size} bytes" for part, size in cut.items())
    headers.append(("dlq.truncated", f"{note}; the whole message is in "
                                     f"{dead_letter_table.fullname}".encode()))
    return key, value, headers


def publish(producer: Producer, topic: str, letters: list[DeadLetter], *,
            timeout_s: float = 30.0) -> None:
    """Send and flush: the topic copy is at-least-once, so it is sent before the DB commit."""
    remaining, errors = deliver(producer, topic, map(topic_copy, letters), timeout_s)
    if remaining or errors:
        raise DeadLetterPublishFailed(
            f"{remaining} dead letters undelivered after {timeout_s:.0f}s, errors: {errors[:3]}")
