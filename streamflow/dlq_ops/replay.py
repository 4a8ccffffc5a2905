"""Replay: send the original bytes of selected dead letters back through the pipeline, to a
topic the deployment allows (`user-events`, unless STREAMFLOW_REPLAY_TOPICS names others).

The selection is planned once (counts and its last id, no payload: letters that arrive during
the replay, its own messages dead-lettered again among them, are not in it), then worked
through in chunks of at most ``CHUNK_LETTERS`` letters and ``CHUNK_BYTES`` of payload, so a
replay's memory stays bounded whatever it selects (a dry run's too). Each chunk:

1. Select the chunk's ids; claim each (``chunks.claim``: one another replay holds is
   skipped); read the claimed letters with their bytes, leaving out any replayed since this
   replay began. Each statement commits at once: no transaction is open and no row is locked
   from here on.
2. Send them, paced (one pace over the whole replay), and flush.
3. Mark replayed, in one short transaction, only the letters Kafka acknowledged; release the
   claims.

Guarantees, and where they come from:
- Nothing is marked replayed unless Kafka acknowledged it (step 3). A message Kafka did not
  take fails the replay once its chunk's acknowledged letters are marked; run it again for
  the rest.
- What is now valid lands once: the sink is idempotent on ``event_id``. A crash between a send
  and its mark leaves those letters unmarked, and their claims end with the session: the next
  replay sends them again, and the copy that lands twice is dropped by ``event_id``. (A letter
  that still fails is dead-lettered again, once per send.) A contract reject that arrives again
  is checked again by the next micro-batch (the sink gives its row a new ingest sequence, see
  streamflow.db.landing), unless it has since been validated.
- Two replays never send the same letter: a claim keeps out the other replay while a letter is
  in flight, the replayed-since filter once it is marked.
- What still fails is dead-lettered again, with the new reason and the replay header.
- A selection that holds dead letters replayed before is refused unless ``force``.
- ``offset_gap`` dead letters are skipped, never an error: they record messages Kafka no
  longer had when the sink came to read them, so there are no bytes to send.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import psycopg
from confluent_kafka import Producer

from streamflow.dlq import Reason, original_headers
from streamflow.dlq_ops import chunks
from streamflow.dlq_ops.selection import Selection, StoredDeadLetter
from streamflow.errors import KafkaUnavailable, ReplayRefused, ReplayTopicRefused
from streamflow.kafka_clients import deliver

# Header on a replayed message: the id of the dead letter it came from.
REPLAY_HEADER = "streamflow.replay_of"
# Why an offset_gap dead letter is skipped (said by the CLI and the Dagster job alike).
NOTHING_TO_REPLAY = ("an offset gap records messages gone from Kafka before the sink read "
                     "them: there is nothing to replay")
# A chunk: at most this many letters (a dead letter is ~0.3 KB of payload in a healthy
# stream) and this many bytes of payload (one Kafka message is at most ~1 MB: 16 of those),
# at least one letter. Bounds what a replay holds and what waits in the producer's queue.
CHUNK_LETTERS = 1000
CHUNK_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


class Progress(NamedTuple):
    """After each chunk: how far the replay (or dry run) is."""

    chunk: int    # chunks done
    chunks: int   # chunks planned
    letters: int  # letters sent (a dry run: listed) so far
    total: int    # letters planned


@dataclass(frozen=True)
class ReplayResult:
    selected: int              # letters with bytes to send, as planned
    sent: int
    dry_run: bool
    seconds: float
    chunks: int
    previously_replayed: int   # of the selected, replayed before (sent again only with force)
    skipped: int = 0           # taken by another replay meanwhile
    gaps: list[StoredDeadLetter] = field(default_factory=list)  # selected, nothing to send


class Pacer:
    """Message i (counted over the whole replay) no earlier than i / rate seconds after the
    first; no rate: at once."""

    def __init__(self, rate: float | None, *, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.start: float | None = None
        self.count = 0

    def paced(self, items: Iterable[T]) -> Iterator[T]:
        for item in items:
            if self.start is None:
                self.start = self.clock()
            elif self.rate:
                ahead = self.start + self.count / self.rate - self.clock()
                if ahead > 0:
                    self.sleep(ahead)
            self.count += 1
            yield item


def message(letter: StoredDeadLetter) -> tuple[bytes | None, bytes | None, list]:
    """(key, value, headers): the original bytes and headers, plus the replay link."""
    headers = [(k, v) for k, v in original_headers(letter.original_headers)
               if k != REPLAY_HEADER]
    headers.append((REPLAY_HEADER, str(letter.id).encode()))
    return letter.message_key, letter.payload, headers


def check_topic(topic: str, allowed: Collection[str]) -> None:
    """Refuse a topic the deployment does not allow (``Settings.replay_topic_names``)."""
    if topic not in allowed:
        raise ReplayTopicRefused(
            f"replay to {topic!r} refused: replays may only send to "
            f"{', '.join(sorted(allowed))} (STREAMFLOW_REPLAY_TOPICS names the topics allowed)")


OnChunk = Callable[[Progress, list[StoredDeadLetter]], None]


def replay(conn: psycopg.Connection, producer: Producer | None, selection: Selection, *,
           topic: str, allowed: Collection[str], dry_run: bool = False,
           rate: float | None = None, force: bool = False, on_chunk: OnChunk | None = None,
           chunk_letters: int | None = None, timeout_s: float = 60.0) -> ReplayResult:
    """Replay ``selection`` to ``topic`` (see the module docstring for the steps and the
    guarantees). ``conn`` is an autocommit connection. ``producer`` should report every
    delivery: with ``delivery.report.only.error``, a chunk that fails has none of its letters
    marked. ``on_chunk`` sees each chunk's letters with bytes (sent, or a dry run's listed)
    and the progress."""
    check_topic(topic, allowed)
    started = time.monotonic()
    planned = chunks.plan(conn, selection)
    if planned.again and not force and not dry_run:
        ids = chunks.replayed_before(conn, selection, planned)
        shown = ", ".join(map(str, ids)) + (" …" if planned.again > len(ids) else "")
        raise ReplayRefused(
            f"{planned.again} of the {planned.letters} selected dead letters were replayed "
            f"before (ids {shown}): pass --force to send them again, or narrow the selection")
    if producer is None and not dry_run:
        raise ValueError("a producer is needed unless dry_run")
    selection = selection.pinned(planned.started)
    rows = max(1, min(chunk_letters or CHUNK_LETTERS, CHUNK_BYTES // max(planned.largest, 1)))
    total_chunks = math.ceil((planned.letters + planned.gaps) / rows)
    pacer = Pacer(rate)
    after, done, handled, sent, skipped, gaps = 0, 0, 0, 0, 0, []
    while ids := chunks.chunk_ids(conn, selection, planned, after, rows):
        after = ids[-1]
        # Step 1
        held = ids if dry_run else chunks.claim(conn, ids)
        try:
            letters = chunks.read(conn, held, planned, again=force or dry_run) if held else []
            skipped += len(ids) - len(letters)
            gaps += [d for d in letters if d.reason_code == Reason.OFFSET_GAP]
            letters = [d for d in letters if d.reason_code != Reason.OFFSET_GAP]
            if not dry_run:
                sent += _send(conn, producer, topic, letters, pacer, timeout_s)
        finally:
            if not dry_run:
                # A release that fails (the connection lost) leaves the claims to end with
                # the session; the error in flight, if any, is the one to report.
                with contextlib.suppress(psycopg.Error):
                    chunks.release(conn, held)
        done, handled = done + 1, handled + len(letters)
        if on_chunk:
            on_chunk(Progress(done, total_chunks, handled, planned.letters), letters)
    return ReplayResult(planned.letters, sent, dry_run, time.monotonic() - started, done,
                        planned.again, skipped, gaps)


def _send(conn: psycopg.Connection, producer: Producer, topic: str,
          letters: list[StoredDeadLetter], pacer: Pacer, timeout_s: float) -> int:
    """Steps 2 and 3 of a chunk; returns how many letters were sent and marked."""
    if not letters:
        return 0
    # Step 2
    acked: list[int] = []
    remaining, errors = deliver(producer, topic, map(message, pacer.paced(letters)), timeout_s,
                                on_ack=lambda i: acked.append(letters[i].id))
    if not remaining and not errors:
        # A flush that left nothing and reported no error delivered every message (also for
        # a producer that reports errors only).
        acked = [d.id for d in letters]
    # Step 3
    chunks.mark(conn, acked)
    if remaining or errors:
        raise KafkaUnavailable(
            f"replay to {topic}: {remaining} messages undelivered, errors "
            f"{[str(e) for e in errors[:3]]}; of "
            f"this chunk's {len(letters)}, the {len(acked)} Kafka acknowledged were marked "
            "replayed, the others were not (run the replay again for them)")
    return len(acked)
