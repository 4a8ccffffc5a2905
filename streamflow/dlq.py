"""Dead letters: the reason codes, the record, and how one is published to Kafka.

Every reject, at any stage, carries a code from this small set plus a human-readable detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka import Producer

from streamflow.errors import DeadLetterPublishFailed
from streamflow.kafka_clients import deliver


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


@dataclass(frozen=True, slots=True)
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
        ]


def headers_dict(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Kafka headers as a dead letter keeps them: text (bytes that are not UTF-8 replaced)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or []}


def publish(producer: Producer, topic: str, letters: list[DeadLetter], *,
            timeout_s: float = 30.0) -> None:
    """Send and flush: the topic copy is at-least-once, so it is sent before the DB commit."""
    remaining, errors = deliver(
        producer, topic, ((d.key, d.payload, d.kafka_headers()) for d in letters), timeout_s)
    if remaining or errors:
        raise DeadLetterPublishFailed(
            f"{remaining} dead letters undelivered after {timeout_s:.0f}s, errors: {errors[:3]}")
