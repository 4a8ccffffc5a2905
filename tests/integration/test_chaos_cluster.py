"""The reduced cluster chaos of `make chaos CLUSTER=1`, inside `make test`, on the shared
three-node cluster: events flow while the node leading the most partitions is SIGKILLed and
started again, a sink is SIGKILLed, another frozen past its session timeout and resumed (a
zombie); then the micro-batch runs over what landed. Nothing lost, nothing twice, no offset
gap invented, every event a notification xor a contract dead letter, windows as recounted."""

from __future__ import annotations

from benchmarks.chaos_cluster import QUICK_CLUSTER, problems, run_cluster_chaos
from streamflow import stack
from streamflow.db import migrate


def test_a_broker_a_sink_and_a_zombie_lose_and_duplicate_nothing(cluster, fresh_database):
    migrate.upgrade(fresh_database)  # the run's own database: its micro-batch is its alone
    result = run_cluster_chaos(stack.Services(cluster.settings, fresh_database), QUICK_CLUSTER)
    assert [f["fault"] for f in result["faults"]] == list(QUICK_CLUSTER.faults)
    assert problems(result) == [], result
    assert result["produced"] == QUICK_CLUSTER.events
    assert (result["lost"], result["duplicates"], result["offset_gap_letters"]) == (0, 0, 0)
    micro = result["microbatch"]
    assert micro["landed"] == result["landed"]
    assert micro["notifications"] + micro["contract_dead_letters"] == micro["landed"]
    assert micro["windows_checked"] > 0 and micro["windows_unlike_recount"] == 0
    assert all(b.up for b in stack.kafka_cluster(cluster.settings).brokers)
