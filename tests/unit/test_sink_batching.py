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


class FakeMessage:
    def __init__(self, error) -> None:
        self._error = error

    def error(self):
        return self._error


FENCED = "Broker: Static consumer fenced by other consumer with same group.instance.id"


def test_a_fatal_consumer_error_stops_the_sink_so_it_is_restarted():
    """librdkafka hands a fatal error to consume() as code _FATAL with its fatal flag unset
    (`make chaos`: a static member fenced after a broker restart); the sink polled that dead
    client for good. Both forms stop it."""
    import pytest
    from confluent_kafka import KafkaError

    from streamflow.errors import ConsumerFailed

    s = sink(FakeConsumer(ready=0))
    transient = KafkaError(KafkaError._TRANSPORT, "broker down")
    assert s._usable([FakeMessage(transient)]) == []  # logged, skipped
    for fatal in (KafkaError(KafkaError._FATAL, f"Fatal error: {FENCED}"),
                  KafkaError(KafkaError.FENCED_INSTANCE_ID, FENCED, fatal=True)):
        with pytest.raises(ConsumerFailed, match="fenced"):
            s._usable([FakeMessage(fatal)])
