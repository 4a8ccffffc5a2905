"""The reduced chaos run of `make chaos`, inside `make test`: 50k events while the sink is
SIGKILLed twice and PostgreSQL restarted once; every Kafka offset is accounted for."""

from __future__ import annotations

from benchmarks.chaos import QUICK, ChaosPlan, ChaosProducer, run_chaos
from streamflow import topics
from tests.conftest import create_topic, wait_for, worker_env


def test_faults_mid_stream_lose_and_duplicate_nothing(platform):
    result = run_chaos(platform.settings, platform.bootstrap, platform.database_url, QUICK)
    assert [f["fault"] for f in result["faults"]] == ["sink_kill", "postgres", "sink_kill"]
    assert result["producer_exit_code"] == 0
    assert result["kafka_messages"] == result["produced"] == QUICK.events
    assert result["lost"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["landed"] + result["dead_lettered"] == QUICK.events
    assert result["dead_lettered"] > 0  # the 1 % invalid events took the dead-letter path
    assert result["sink_exit_code_on_sigterm"] == 0


def test_produced_is_what_the_broker_acknowledged_not_the_plan(platform, unique_name, tmp_path):
    """A producer stopped before the end of its plan still exits 0: chaos must count the
    events the broker acknowledged (it used to write the planned count)."""
    topic = create_topic(platform, unique_name)
    plan = ChaosPlan(events=1_000_000, rate=2_000.0)
    producer = ChaosProducer(topic, plan, worker_env(platform), tmp_path)
    producer.start()
    wait_for(lambda: topics.message_count(platform.bootstrap, topic) > 0, timeout_s=60,
             message="the first events in Kafka")
    assert producer.stop() == 0
    acknowledged = producer.acknowledged()
    assert acknowledged == topics.message_count(platform.bootstrap, topic)
    assert 0 < acknowledged < plan.events
