"""The producer worker's delivery-report handling, against a stand-in for the Kafka client:
"not delivered yet" is sent again (never dropped), a refusal still fails the run loudly."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError

from streamflow.errors import ProducerDeliveryFailed
from streamflow.kafka_connection import KafkaConnection
from streamflow.producer import worker
from streamflow.producer.worker import ProducerConfig, ProducerStats, run_producer
from streamflow.workers.runtime import StopFlag


class _Report:
    """What a delivery report's message offers: the key and value that were sent."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self._key, self._value = key, value

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


class FakeProducer:
    """Each poll or flush settles everything queued: the first ``errors`` settle with a
    delivery report carrying that error code (a broker away for a while), the rest are
    delivered. Only errors are reported, as with delivery.report.only.error."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.queue: list[tuple[bytes, bytes, object]] = []
        self.delivered: list[bytes] = []

    def produce(self, _topic, value, key, headers=None, on_delivery=None) -> None:
        self.queue.append((key, value, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        queue, self.queue = self.queue, []
        for key, value, on_delivery in queue:
            if self.errors:
                on_delivery(KafkaError(self.errors.pop(0)), _Report(key, value))
            else:
                self.delivered.append(value)
        return len(queue)

    def flush(self, timeout: float = 0) -> int:
        self.poll(timeout)
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)


@pytest.fixture
def client(monkeypatch) -> SimpleNamespace:
    """Installs a FakeProducer (set ``client.errors`` first); records the client overrides."""
    slot = SimpleNamespace(errors=[], fake=None, overrides={})

    def factory(_bootstrap, **overrides):
        slot.overrides, slot.fake = overrides, FakeProducer(slot.errors)
        return slot.fake

    monkeypatch.setattr(worker.kafka_clients, "producer", factory)
    monkeypatch.setattr(worker, "wait_for_topic", lambda _producer, _topic: None)
    return slot


def _run(count: int, stats: ProducerStats | None = None) -> ProducerStats:
    config = ProducerConfig(KafkaConnection("fake:9092"), count=count, seed=7)
    return run_producer(config, b"k" * 32, StopFlag(), stats=stats)


def test_events_timed_out_during_an_outage_are_sent_again_until_delivered(client, caplog):
    # Every event times out once and a third of them twice: a broker away for two timeouts.
    client.errors = [KafkaError._MSG_TIMED_OUT] * 150
    with caplog.at_level(logging.WARNING, logger="streamflow.producer"):
        stats = _run(100)
    assert (stats.produced, stats.delivered, stats.failed, stats.resent) == (100, 100, 0, 150)
    assert len(client.fake.delivered) == len(set(client.fake.delivered)) == 100
    warnings = [r for r in caplog.records if "sending them again" in r.getMessage()]
    assert len(warnings) == 1  # one warning per stall, not one per event


def test_other_retriable_errors_are_sent_again_too(client):
    client.errors = [KafkaError.NOT_ENOUGH_REPLICAS, KafkaError._TRANSPORT,
                     KafkaError.NOT_LEADER_FOR_PARTITION]
    stats = _run(10)
    assert (stats.delivered, stats.failed, stats.resent) == (10, 0, 3)


def test_an_event_kafka_refuses_for_good_still_fails_the_run(client):
    client.errors = [KafkaError.MSG_SIZE_TOO_LARGE]
    stats = ProducerStats()
    with pytest.raises(ProducerDeliveryFailed, match="1 events failed"):
        _run(10, stats)
    assert (stats.failed, stats.resent) == (1, 0)
    assert "MSG_SIZE_TOO_LARGE" in stats.first_error


def test_librdkafka_is_told_never_to_give_up_on_an_event_by_default(client):
    _run(1)
    assert client.overrides["message.timeout.ms"] == 0
    assert client.overrides["delivery.report.only.error"] is True
