"""Replay: send the original bytes of selected dead letters back to `user-events`.

Guarantees, and where they come from:
- Nothing is marked replayed unless Kafka acknowledged every message: the selection is
  locked, sent, flushed and marked in one PostgreSQL transaction (a failure marks nothing).
- What is now valid lands once: the sink is idempotent on ``event_id``. A contract reject
  that arrives again is checked again by the next micro-batch (the sink gives its row a new
  ingest sequence, see streamflow.db.landing), unless it has since been validated.
- What still fails is dead-lettered again, with the new reason and the replay header.
- A selection that holds dead letters replayed before is refused unless ``force``.
- ``offset_gap`` dead letters are skipped, never an error: they record messages Kafka no
  longer had when the sink came to read them, so there are no bytes to send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from confluent_kafka import Producer

from streamflow.db.compose import statement
from streamflow.db.tables import dead_letters as dead_letter_table
from streamflow.dlq import Reason
from streamflow.dlq_ops.selection import Selection, StoredDeadLetter, select
from streamflow.errors import KafkaUnavailable, ReplayRefused
from streamflow.kafka_clients import deliver

# Header on a replayed message: the id of the dead letter it came from.
REPLAY_HEADER = "streamflow.replay_of"
# Why an offset_gap dead letter is skipped (said by the CLI and the Dagster job alike).
NOTHING_TO_REPLAY = ("an offset gap records messages gone from Kafka before the sink read "
                     "them: there is nothing to replay")

_MARK = statement("UPDATE {d} SET {d.replay_count} = {d.replay_count} + 1, "
                  "{d.last_replayed_at} = now() WHERE {d.id} = ANY(%s)", d=dead_letter_table)

T = TypeVar("T")


@dataclass(frozen=True)
class ReplayResult:
    letters: list[StoredDeadLetter]  # the selection to send, oldest first
    sent: int
    dry_run: bool
    seconds: float
    gaps: list[StoredDeadLetter] = field(default_factory=list)  # selected, nothing to send

    @property
    def previously_replayed(self) -> int:
        return sum(1 for d in self.letters if d.replay_count > 0)


def paced(items: Iterable[T], rate: float | None, *, clock=time.monotonic,
          sleep=time.sleep) -> Iterator[T]:
    """Yield item i no earlier than i / rate seconds after the first (no rate: at once)."""
    start = clock()
    for i, item in enumerate(items):
        if rate:
            ahead = start + i / rate - clock()
            if ahead > 0:
                sleep(ahead)
        yield item


def message(letter: StoredDeadLetter) -> tuple[bytes | None, bytes | None, list]:
    """(key, value, headers): the original bytes and headers, plus the replay link."""
    headers = [(k, str(v).encode()) for k, v in (letter.headers or {}).items()
               if not k.startswith("dlq.") and k != REPLAY_HEADER]
    headers.append((REPLAY_HEADER, str(letter.id).encode()))
    return letter.message_key, letter.payload, headers


def replay(conn: psycopg.Connection, producer: Producer | None, selection: Selection, *,
           topic: str, dry_run: bool = False, rate: float | None = None,
           force: bool = False, progress: Callable[[int, int], None] | None = None,
           timeout_s: float = 60.0) -> ReplayResult:
    """Replay ``selection`` to ``topic`` (see the module docstring for the guarantees)."""
    started = time.monotonic()
    with conn.transaction():
        letters = select(conn, selection, newest_first=False, for_update=not dry_run)
        gaps = [d for d in letters if d.reason_code == Reason.OFFSET_GAP]
        letters = [d for d in letters if d.reason_code != Reason.OFFSET_GAP]
        if dry_run or not letters:
            return ReplayResult(letters, 0, dry_run, time.monotonic() - started, gaps)
        again = [d for d in letters if d.replay_count > 0]
        if again and not force:
            shown = ", ".join(str(d.id) for d in again[:10]) + (" …" if len(again) > 10 else "")
            raise ReplayRefused(
                f"{len(again)} of the {len(letters)} selected dead letters were replayed before "
                f"(ids {shown}): pass --force to send them again, or narrow the selection")
        if producer is None:
            raise ValueError("a producer is needed unless dry_run")

        def counted(items: Iterable[StoredDeadLetter]):
            for i, letter in enumerate(items, 1):
                yield message(letter)
                if progress and (i % 1000 == 0 or i == len(letters)):
                    progress(i, len(letters))

        remaining, errors = deliver(producer, topic, counted(paced(letters, rate)), timeout_s)
        if remaining or errors:
            # Leaving the block rolls back: nothing is marked, a new replay sends them again.
            raise KafkaUnavailable(f"replay to {topic}: {remaining} messages undelivered, "
                                   f"errors {errors[:3]}; nothing was marked replayed")
        conn.execute(_MARK, ([d.id for d in letters],))
    return ReplayResult(letters, len(letters), False, time.monotonic() - started, gaps)
