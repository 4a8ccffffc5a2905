"""Adaptive sink batching: land what the consumer holds at once; wait only when it has none."""

from streamflow.kafka_connection import KafkaConnection
from streamflow.sink.worker import Sink, SinkConfig
from streamflow.workers.runtime import StopFlag


class FakeConsumer:
    """Holds ``ready`` messages now; ``arriving`` come in during a blocking wait."""

    def __init__(self, ready: int, arriving: int = 0) -> None:
        self.ready = list(range(ready))
        self.arriving = list(range(100, 100 + arriving))
        self.calls: list[tuple[int, float]] = []

    def consume(self, num: int, timeout: float) -> list:
        self.calls.append((num, timeout))
        if not self.ready and timeout > 0:
            self.ready, self.arriving = self.arriving, []
        taken, self.ready = self.ready[:num], self.ready[num:]
        return taken


def sink(consumer: FakeConsumer, batch_size: int = 1000) -> Sink:
    config = SinkConfig(KafkaConnection("k:9092"), "postgresql://x@/db", batch_size=batch_size)
    s = Sink(config, StopFlag())
    s.consumer = consumer
    return s


def test_what_is_there_lands_at_once_without_waiting_to_fill_the_batch():
    consumer = FakeConsumer(ready=3)
    assert sink(consumer).next_messages() == [0, 1, 2]
    assert consumer.calls == [(1000, 0)]  # never a blocking call while messages are there


def test_a_backlog_still_gives_full_batches():
    consumer = FakeConsumer(ready=2500)
    s = sink(consumer)
    assert [len(s.next_messages()) for _ in range(3)] == [1000, 1000, 500]
    assert all(timeout == 0 for _, timeout in consumer.calls)


def test_with_nothing_there_it_waits_for_the_first_message_and_takes_what_came_along():
    consumer = FakeConsumer(ready=0, arriving=5)
    assert sink(consumer).next_messages() == [100, 101, 102, 103, 104]
    assert consumer.calls[0] == (1000, 0)
    assert consumer.calls[1] == (1, 0.1)  # the idle wait is for one message, not a batch


def test_an_idle_consumer_returns_nothing_after_the_poll_timeout():
    consumer = FakeConsumer(ready=0)
    assert sink(consumer).next_messages() == []


class FakeError:
    def __init__(self, fatal: bool) -> None:
        self._fatal = fatal

    def fatal(self) -> bool:
        return self._fatal

    def code(self) -> int:
        return -150 if self._fatal else -191

    def __str__(self) -> str:
        return "Broker: Static consumer fenced by other consumer with same group.instance.id"


class FakeMessage:
    def __init__(self, fatal: bool) -> None:
        self._error = FakeError(fatal)

    def error(self):
        return self._error


def test_a_fatal_consumer_error_stops_the_sink_so_it_is_restarted():
    import pytest

    from streamflow.errors import ConsumerFailed

    s = sink(FakeConsumer(ready=0))
    assert s._usable(FakeMessage(fatal=False)) is False  # logged, skipped
    with pytest.raises(ConsumerFailed, match="fenced"):
        s._usable(FakeMessage(fatal=True))


def test_lost_partitions_are_forgotten_without_a_commit():
    from confluent_kafka import TopicPartition

    class NoCommits(FakeConsumer):
        def commit(self, **kwargs):
            raise AssertionError("a lost assignment must not commit (it is fenced)")

    s = sink(NoCommits(ready=0))
    s.assigned = {("t", 0), ("t", 1)}
    s.landed = {("t", 0): 10, ("t", 1): 20}
    s._on_lost(s.consumer, [TopicPartition("t", 0)])
    assert s.assigned == {("t", 1)} and s.landed == {("t", 1): 20}


def test_offsets_go_to_kafka_at_most_once_a_second_however_many_batches_land():
    from streamflow.sink import worker

    class Committing(FakeConsumer):
        commits: list = []

        def commit(self, offsets, asynchronous):
            Committing.commits.append([(tp.partition, tp.offset) for tp in offsets])

    s = sink(Committing(ready=0))
    s.assigned = {("t", 0), ("t", 1)}
    for i in range(1, 101):  # 100 small batches in well under a second
        s._kafka_offsets.update({("t", i % 2): i})
        s._commit_to_kafka()
    assert len(Committing.commits) == 1  # the first; the rest wait for the interval
    s._kafka_committed_at -= worker.KAFKA_COMMIT_INTERVAL_S
    s._commit_to_kafka()
    assert sorted(Committing.commits[-1]) == [(0, 100), (1, 99)]  # only the newest of each


def test_a_landing_lost_with_the_database_reseeks_or_stops():
    """The outcome decides whether decoded messages are kept: reseeked ones are read again."""
    from concurrent.futures import Future

    import psycopg

    from streamflow.sink.worker import InFlight, Outcome

    def flight() -> InFlight:
        lost: Future = Future()
        lost.set_exception(psycopg.OperationalError("server closed the connection"))
        return InFlight(batch=None, messages=0, started=0.0, future=lost, gaps=[],
                        produced_ms=[])

    s = sink(FakeConsumer(ready=0))
    s._land_with_retry = lambda _batch: None  # the stop flag was raised during the outage
    assert s._finish(flight()) is Outcome.STOPPED
