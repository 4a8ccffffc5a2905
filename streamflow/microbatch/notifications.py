"""Contract check of a batch: valid events -> streamflow.notifications + `notifications` topic;
failures -> raw.dead_letters (stage `contract`, every pandera reason) + `dead-letter-topic`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import orjson
import pandas as pd
import psycopg

from streamflow import contract
from streamflow.db.dead_letters import insert_dead_letters
from streamflow.dlq import DeadLetter, Reason, Stage
from streamflow.microbatch import batch as batches
from streamflow.validation import frame, validate

STEP = "notifications"

_INSERT = (
    "INSERT INTO streamflow.notifications (event_id, ingest_seq, schema_version, event_type, "
    "user_id, email_hash, email_masked, occurred_at, country, device, success, amount_cents) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING"
)


@dataclass(frozen=True)
class NotificationsResult:
    after: int
    upto: int
    checked: int
    valid: int
    rejected: int
    top_reasons: list[tuple[str, int]]

    @property
    def pass_rate(self) -> float:
        return self.valid / self.checked if self.checked else 1.0


Publish = Callable[[list[tuple[bytes, bytes]]], None]
PublishDeadLetters = Callable[[list[DeadLetter]], None]


def run(conn: psycopg.Connection, upto: int, publish: Publish,
        publish_dead_letters: PublishDeadLetters) -> NotificationsResult:
    """Validate events after the watermark up to ``upto``, in one transaction:

    1. Lock the step and read events after its watermark (at most MAX_BATCH).
    2. Validate them against the pandera contract, lazily (every reason per row).
    3. Publish valid events and dead letters to Kafka and flush, before the commit.
    4. Insert valid rows and dead letters (both idempotent), advance the watermark, commit.
    """
    with conn.transaction():
        batches.lock(conn, STEP)
        after = batches.watermark(conn, STEP)
        events = batches.read_events(conn, after, upto)
        if not events:
            return NotificationsResult(after, after, 0, 0, 0, [])
        payloads = [e.payload for e in events]
        df, type_errors = frame(payloads, {
            "ingest_seq": [e.ingest_seq for e in events],
            "ingested_at": [e.ingested_at for e in events]})
        valid, reasons = validate(df, type_errors)
        letters = [_dead_letter(events[i], why) for i, why in sorted(reasons.items())]
        rows = [_row(r) for r in valid.itertuples(index=False)]
        publish([(r[4].encode(), orjson.dumps(_message(r))) for r in rows])
        publish_dead_letters(letters)
        with conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
        insert_dead_letters(conn, letters)
        last = events[-1].ingest_seq
        batches.advance(conn, STEP, last)
    counts: dict[str, int] = {}
    for why in reasons.values():
        for reason in why:
            key = reason.split(" (got")[0]
            counts[key] = counts.get(key, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:10]
    return NotificationsResult(after, last, len(events), len(rows), len(letters), top)


def _row(r) -> tuple:
    return (r.event_id, r.ingest_seq, int(r.schema_version), r.event_type, r.user_id,
            r.email_hash, r.email_masked, r.occurred_at.to_pydatetime(), r.country, r.device,
            None if pd.isna(r.success) else bool(r.success),
            None if pd.isna(r.amount_cents) else int(r.amount_cents))


def _message(row: tuple) -> dict:
    (event_id, _, version, event_type, user_id, email_hash, email_masked, occurred_at, country,
     device, success, amount) = row
    message = {"event_id": event_id, "schema_version": version, "event_type": event_type,
               "user_id": user_id, "email_hash": email_hash, "email_masked": email_masked,
               "occurred_at": contract.format_time(occurred_at), "country": country,
               "device": device}
    if success is not None:
        message["success"] = success
    if amount is not None:
        message["amount_cents"] = amount
    return message


def _dead_letter(event: batches.LandedEvent, reasons: list[str]) -> DeadLetter:
    user = event.payload.get("user_id")
    return DeadLetter(
        Stage.CONTRACT, Reason.CONTRACT, "; ".join(reasons), event.raw,
        user.encode() if isinstance(user, str) else None, {}, event.kafka_topic,
        event.kafka_partition, event.kafka_offset, str(event.payload.get("event_id")))
