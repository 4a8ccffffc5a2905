"""Faults at the edge of the log, against the real broker and database: a topic deleted and
created again (a new topic id) is read from its beginning, and offsets gone before the sink
read them (retention, delete-records) become an ``offset_gap`` dead letter, never a silent
jump."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import text

from streamflow import kafka_clients
from streamflow.infra import kafka_server
from streamflow.kafka_clients import admin_client, producer
from streamflow.producer.worker import ProducerConfig, run_producer
from streamflow.sink.incarnation import recreate_topic, stored_incarnation, topic_ids
from streamflow.sink.worker import SinkConfig, run_sink
from streamflow.workers.runtime import StopFlag
from tests.conftest import TEST_PII_KEY, create_topic, wait_for, worker_env
from tests.integration.lanes import dead_letters as letters
from tests.integration.lanes import rows


def produce(platform, topic: str, count: int) -> None:
    stats = run_producer(ProducerConfig(platform.kafka, topic=topic, count=count),
                         TEST_PII_KEY, StopFlag())
    assert stats.delivered == count


def send_raw(platform, topic: str, value: bytes, partition: int = 0) -> None:
    prod = producer(platform.kafka)
    prod.produce(topic, value, b"k", partition=partition)
    assert prod.flush(30) == 0


def sink_until_idle(platform, topic: str) -> None:
    """The real sink, in-process (its metrics are this process's), until idle."""
    run_sink(SinkConfig(platform.kafka, platform.database_url, topic=topic,
                        group_id=f"g-{topic}", batch_size=500, stop_when_idle_s=3.0),
             StopFlag())


def counter(name: str, topic: str) -> float:
    return REGISTRY.get_sample_value(name, {"topic": topic}) or 0.0


def live_id(platform, topic: str) -> str | None:
    return topic_ids(admin_client(platform.kafka), [topic]).get(topic)


def recreate(platform, topic: str, partitions: int = 3) -> str:
    """Delete ``topic`` and create it again; its new id."""
    old = live_id(platform, topic)
    new = recreate_topic(platform.kafka, topic, partitions)
    assert new != old
    return new


def by_topic_id(engine, topic: str) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT kafka_topic_id::text, count(*) FROM raw.events WHERE kafka_topic = :t "
            "GROUP BY 1"), {"t": topic}).all())


def stored_ids(engine, topic: str) -> set[str | None]:
    with engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT topic_id::text FROM raw.consumer_offsets WHERE topic = :t"),
            {"t": topic}).scalars())


def test_a_topic_created_again_is_read_from_its_beginning(platform, engine, unique_name,
                                                           caplog):
    topic = create_topic(platform, unique_name)
    send_raw(platform, topic, b"old incarnation: not json")  # partition 0, offset 0
    produce(platform, topic, 1_000)
    sink_until_idle(platform, topic)
    old = live_id(platform, topic)
    assert rows(engine, topic)[1] == 1_000
    assert by_topic_id(engine, topic) == {old: 1_000}
    assert stored_ids(engine, topic) == {old}

    new = recreate(platform, topic)
    send_raw(platform, topic, b"new incarnation: not json")  # the same (partition, offset)
    produce(platform, topic, 1_500)
    # Before the sink has seen it, status says the stored offsets are a deleted topic's.
    stale = stored_incarnation(platform.database_url, platform.kafka, topic=topic,
                               group=f"g-{topic}")
    assert stale.outdated and stale.live_id == new
    before = counter("streamflow_topic_recreations_total", topic)

    sink_until_idle(platform, topic)

    assert rows(engine, topic)[1] == 2_500  # every event of both incarnations, once
    assert by_topic_id(engine, topic) == {old: 1_000, new: 1_500}
    dead = letters(engine, topic)
    assert [(d["topic_id"], d["source_partition"], d["source_offset"]) for d in dead] == [
        (old, 0, 0), (new, 0, 0)]
    assert bytes(dead[1]["payload"]) == b"new incarnation: not json"
    assert stored_ids(engine, topic) == {new}
    assert counter("streamflow_topic_recreations_total", topic) == before + 1
    assert f"topic {topic} was deleted and created again (id {old} -> {new}): reading the " \
           "new topic from its beginning" in caplog.text
    now = stored_incarnation(platform.database_url, platform.kafka, topic=topic,
                             group=f"g-{topic}")
    assert not now.outdated and now.stored == {new: 3}


class BusyBroker:
    """The sink's admin client, but the broker does not say a topic's id (a timeout, as when
    it is busy or a leader moves) until ``answers`` is set."""

    def __init__(self, admin) -> None:
        self.admin, self.answers = admin, threading.Event()

    def describe_topics(self, topics, **kwargs):
        if self.answers.is_set():
            return self.admin.describe_topics(topics, **kwargs)
        failed = Future()
        failed.set_exception(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
        return {name: failed for name in topics.topic_names}

    def __getattr__(self, name: str):
        return getattr(self.admin, name)


class Stop:
    def __init__(self) -> None:
        self.raised = False

    def __bool__(self) -> bool:
        return self.raised


def test_a_failed_topic_id_lookup_is_asked_again_and_the_re_creation_still_followed(
        platform, engine, unique_name, monkeypatch):
    """Re-created while the sink was away, and the broker cannot say the id at assignment:
    the sink reads from the stored offsets for now (the new topic holds more than them), and
    once the id comes, the new topic is read from its beginning all the same."""
    topic = create_topic(platform, unique_name)
    produce(platform, topic, 300)  # ~100 a partition
    sink_until_idle(platform, topic)
    old = live_id(platform, topic)
    new = recreate(platform, topic)
    produce(platform, topic, 1_500)  # ~500 a partition: past every stored offset
    busy: list[BusyBroker] = []
    real_admin_client = kafka_clients.admin_client

    def busy_admin_client(kafka, **kwargs) -> BusyBroker:
        busy.append(BusyBroker(real_admin_client(kafka, **kwargs)))
        return busy[-1]

    monkeypatch.setattr(kafka_clients, "admin_client", busy_admin_client)
    stop = Stop()
    sink = threading.Thread(target=run_sink, args=(SinkConfig(
        platform.kafka, platform.database_url, topic=topic, group_id=f"g-{topic}",
        batch_size=500), stop))
    sink.start()
    try:
        # Rows of the new topic from the old positions: assigned while the id was unknown.
        wait_for(lambda: rows(engine, topic)[0] > 300, message="rows read from the old offsets")
        busy[0].answers.set()
        wait_for(lambda: rows(engine, topic)[1] >= 1_800, timeout_s=60,
                 message="every event of both incarnations")
        wait_for(lambda: stored_ids(engine, topic) == {new}, message="offsets of the new id")
    finally:
        stop.raised = True
        sink.join(60)
    assert rows(engine, topic)[:2] == (1_800, 1_800)  # once each, none lost
    assert by_topic_id(engine, topic).get(old) == 300


def test_a_running_sink_follows_its_topic_through_deletion_and_re_creation(
        platform, lane, engine):
    produce(platform, lane.topic, 1_000)
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] >= 1_000, message="1,000 rows")
    old = live_id(platform, lane.topic)
    new = recreate(platform, lane.topic)
    produce(platform, lane.topic, 1_500)
    wait_for(lambda: rows(engine, lane.topic)[1] >= 2_500, timeout_s=180,
             message="every event of both incarnations")
    wait_for(lambda: stored_ids(engine, lane.topic) == {new}, message="offsets of the new id")
    time.sleep(1.0)
    assert rows(engine, lane.topic)[:2] == (2_500, 2_500)  # once each, none lost
    # Rows the sink landed before it noticed keep the old id (see TOPIC_ID_CHECK_S).
    assert by_topic_id(engine, lane.topic).get(old, 0) >= 1_000
    assert "was deleted and created again" in lane.output()
    port = re.search(r"metrics on http://127.0.0.1:(\d+)", lane.output()).group(1)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert f'streamflow_topic_recreations_total{{topic="{lane.topic}"}} 1.0' in body
    assert lane.alive()


def test_a_re_created_topic_that_fills_past_the_old_position_is_still_read_whole(
        platform, lane, engine):
    """The race a running sink can lose: by its next fetch the new topic already holds more
    than the old position, so librdkafka reads on from there without an error or a jump back
    (the sink is frozen meanwhile with SIGSTOP, well within its session timeout)."""
    produce(platform, lane.topic, 300)
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] >= 300, message="300 rows")
    lane.proc.send_signal(signal.SIGSTOP)
    try:
        new = recreate(platform, lane.topic)
        produce(platform, lane.topic, 1_500)
    finally:
        lane.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: rows(engine, lane.topic)[1] >= 1_800, timeout_s=120,
             message="every event of both incarnations")
    wait_for(lambda: stored_ids(engine, lane.topic) == {new}, message="offsets of the new id")
    time.sleep(1.0)
    assert rows(engine, lane.topic)[:2] == (1_800, 1_800)
    assert "was deleted and created again" in lane.output()
    assert lane.alive()


def test_a_running_sink_reads_a_topic_created_again_after_a_broker_restart(
        platform, lane, engine):
    """A broker restart raises the partitions' leader epochs; a topic created again starts at
    epoch 0, and librdkafka ignores metadata older than the epochs it holds
    (confluentinc/librdkafka#4898): the consumer that read the old topic never fetches the new
    one, without an error. The sink replaces that consumer (`make chaos` found this)."""
    produce(platform, lane.topic, 300)
    lane.start()
    wait_for(lambda: rows(engine, lane.topic)[0] >= 300, message="300 rows")
    kafka_server.stop(platform.settings)
    time.sleep(2.0)
    kafka_server.start(platform.settings, echo=lambda _m: None)
    produce(platform, lane.topic, 300)  # read with the epochs the restart raised
    wait_for(lambda: rows(engine, lane.topic)[0] >= 600, message="600 rows after the restart")
    new = recreate(platform, lane.topic)
    produce(platform, lane.topic, 500)
    wait_for(lambda: by_topic_id(engine, lane.topic).get(new, 0) >= 500, timeout_s=60,
             message="the new topic's 500 events")
    time.sleep(1.0)
    assert by_topic_id(engine, lane.topic)[new] == 500
    assert rows(engine, lane.topic)[:2] == (1_100, 1_100)
    assert "consumer replaced after the re-creation" in lane.output()
    assert lane.alive()


def test_offsets_gone_before_the_sink_read_them_are_an_offset_gap_dead_letter(
        platform, engine, unique_name):
    topic = create_topic(platform, unique_name, partitions=1)
    produce(platform, topic, 100)
    sink_until_idle(platform, topic)
    assert rows(engine, topic)[0] == 100
    produce(platform, topic, 100)  # offsets 100-199, while the sink is stopped
    admin = admin_client(platform.kafka)
    (future,) = admin.delete_records([TopicPartition(topic, 0, 150)]).values()
    assert future.result(30).low_watermark == 150
    before = counter("streamflow_offset_gap_messages_total", topic)

    sink_until_idle(platform, topic)

    assert rows(engine, topic)[0] == 150  # the 50 left after the hole landed
    (gap,) = letters(engine, topic)
    assert (gap["reason_code"], gap["source_partition"], gap["source_offset"]) == (
        "offset_gap", 0, 100)
    assert gap["reason"] == (f"offsets 100-149 of {topic}[0] were gone (retention or "
                             "delete-records) before the sink read them: 50 messages lost")
    assert gap["payload"] is None and gap["topic_id"] == live_id(platform, topic)
    assert counter("streamflow_offset_gap_messages_total", topic) == before + 50

    # Read again from the stored offsets: the same hole is not recorded twice.
    sink_until_idle(platform, topic)
    assert len(letters(engine, topic)) == 1

    replay = subprocess.run(
        [sys.executable, "-m", "streamflow.cli", "dlq", "replay", "--id", str(gap["id"]),
         "--topic", topic],
        env={**worker_env(platform, STREAMFLOW_REPLAY_TOPICS=topic), "COLUMNS": "250"},
        capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr + replay.stdout
    assert "nothing to replay" in replay.stdout
    assert "replayed 0 dead letters" in replay.stdout
    assert rows(engine, topic)[0] == 150
    with engine.connect() as conn:
        assert conn.execute(text("SELECT replay_count FROM raw.dead_letters WHERE id = :i"),
                            {"i": gap["id"]}).scalar_one() == 0


def test_a_hole_over_every_unread_message_is_recorded_when_the_next_one_arrives(
        platform, engine, unique_name):
    topic = create_topic(platform, unique_name, partitions=1)
    produce(platform, topic, 30)
    sink_until_idle(platform, topic)
    produce(platform, topic, 30)
    admin = admin_client(platform.kafka)
    (future,) = admin.delete_records([TopicPartition(topic, 0, 60)]).values()
    future.result(30)  # every unread message gone: the hole has no message after it yet
    produce(platform, topic, 5)
    sink_until_idle(platform, topic)
    (gap,) = letters(engine, topic)
    assert (gap["source_offset"], gap["reason_code"]) == (30, "offset_gap")
    assert "30 messages lost" in gap["reason"]
    assert rows(engine, topic)[0] == 35

