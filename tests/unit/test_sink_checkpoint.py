"""The sink's checkpoint layer without services: a fake writer plays PostgreSQL (offsets in a
dict, a connection that can be lost), a fake consumer records what Kafka is told, a fake admin
answers (or not) which topic id the topic has. What is checked is the order: land, then
commit; after an outage, seek where PostgreSQL says; offsets of a deleted topic are never
trusted, also when the broker did not say its id at first."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future
from types import SimpleNamespace

import orjson
import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import REGISTRY

from streamflow.db.landing import LandResult, StoredOffset
from streamflow.errors import LandingFenced
from streamflow.sink import checkpoint as checkpoint_module
from streamflow.sink.batch import Batch, build_batch
from streamflow.sink.checkpoint import Checkpoint, Outcome
from streamflow.sink.incarnation import TopicIdentity
from streamflow.workers.runtime import Backoff

T = "user-events"
A = "0b5e1c57-8a43-4cb4-9f83-9f2b8f6fe0a1"
B = "7d0e3f1a-52c9-4e0a-b0a4-2f1f0d6b9e44"
EVENT = orjson.dumps({"event_id": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"})


class Stop:
    def __init__(self) -> None:
        self.raised = False

    def __bool__(self) -> bool:
        return self.raised


class FakeWriter:
    """Stores offsets as one landing transaction would; ``down`` landings fail as a lost
    connection; ``gate``, when given, holds each landing until it is set."""

    def __init__(self, log: list, *, down: int = 0, stored: dict | None = None,
                 gate: threading.Event | None = None, on_failure=None) -> None:
        self.log, self.down, self.gate, self.on_failure = log, down, gate, on_failure
        self.stored: dict[int, StoredOffset] = dict(stored or {})
        self.landings: list[dict] = []  # next offsets of each committed landing, in order
        self.entered = threading.Event()
        self.resets = self.active = self.most_active = 0
        self.restarted: list[tuple] = []
        # The zombie fence as PostgreSQL keeps it: each partition's epoch, raised by a claim
        # (``steal``: another sink's), and the epochs this writer claimed under.
        self.epochs: dict[int, int] = {}
        self.mine: dict[int, int] = {}

    def setup(self) -> None:
        pass

    def land(self, landing, publish) -> LandResult:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            self.entered.set()
            if self.gate is not None:
                self.gate.wait()
            if self.down:
                self.down -= 1
                if self.on_failure is not None:
                    self.on_failure()
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            fenced = [(T, p) for _, p in landing.next_offsets
                      if self.mine.get(p) is None or self.mine[p] != self.epochs.get(p)]
            if fenced:
                raise LandingFenced(fenced)
            for (_, partition), offset in landing.next_offsets.items():
                self.stored[partition] = StoredOffset(offset, landing.topic_ids.get(T))
            self.landings.append(dict(landing.next_offsets))
            self.log.append(("landed", dict(landing.next_offsets)))
            return LandResult(inserted=len(landing.rows), dead_lettered=0, db_rejected=0)
        finally:
            self.active -= 1

    def stored_offsets(self, topic: str) -> dict[int, StoredOffset]:
        return dict(self.stored)

    def claim(self, topic: str, partitions) -> dict[int, StoredOffset]:
        for partition in partitions:
            self.steal(partition)
            self.mine[partition] = self.epochs[partition]
        return {p: at for p, at in self.stored.items() if p in partitions}

    def steal(self, partition: int) -> None:
        """Another sink claims ``partition``."""
        self.epochs[partition] = self.epochs.get(partition, 0) + 1

    def release(self, topic: str, partitions) -> None:
        for partition in partitions:
            self.mine.pop(partition, None)

    def restart_offsets(self, topic: str, partitions, topic_id: str) -> None:
        self.restarted.append((topic, list(partitions), topic_id))
        for partition in partitions:
            self.stored[partition] = StoredOffset(0, topic_id)

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        pass


class FakeConsumer:
    """Records pause and resume (when they change a partition), seek and commit; ``served``
    runs once, inside the next consume(), as librdkafka serves group callbacks there. As in
    librdkafka, a partition stays paused across its loss and a new assignment."""

    def __init__(self, log: list) -> None:
        self.log = log
        self.partitions: list[int] = []
        self.paused: set[int] = set()
        self.served = None

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(T, p) for p in self.partitions]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.partitions += [tp.partition for tp in partitions]

    def pause(self, partitions) -> None:
        self.paused |= {tp.partition for tp in partitions}
        self.log.append(("pause", sorted(tp.partition for tp in partitions)))

    def resume(self, partitions) -> None:
        resumed = sorted({tp.partition for tp in partitions} & self.paused)
        self.paused -= set(resumed)
        if resumed:
            self.log.append(("resume", resumed))

    def seek(self, tp: TopicPartition) -> None:
        self.log.append(("seek", tp.partition, tp.offset))

    def commit(self, offsets, asynchronous: bool) -> None:
        self.log.append(("commit", sorted((tp.partition, tp.offset) for tp in offsets),
                         "async" if asynchronous else "sync"))

    def consume(self, num: int, timeout: float) -> list:
        served, self.served = self.served, None
        if served is not None:
            served()
        time.sleep(timeout)
        return []

    def close(self) -> None:
        self.log.append(("close",))


BUSY = KafkaException(KafkaError(KafkaError._TIMED_OUT, "the broker did not answer"))


NEVER = "never answers"


class FakeAdmin:
    """Answers each question about a topic's id with the next of ``answers`` (the last one
    repeats): an id, or an exception (the broker did not say)."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.asked = 0

    def describe_topics(self, collection, request_timeout: float) -> dict[str, Future]:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        future: Future = Future()
        if answer is NEVER:
            pass  # the request is lost: its future never completes
        elif isinstance(answer, Exception):
            future.set_exception(answer)
        else:
            bits = uuid.UUID(answer).int
            future.set_result(SimpleNamespace(topic_id=SimpleNamespace(
                get_most_significant_bits=lambda: bits >> 64,
                get_least_significant_bits=lambda: bits & ((1 << 64) - 1))))
        return {name: future for name in collection.topic_names}


def identity(*answers: str | Exception) -> TopicIdentity:
    found = TopicIdentity(T, timeout_s=1.0)
    found.admin = FakeAdmin(*answers)
    return found


def make(writer: FakeWriter, log: list, *, partitions=(0, 1), stop=None,
         live: str | Exception = BUSY) -> Checkpoint:
    """A checkpoint whose consumer was assigned ``partitions`` (at their stored offsets)."""
    cp = Checkpoint(writer, T, stop if stop is not None else Stop(), publish=lambda _: None,
                    identity=identity(live), idle_batch=100,
                    backoff=lambda: Backoff(0.01, 0.01))
    cp.consumer = FakeConsumer(log)
    cp.on_assign(cp.consumer, [TopicPartition(T, p) for p in partitions])
    return cp


def batch(*offsets: tuple[int, int]) -> Batch:
    """A decoded batch of (partition, offset) messages."""
    messages = [Message(topic=T, partition=p, offset=o, value=EVENT, key=b"k")
                for p, o in offsets]
    return Batch(build_batch(messages).landing, len(messages), [], [])


def commits(log: list) -> list:
    return [entry[1:] for entry in log if entry[0] == "commit"]


@pytest.fixture
def log():
    return []


def test_kafka_is_told_only_offsets_postgresql_committed(log):
    writer = FakeWriter(log)
    cp = make(writer, log)
    cp.submit(batch((0, 0), (0, 1), (0, 2), (1, 0), (1, 1)))
    assert commits(log) == []  # however far the landing got: nothing before finish
    finished = cp.finish()
    assert finished.outcome is Outcome.LANDED and finished.result.inserted == 5
    assert log == [("landed", {(T, 0): 3, (T, 1): 2}), ("commit", [(0, 3), (1, 2)], "async")]
    assert cp.landed == {(T, 0): 3, (T, 1): 2}
    assert cp.finish() is None and not cp.busy


def test_a_lost_database_is_retried_then_every_partition_sought_to_its_stored_offsets(log):
    writer = FakeWriter(log, down=2, stored={0: StoredOffset(7, None), 1: StoredOffset(4, None),
                                             2: StoredOffset(42, None)})
    cp = make(writer, log, partitions=(0, 1, 2))
    cp.submit(batch((0, 7), (0, 8), (0, 9), (1, 4), (1, 5)))
    finished = cp.finish()
    assert finished.outcome is Outcome.RESEEKED and finished.result.inserted == 5
    assert writer.resets == 2  # the landing thread's failure, then one failed retry
    assert log == [
        ("pause", [0, 1, 2]),
        ("landed", {(T, 0): 10, (T, 1): 6}),
        ("resume", [0, 1, 2]),
        # Where PostgreSQL says, also for a partition the batch did not touch.
        ("seek", 0, 10), ("seek", 1, 6), ("seek", 2, 42),
        ("commit", [(0, 10), (1, 6)], "async"),
    ]
    assert cp.expected == {(T, 0): 10, (T, 1): 6, (T, 2): 42}
    assert REGISTRY.get_sample_value("streamflow_database_available") == 1.0


def test_a_stop_during_an_outage_ends_it_with_nothing_committed(log):
    stop = Stop()

    def raise_stop_on_the_retry() -> None:
        if writer.down == 0:
            stop.raised = True

    writer = FakeWriter(log, down=2, on_failure=raise_stop_on_the_retry)
    cp = make(writer, log, stop=stop)
    cp.submit(batch((0, 0), (1, 0)))
    finished = cp.finish()
    assert finished.outcome is Outcome.STOPPED and finished.result is None
    assert log == [("pause", [0, 1])]  # never resumed, sought or committed
    assert writer.landings == [] and cp.landed == {}
    cp.close()
    assert log == [("pause", [0, 1]), ("close",)]  # the final commit has nothing to tell
    assert REGISTRY.get_sample_value("streamflow_database_available") == 0.0


def test_a_revoke_waits_for_the_landing_in_flight_and_commits_what_it_wrote(log):
    gate, revoke_waits = threading.Event(), threading.Event()
    writer = FakeWriter(log, gate=gate)
    cp = make(writer, log)
    await_in_flight = cp.await_in_flight

    def observed() -> None:
        """on_revoke starts waiting for the landing: only now may the landing go on."""
        revoke_waits.set()
        await_in_flight()

    cp.await_in_flight = observed
    cp.submit(batch((0, 0), (0, 1), (1, 0)))
    assert writer.entered.wait(10)
    revoke = threading.Thread(target=cp.on_revoke, args=(cp.consumer, [TopicPartition(T, 0)]))
    revoke.start()
    try:
        # The landing is held until on_revoke waits for it: a revoke that did not wait would
        # commit (or forget) before the landing wrote anything, and the log below would differ.
        assert revoke_waits.wait(10), "on_revoke never waited for the landing in flight"
        assert revoke.is_alive() and log == []
    finally:
        gate.set()  # a failed test must not leave the landing thread held
    revoke.join(10)
    assert not revoke.is_alive()
    assert log == [("landed", {(T, 0): 2, (T, 1): 1}), ("commit", [(0, 2)], "sync")]
    assert cp.assigned == {(T, 1)} and (T, 0) not in cp.landed and (T, 0) not in cp.expected
    assert cp.finish().outcome is Outcome.LANDED
    # The revoked partition is its new owner's: only the one still ours is kept and told.
    assert cp.landed == {(T, 1): 1}
    assert commits(log)[-1] == ([(1, 1)], "async")


def test_a_partition_revoked_during_an_outage_is_dropped_from_the_held_batch(log):
    writer = FakeWriter(log, down=1)
    cp = make(writer, log)

    def revoke_partition_1() -> None:
        cp.on_revoke(cp.consumer, [TopicPartition(T, 1)])
        cp.consumer.partitions.remove(1)

    cp.consumer.served = revoke_partition_1
    cp.submit(batch((0, 0), (0, 1), (1, 0), (1, 1), (1, 2)))
    finished = cp.finish()
    assert finished.outcome is Outcome.RESEEKED and finished.result.inserted == 2
    assert writer.landings == [{(T, 0): 2}]  # nothing of partition 1 written
    assert log == [("pause", [0, 1]), ("landed", {(T, 0): 2}), ("resume", [0]),
                   ("seek", 0, 2), ("commit", [(0, 2)], "async")]
    assert cp.assigned == {(T, 0)} and cp.expected == {(T, 0): 2}


def test_partitions_lost_during_an_outage_are_read_again_when_assigned_again(log):
    """The session timed out while PostgreSQL was down (consumption paused): both partitions
    were lost; when the group gives one back, it is read, not left paused (librdkafka keeps
    the pause across the loss)."""
    writer = FakeWriter(log, down=1)
    cp = make(writer, log)

    def lose_both() -> None:
        cp.on_lost(cp.consumer, [TopicPartition(T, 0), TopicPartition(T, 1)])
        cp.consumer.partitions.clear()

    cp.consumer.served = lose_both
    cp.submit(batch((0, 0), (1, 0)))
    assert cp.finish().outcome is Outcome.RESEEKED and writer.landings == [{}]
    cp.on_assign(cp.consumer, [TopicPartition(T, 0)])
    assert cp.assigned == {(T, 0)} and cp.consumer.paused.isdisjoint(cp.consumer.partitions)


def test_landings_are_sequential_and_kafka_offsets_only_move_forward(log, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "KAFKA_COMMIT_INTERVAL_S", 0.0)  # one per landing
    writer = FakeWriter(log)
    cp = make(writer, log)
    batches = [batch((0, 0), (0, 1), (0, 2)), batch((0, 3), (0, 4), (1, 0), (1, 1)),
               batch((0, 5), (0, 6)), batch((1, 2))]
    outcomes = []
    for i, b in enumerate(batches):
        if i == 2:
            writer.down = 1  # the third landing meets an outage
        cp.submit(b)
        outcomes.append(cp.finish().outcome)
    assert outcomes == [Outcome.LANDED, Outcome.LANDED, Outcome.RESEEKED, Outcome.LANDED]
    assert writer.most_active == 1
    assert writer.landings == [{(T, 0): 3}, {(T, 0): 5, (T, 1): 2}, {(T, 0): 7}, {(T, 1): 3}]
    assert [c for c, _ in commits(log)] == [[(0, 3)], [(0, 5), (1, 2)], [(0, 7)], [(1, 3)]]


def test_lost_partitions_are_forgotten_without_a_commit(log):
    class NoCommits(FakeConsumer):
        def commit(self, **kwargs):
            raise AssertionError("a lost assignment must not commit (it is fenced)")

    cp = make(FakeWriter(log), log)
    cp.consumer = NoCommits(log)
    cp.landed = {(T, 0): 10, (T, 1): 20}
    cp.on_lost(cp.consumer, [TopicPartition(T, 0)])
    assert cp.assigned == {(T, 1)} and cp.landed == {(T, 1): 20}


def test_a_fenced_landing_is_dropped_and_the_sink_rejoins_from_the_stored_offsets(log):
    """Another sink claimed partition 1 while this one was paused past its session timeout:
    the landing stores nothing, Kafka is told nothing, every partition is forgotten and the
    consumer is replaced; the new assignment claims again and lands."""
    writer = FakeWriter(log, stored={0: StoredOffset(5, None)})
    cp = make(writer, log)
    fenced_before = REGISTRY.get_sample_value("streamflow_sink_fenced_landings_total") or 0
    assert REGISTRY.get_sample_value("streamflow_sink_partitions",
                                     {"topic": T, "partition": "1"}) == 1
    writer.steal(1)  # the group gave partition 1 to another sink, which claimed it
    cp.submit(batch((0, 5), (0, 6), (1, 0)))
    finished = cp.finish()
    assert finished.outcome is Outcome.FENCED and finished.result is None
    assert writer.landings == [] and commits(log) == []
    assert cp.assigned == set() and cp.landed == {} and cp.expected == {}
    assert cp.consumer_outdated and writer.mine == {}
    assert REGISTRY.get_sample_value("streamflow_sink_fenced_landings_total") == fenced_before + 1
    assert REGISTRY.get_sample_value("streamflow_sink_partitions",
                                     {"topic": T, "partition": "1"}) is None
    cp.replace_consumer(lambda: FakeConsumer(log))
    assert not cp.consumer_outdated and log[-1] == ("close",)
    cp.on_assign(cp.consumer, [TopicPartition(T, 0)])  # the group's new assignment
    assert cp.expected == {(T, 0): 5}
    cp.submit(batch((0, 5), (0, 6)))
    assert cp.finish().outcome is Outcome.LANDED and writer.landings == [{(T, 0): 7}]


def test_offsets_go_to_kafka_at_most_once_a_second_however_many_batches_land(log):
    cp = make(FakeWriter(log), log)
    for i in range(1, 101):  # 100 small batches in well under a second
        cp.submit(batch((i % 2, i - 1)))
        cp.finish()
    assert len(commits(log)) == 1  # the first; the rest wait for the interval
    cp._kafka_committed_at -= checkpoint_module.KAFKA_COMMIT_INTERVAL_S
    cp.commit_to_kafka()
    assert commits(log)[-1] == ([(0, 100), (1, 99)], "async")  # only the newest of each


def test_an_assignment_starts_at_the_stored_offsets_or_the_beginning(log):
    writer = FakeWriter(log, stored={0: StoredOffset(10, A), 1: StoredOffset(5, None)})
    cp = Checkpoint(writer, T, Stop(), publish=lambda _: None, identity=identity(A),
                    idle_batch=100)
    cp.consumer = FakeConsumer(log)
    partitions = [TopicPartition(T, p) for p in (0, 1, 2)]
    cp.on_assign(cp.consumer, partitions)
    # An offset stored before topic ids were recorded is trusted; none stored: the beginning.
    assert [tp.offset for tp in partitions] == [10, 5, OFFSET_BEGINNING]
    assert cp.expected == {(T, 0): 10, (T, 1): 5}
    assert writer.restarted == [] and not cp.consumer_outdated


def test_offsets_of_a_deleted_topic_restart_the_new_one_at_its_beginning(log):
    writer = FakeWriter(log, stored={0: StoredOffset(10, A), 1: StoredOffset(5, A)})
    cp = make(writer, log, partitions=(2,), live=B)  # this consumer knows the old topic
    partitions = [TopicPartition(T, p) for p in (0, 1)]
    cp.on_assign(cp.consumer, partitions)
    assert [tp.offset for tp in partitions] == [OFFSET_BEGINNING, OFFSET_BEGINNING]
    assert cp.expected == {(T, 0): 0, (T, 1): 0}
    assert writer.restarted == [(T, [0, 1], B)]
    assert cp.consumer_outdated


def test_a_failed_topic_id_lookup_is_asked_again_and_then_protects_as_at_assignment(log):
    """The broker did not say the topic's id at assignment (busy, a leader moving): the
    stored offsets are read from for now, the id is asked again, and once it comes the
    offsets of the deleted incarnation restart exactly as they would have at assignment."""
    writer = FakeWriter(log, stored={0: StoredOffset(10, A), 1: StoredOffset(5, A),
                                     2: StoredOffset(7, None)})
    ids = identity(BUSY, BUSY, B)  # two failed lookups, then the answer
    cp = Checkpoint(writer, T, Stop(), publish=lambda _: None, identity=ids, idle_batch=100)
    cp.consumer = FakeConsumer(log)
    partitions = [TopicPartition(T, p) for p in (0, 1, 2)]
    cp.on_assign(cp.consumer, partitions)
    assert [tp.offset for tp in partitions] == [10, 5, 7]  # nothing to compare with yet
    assert writer.restarted == [] and ids.known is None
    assert ids.unverified == {0: A, 1: A}  # kept for the answer, never trusted for good

    assert ids.follow([0, 1, 2]) is None  # asked again: still no answer, still waiting
    assert ids.unverified == {0: A, 1: A}
    restart = ids.follow([0, 1, 2])  # answered: the topic is another incarnation now
    assert (restart.old_ids, restart.live, restart.partitions) == ({A}, B, [0, 1])
    assert ids.known == B and ids.ids == {T: B} and ids.unverified == {}
    assert ids.admin.asked == 3


def test_a_topic_id_lookup_that_never_comes_back_is_a_failed_lookup_not_a_crash():
    """The broker answering the description was SIGKILLed: the future outlives its own
    request timeout. The sink went down with a TimeoutError from its assignment callback."""
    found = TopicIdentity(T, timeout_s=0.05)
    found.admin = FakeAdmin(NEVER)
    assert found.learn() is None
    # A probe lost the same way is given up after twice the timeout, and asked again.
    assert found.questioned() is False and found.admin.asked == 2
    time.sleep(0.15)
    found._probed_at -= 1.0  # the probe interval (TOPIC_ID_CHECK_S) has passed too
    assert found.questioned() is False and found._probe is None
    assert found.questioned() is False and found.admin.asked == 3


def test_a_probe_answer_after_a_failed_lookup_calls_for_a_comparison(monkeypatch):
    from streamflow.sink import incarnation

    monkeypatch.setattr(incarnation, "TOPIC_ID_CHECK_S", 0.0)
    ids = identity(BUSY, BUSY, A)
    live, old = ids.assigned({0: StoredOffset(10, A)}, [0])
    assert (live, old) == (None, {})
    assert ids.questioned() is False  # the probe goes out ...
    assert ids.questioned() is False  # ... and fails: asked again
    assert ids.questioned() is False
    assert ids.questioned() is True  # an answer while offsets wait to be compared
    assert ids.follow([0]) is None and ids.known == A  # the same incarnation: read on
    assert ids.questioned() is False and ids.questioned() is False  # nothing waits now


def test_a_topic_re_created_while_read_restarts_every_assigned_partition():
    ids = identity(A, B)
    assert ids.assigned({0: StoredOffset(10, A)}, [0, 1]) == (A, {})
    restart = ids.follow([1, 0])
    assert (restart.old_ids, restart.live, restart.partitions) == ({A}, B, [0, 1])
    assert ids.follow([]) is None  # B is known now: nothing more
