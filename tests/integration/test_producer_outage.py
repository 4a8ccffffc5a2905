"""The producer against a broker that stays away for longer than librdkafka's message
timeout: every event still lands exactly once (issue 12, "the producer never drops")."""

from __future__ import annotations

import threading
import time

from streamflow.infra import kafka_server
from streamflow.producer.worker import FLUSH_TIMEOUT_S, ProducerConfig, ProducerStats, run_producer
from streamflow.workers.runtime import StopFlag
from tests.conftest import TEST_PII_KEY, wait_for
from tests.integration.lanes import rows

EVENTS = 300
PRODUCE_S = 15.0  # the events are spread over this long, so many are sent while the broker is away
TIMEOUT_MS = 2_000  # message.timeout.ms for this test (the worker's default is "never")
OUTAGE_S = 3 * TIMEOUT_MS / 1000  # plus the broker's own stop and start time


def test_a_broker_outage_longer_than_the_message_timeout_loses_nothing(platform, lane, engine):
    stats = ProducerStats()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            run_producer(ProducerConfig(platform.kafka, topic=lane.topic, count=EVENTS,
                                        rate=EVENTS / PRODUCE_S, message_timeout_ms=TIMEOUT_MS),
                         TEST_PII_KEY, StopFlag(), stats=stats)
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    producer = threading.Thread(target=produce, name="producer", daemon=True)
    producer.start()
    wait_for(lambda: stats.produced >= EVENTS // 10, timeout_s=60,
             message="events flowing before the outage")
    kafka_server.stop(platform.settings)
    try:
        time.sleep(OUTAGE_S)
    finally:
        kafka_server.start(platform.settings, echo=lambda _m: None)
    producer.join(PRODUCE_S + FLUSH_TIMEOUT_S + 30)
    assert not producer.is_alive(), "the producer did not finish after the broker came back"
    if errors:
        raise errors[0]
    assert stats.resent > 0, "no event timed out: the outage did not outlast the timeout"
    assert (stats.produced, stats.delivered, stats.failed) == (EVENTS, EVENTS, 0)

    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[1] >= EVENTS, message=f"{EVENTS} events landed")
    time.sleep(1.0)  # nothing more may arrive
    landed, distinct_ids, _offsets = rows(engine, lane.topic)
    assert (landed, distinct_ids) == (EVENTS, EVENTS)
    assert lane.stop() == 0
