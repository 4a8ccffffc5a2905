"""The reduced chaos run of `make chaos`, inside `make test`: 50k events while the sink is
SIGKILLed twice (once with offsets deleted before its restart), PostgreSQL restarted once, a
999,900-byte message and one under 340 KB of headers that are not UTF-8 sent; then the topic
is deleted, created again and 5k more events follow. Every Kafka offset of both incarnations
is accounted for."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.chaos import QUICK, ChaosPlan, ChaosProducer, problems, run_chaos
from benchmarks.chaos_faults import GAP_PARTITION, OVERSIZED_BYTES
from streamflow import topics
from tests.conftest import create_topic, wait_for, worker_env


def test_faults_mid_stream_lose_and_duplicate_nothing(platform):
    # The session's database has day partitions: none closes within this run (`make chaos`
    # drops minute partitions under the faults, benchmarks.chaos_drops).
    result = run_chaos(platform.settings, platform.kafka, platform.database_url,
                       replace(QUICK, partition_drops=False))
    faults = {f["fault"]: f for f in result["faults"]}
    assert [f["fault"] for f in result["faults"]] == [
        "sink_kill", "oversized", "sink_kill", "poison_headers", "offset_gap", "postgres",
        "topic_recreation"]
    assert problems(result) == [], result
    assert result["producer_exit_code"] == 0
    # Kafka holds what the producer's delivery reports acknowledged, and chaos's own two.
    assert result["produced"] == QUICK.events
    assert result["kafka_messages"] == QUICK.events + 2
    assert result["lost"] == 0, result
    assert result["duplicates"] == 0, result
    assert (result["landed"] + result["dead_lettered"] + result["recorded_as_offset_gap"]
            == result["kafka_messages"])
    assert result["dead_lettered"] > 1  # the 1 % invalid events took the dead-letter path

    # The hole: offsets deleted while the sink was down, each inside exactly one offset_gap
    # dead letter's range. A sink that jumps over a hole leaves them lost.
    gap = faults["offset_gap"]
    assert gap["partition"] == GAP_PARTITION and gap["deleted_unread"] > 0
    assert result["gone_by_delete_records"] == gap["deleted_unread"]
    assert result["recorded_as_offset_gap"] == gap["deleted_unread"]
    assert result["offset_gap_letters"] == 1 and result["offset_gaps_as_deleted"]

    # The oversized message: one too_large dead letter with every byte; the sink carried on.
    (big,) = result["oversized"]
    assert (big["size"], big["rows"], big["dead_letters"], big["reason_codes"],
            big["stored_bytes"]) == (OVERSIZED_BYTES, 0, 1, ["too_large"], OVERSIZED_BYTES)

    # The poison-header message: one not_json dead letter keeping every header byte; the sink
    # carried on (it used to stop for good: the copy's replaced text was over 1 MB).
    (poison,) = result["poison_headers"]
    assert (poison["rows"], poison["dead_letters"], poison["reason_codes"],
            poison["headers_kept"]) == (0, 1, ["not_json"], True)

    # The re-creation: the new incarnation accounted by its topic id, the old one kept.
    new = result["recreation"]
    assert new["topic_id"] != new["old_topic_id"]
    assert faults["topic_recreation"]["topic_id"] == new["topic_id"]
    assert new["produced"] == new["kafka_messages"] == QUICK.recreated_events
    assert (new["lost"], new["duplicates"], new["offset_gap_letters"]) == (0, 0, 0)
    assert new["landed"] + new["dead_lettered"] == QUICK.recreated_events
    assert new["old_incarnation_kept"]
    assert result["sink_exit_code_on_sigterm"] == 0


def test_produced_is_what_the_broker_acknowledged_not_the_plan(platform, unique_name, tmp_path):
    """A producer stopped before the end of its plan still exits 0: chaos must count the
    events the broker acknowledged (it used to write the planned count)."""
    topic = create_topic(platform, unique_name)
    plan = ChaosPlan(events=1_000_000, rate=2_000.0)
    producer = ChaosProducer(topic, plan, worker_env(platform), tmp_path)
    producer.start()
    wait_for(lambda: topics.message_count(platform.kafka, topic) > 0, timeout_s=60,
             message="the first events in Kafka")
    assert producer.stop() == 0
    acknowledged = producer.acknowledged()
    assert acknowledged == topics.message_count(platform.kafka, topic)
    assert 0 < acknowledged < plan.events
