"""The sink's consumer side: where each partition reads from, which offsets are landed, and the
order of commits. The writer lands; this decides when, and what Kafka is told.

- Landings are strictly sequential: one batch lands on a background thread (PostgreSQL does
  the work, the thread mostly waits) while the sink decodes the next.
- Offsets live in PostgreSQL with the rows (the writer stores them in the landing's
  transaction). Kafka is told only offsets already committed there, at most every
  KAFKA_COMMIT_INTERVAL_S, and only for lag tooling: every assignment, and every resumption
  after an outage, starts at the offsets stored in PostgreSQL.
- Rebalance callbacks first wait for the landing in flight, so a revoked partition's written
  offsets are known and nothing decoded is kept across a rebalance.
- PostgreSQL down: consumption pauses, the batch is held and retried with backoff, then every
  partition is sought to its stored offset (Outcome.RESEEKED); a stop meanwhile ends it with
  nothing committed (Outcome.STOPPED).
- Several sinks: each assignment claims its partitions in PostgreSQL (``Writer.claim``), and a
  landing stores offsets only of partitions its sink still holds there. A sink paused past its
  session timeout, whose partitions moved meanwhile, finds its landing fenced when it resumes:
  the batch is dropped, every partition forgotten, and the sink rejoins the group with a new
  consumer (Outcome.FENCED; docs/ARCHITECTURE.md, "Several sinks and the zombie fence").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streamflow import metrics
from streamflow.db.landing import CONNECTION_ERRORS, Landing, LandResult, StoredOffset
from streamflow.dlq import DeadLetter, Unpublished
from streamflow.errors import LandingFenced
from streamflow.sink.batch import Batch, keep_partitions
from streamflow.sink.incarnation import TopicIdentity
from streamflow.workers.runtime import Backoff, StopFlag

log = logging.getLogger("streamflow.sink")

# Seconds between offset commits to Kafka (for lag tooling only: the truth is in PostgreSQL).
KAFKA_COMMIT_INTERVAL_S = 1.0

# Publishes and flushes; returns the letters whose copy Kafka refused for good.
Publish = Callable[[list[DeadLetter]], list[Unpublished]]


class Writer(Protocol):
    """What the checkpoint needs of a writer (``db.landing.LandingWriter``). A lost database
    is one of ``CONNECTION_ERRORS``, raised by any call; anything else is the caller's bug."""

    def setup(self) -> None: ...

    def land(self, batch: Landing, publish: Publish) -> LandResult:
        """Write rows, dead letters and offsets in one transaction; rows the database
        refuses are dead-lettered (published, stored) and counted in the result. Raises
        ``LandingFenced`` (nothing written) when another sink claimed one of its partitions
        since this one did."""
        ...

    def stored_offsets(self, topic: str) -> dict[int, StoredOffset]: ...

    def claim(self, topic: str, partitions: Sequence[int]) -> dict[int, StoredOffset]:
        """Claim newly assigned partitions; their stored offsets, read under the claim."""
        ...

    def release(self, topic: str, partitions: Iterable[int]) -> None: ...

    def restart_offsets(self, topic: str, partitions: Sequence[int], topic_id: str) -> None: ...

    def reset(self) -> None:
        """Drop a broken connection; the next call reconnects."""
        ...

    def close(self) -> None: ...


class Outcome(Enum):
    """How a batch in flight ended."""

    LANDED = "landed"
    # Landed again after the database came back; the consumer was sought to the offsets in
    # PostgreSQL, so what was decoded meanwhile is read again.
    RESEEKED = "reseeked"
    STOPPED = "stopped"  # asked to stop during an outage: nothing committed, replayed later
    # Another sink claimed a partition of the batch since this one was assigned it: nothing
    # committed; the sink rejoins the group (``consumer_outdated``) and reads from the stored
    # offsets of whatever it is assigned then.
    FENCED = "fenced"


class Finished(NamedTuple):
    outcome: Outcome
    batch: Batch
    result: LandResult | None  # None when STOPPED or FENCED
    seconds: float             # from hand-over to commit


@dataclass(frozen=True)
class InFlight:
    batch: Batch
    started: float
    future: Future


class Checkpoint:
    """Owns the consumer's positions and the landing in flight; ``consumer`` is set by the
    sink once subscribed with ``on_assign``, ``on_revoke`` and ``on_lost``."""

    def __init__(self, writer: Writer, topic: str, stop: StopFlag, *, publish: Publish,
                 identity: TopicIdentity, idle_batch: int,
                 backoff: Callable[[], Backoff] = Backoff) -> None:
        self.writer = writer
        self.topic = topic
        self.stop = stop
        self.publish = publish
        # Says which stored offsets are a deleted incarnation's (sink/incarnation.py).
        self.identity = identity
        self.idle_batch = idle_batch  # most messages one consume() takes while waiting
        self.backoff = backoff
        self.consumer: Consumer | None = None
        self.assigned: set[tuple[str, int]] = set()
        self.landed: dict[tuple[str, int], int] = {}  # next offsets written to PostgreSQL
        # The offset each partition's next message should have: a seek's target or the last
        # message read + 1 (the decoder advances it). Anything else is an offset jump.
        self.expected: dict[tuple[str, int], int] = {}
        self._kafka_offsets: dict[tuple[str, int], int] = {}  # landed, not yet told to Kafka
        self._kafka_committed_at = 0.0
        self._lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-land")
        self._in_flight: InFlight | None = None
        # The sink replaces its consumer before the next read when this is set: the topic was
        # created again since the consumer was assigned partitions (it holds the deleted
        # topic's metadata), or a landing was fenced (the group moved on without this sink).
        self._consumer_assigned = False
        self.consumer_outdated: str | None = None  # why, when it is

    def setup(self) -> None:
        self.with_database(self.writer.setup)
        metrics.DB_AVAILABLE.set(1)  # it answered: an idle sink must not read as cut off

    def close(self) -> None:
        self._lander.shutdown(wait=True)
        if self.consumer is not None:
            try:
                self.commit_to_kafka(force=True)
            except Exception as exc:  # noqa: BLE001 - advisory offsets; PostgreSQL has them
                log.warning("final offset commit to Kafka failed (harmless): %s", exc)
            self.consumer.close()  # leaves the group: partitions move on at once
        self.writer.close()

    # -- the landing in flight --------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    def submit(self, batch: Batch) -> None:
        """Start landing ``batch`` on the landing thread; the previous one must be finished."""
        assert self._in_flight is None, "landings are strictly sequential"
        self._in_flight = InFlight(batch, time.perf_counter(),
                                   self._lander.submit(self.writer.land, batch.landing,
                                                       self.publish))

    def finish(self) -> Finished | None:
        """Wait for the landing in flight (None: there is none); on a lost database, land it
        again here with backoff. Only then are its offsets landed and told to Kafka."""
        flight = self._in_flight
        if flight is None:
            return None
        try:
            try:
                result, outcome = flight.future.result(), Outcome.LANDED
            except CONNECTION_ERRORS:
                result, outcome = self._land_with_retry(flight.batch.landing), Outcome.RESEEKED
                if result is None:
                    return Finished(Outcome.STOPPED, flight.batch, None, 0.0)
        except LandingFenced as exc:
            self._fenced(exc)
            return Finished(Outcome.FENCED, flight.batch, None, 0.0)
        finally:
            self._in_flight = None
        metrics.DB_AVAILABLE.set(1)
        seconds = time.perf_counter() - flight.started
        # Only partitions still ours: a revoked one was committed by on_revoke, and its new
        # owner's offset must not be moved back.
        mine = [(tp, o) for tp, o in flight.batch.landing.next_offsets.items()
                if tp in self.assigned]
        self.landed.update(mine)
        self._kafka_offsets.update(mine)
        self.commit_to_kafka()
        return Finished(outcome, flight.batch, result, seconds)

    def _fenced(self, exc: LandingFenced) -> None:
        """The group gave partitions of this sink to another while it was paused (past its
        session timeout: a GC pause, SIGSTOP, a slow disk), and that sink claimed them: drop
        everything decoded, forget every partition (nothing of them goes to Kafka either) and
        rejoin with a new consumer, which starts at the offsets stored in PostgreSQL."""
        metrics.FENCED_LANDINGS.inc()
        log.warning("landing fenced, nothing of it stored: %s. This sink was paused while the "
                    "group moved its partitions; it drops its batch and rejoins the group", exc)
        self._kafka_offsets.clear()
        self.forget([TopicPartition(t, p) for t, p in list(self.assigned)])
        self.consumer_outdated = "a fenced landing"

    def await_in_flight(self) -> None:
        """Callbacks wait for the landing in flight (its result is handled by ``finish``)."""
        if self._in_flight is not None:
            wait([self._in_flight.future])

    # -- Kafka's offsets, for lag tooling ---------------------------------------------------
    def commit_to_kafka(self, *, force: bool = False) -> None:
        """Commit the newest landed offsets to Kafka, at most every KAFKA_COMMIT_INTERVAL_S.

        Adaptive batching lands a small transaction every few milliseconds at moderate rates:
        an OffsetCommit for each queued ahead of the group heartbeats on the coordinator
        connection until the session timed out (every ~35 s at 2,000 events/s, `make soak`)."""
        now = time.monotonic()
        if not self._kafka_offsets or (not force and
                                       now - self._kafka_committed_at < KAFKA_COMMIT_INTERVAL_S):
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._kafka_offsets.items()
                   if (t, p) in self.assigned]
        self._kafka_offsets.clear()
        self._kafka_committed_at = now
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=True)

    # -- rebalancing ------------------------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition at the offset stored with the rows (PostgreSQL is truth)."""
        self.await_in_flight()
        # Inside a callback the consumer must not be polled: wait with plain sleeps.
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        stored = self.with_database(lambda: self.writer.claim(self.topic, mine),
                                    serve_group=False)
        if stored is None:  # stopping while the database was down: assign nothing
            return
        self.start_positions(partitions, stored, serve_group=False)
        if self.stop:  # stopped while the database was down: assign nothing
            return
        for tp in partitions:
            self.assigned.add((tp.topic, tp.partition))
            metrics.SINK_PARTITIONS.labels(tp.topic, str(tp.partition)).set(1)
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition paused across its loss and return: one lost while an
        # outage had paused it (``_land_with_retry``) would come back never to be read again.
        consumer.resume(partitions)
        self._consumer_assigned = True
        log.info("assigned %s", ", ".join(f"{tp.partition}@{tp.offset}" for tp in partitions))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what is written (after the landing in flight), forget the rest."""
        self.await_in_flight()
        flight = self._in_flight
        if flight is not None and flight.future.exception() is None:
            self.landed.update(flight.batch.landing.next_offsets)
        written = [TopicPartition(tp.topic, tp.partition, self.landed[(tp.topic, tp.partition)])
                   for tp in partitions if (tp.topic, tp.partition) in self.landed]
        self.forget(partitions)
        if written:
            try:
                consumer.commit(offsets=written, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - Kafka offsets are advisory here
                log.warning("commit on revoke failed (harmless, offsets are in PostgreSQL): %s",
                            exc)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget partitions the group took away (session timed out): no commit. The member
        is no longer in the group, so a commit is refused as fenced, and librdkafka turns
        that into a fatal error that kills the consumer (`make soak`, under CPU pressure).
        Nothing is lost: the offsets of what was written are in PostgreSQL."""
        self.await_in_flight()
        self.forget(partitions)
        log.warning("partitions lost (session timeout): %s; the group reassigns them",
                    ", ".join(str(tp.partition) for tp in partitions))

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.discard((tp.topic, tp.partition))
            self.landed.pop((tp.topic, tp.partition), None)
            self.expected.pop((tp.topic, tp.partition), None)
            metrics.forget_partition(tp.topic, tp.partition)
        for topic in {tp.topic for tp in partitions}:
            self.writer.release(topic, [tp.partition for tp in partitions if tp.topic == topic])

    def replace_consumer(self, subscribed: Callable[[], Consumer]) -> None:
        """Close the consumer and take a new one in the same group (see ``restart_topic``):
        the old one leaves (its partitions forgotten, nothing of the deleted topic committed),
        the new one's assignment starts each partition at the offsets stored in PostgreSQL."""
        self._consumer_assigned, self.consumer_outdated = False, None
        topic = self.topic
        self.await_in_flight()
        self.landed = {tp: o for tp, o in self.landed.items() if tp[0] != topic}
        self._kafka_offsets = {tp: o for tp, o in self._kafka_offsets.items() if tp[0] != topic}
        self.consumer.close()  # serves the revocation (commits what is landed, forgets)
        self.forget([TopicPartition(t, p) for t, p in list(self.assigned)])
        self.consumer = subscribed()

    # -- where reading starts ---------------------------------------------------------------
    def start_positions(self, partitions: list[TopicPartition],
                        stored: Mapping[int, StoredOffset], *, serve_group: bool = True) -> None:
        """Set each partition's ``offset`` to where reading starts: its stored offset; the
        beginning where none is stored, or where the stored one belongs to a deleted
        incarnation of the topic (another topic id)."""
        live, old = self.identity.assigned(stored, [tp.partition for tp in partitions])
        for tp in partitions:
            at = stored.get(tp.partition)
            where = (tp.topic, tp.partition)
            if at is None:
                tp.offset = OFFSET_BEGINNING
                self.expected.pop(where, None)  # never read: no hole can be ours
            elif tp.partition in old:
                tp.offset = OFFSET_BEGINNING
                self.expected[where] = 0  # a new topic's offsets start at 0
            else:
                tp.offset = self.expected[where] = at.next_offset
        if old:
            self.restart_topic(set(old.values()), live, list(old), serve_group=serve_group)

    def restart_topic(self, old_ids: set[str], live: str, partitions: list[int], *,
                      serve_group: bool = True) -> None:
        """Report a re-created topic once: log, metric, and the new id's offsets stored at
        once (replacing the deleted topic's), so a restart does not report it again."""
        topic = self.topic
        self.await_in_flight()  # the writer's connection is the landing thread's until then
        log.warning("topic %s was deleted and created again (id %s -> %s): reading the new "
                    "topic from its beginning", topic, ", ".join(sorted(old_ids)), live)
        metrics.TOPIC_RECREATIONS.labels(topic).inc()
        self.with_database(lambda: self.writer.restart_offsets(topic, partitions, live),
                           serve_group=serve_group)
        # librdkafka keeps the deleted topic's partition leader epochs and ignores metadata of
        # the new one, whose epochs start again at 0 (confluentinc/librdkafka#4898): after any
        # leader change of the old topic (a broker restart) this consumer would never fetch the
        # new topic, and its offset lookups fail forever without an error the sink sees. A new
        # consumer has no such cache; the sink replaces this one before it reads again (a
        # consumer assigned nothing yet, as at start-up, learnt only the new topic).
        self.consumer_outdated = (f"the re-creation of topic {self.topic}"
                                  if self._consumer_assigned else None)

    # -- PostgreSQL down --------------------------------------------------------------------
    def with_database(self, action, *, serve_group: bool = True):
        """Run ``action`` until PostgreSQL answers (backoff), or return None when stopping."""
        backoff = self.backoff()
        while True:
            try:
                return action()
            except CONNECTION_ERRORS as exc:
                self.writer.reset()
                delay = backoff.next()
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs",
                            str(exc).strip().splitlines()[0], delay)
                if serve_group and self.consumer is not None:
                    self._idle(delay)
                else:
                    time.sleep(delay)
                if self.stop:
                    return None

    def _land_with_retry(self, landing: Landing) -> LandResult | None:
        """Land the batch; while PostgreSQL is down, pause consumption and retry with backoff.

        Afterwards every partition is sought to its stored offset: whatever was fetched or
        decoded meanwhile is read again, and the database says from where.
        """
        backoff = self.backoff()
        self.consumer.pause(self.consumer.assignment())
        while True:
            metrics.DB_AVAILABLE.set(0)
            self.writer.reset()
            delay = backoff.next()
            log.warning("PostgreSQL unavailable; retrying the batch in %.1fs", delay)
            self._idle(delay)
            if self.stop:
                return None
            # Partitions revoked meanwhile belong to another sink now.
            landing = keep_partitions(landing, self.assigned)
            try:
                result = self.writer.land(landing, self.publish)
                break
            except CONNECTION_ERRORS as exc:
                log.warning("still unavailable: %s", str(exc).strip().splitlines()[0])
        self._resume_from_stored_offsets()
        return result

    def _idle(self, seconds: float) -> None:
        """Wait while serving group callbacks; anything fetched meanwhile is re-read later."""
        deadline = time.monotonic() + seconds
        while not self.stop and time.monotonic() < deadline:
            self.consumer.consume(self.idle_batch, min(0.5, seconds))

    def _resume_from_stored_offsets(self) -> None:
        stored = self.with_database(lambda: self.writer.stored_offsets(self.topic)) or {}
        assignment = self.consumer.assignment()
        self.consumer.resume(assignment)
        self.start_positions(assignment, stored)
        for tp in assignment:
            self.consumer.seek(tp)
