"""The reduced chaos run of `make chaos`, inside `make test`: 50k events while the sink is
SIGKILLed twice and PostgreSQL restarted once; every Kafka offset is accounted for."""

from __future__ import annotations

from benchmarks.chaos import QUICK, run_chaos


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
