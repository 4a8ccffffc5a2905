"""Runless events as StreamFlow's sensors report them, at chosen times: the Kafka-topics
observations (with a data version, an indexed tag), a check evaluated on each tick (failing
once), and the landing sensor's materializations. For the event retention tests on SQLite
(tests/unit/test_event_retention.py) and PostgreSQL storage (test_dagster_postgres.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

import dagster as dg
from dagster._core.test_utils import freeze_time

TICKS_MIN_AGO = (300, 240, 180, 120, 60, 30, 1)
FAILED_MIN_AGO = 180
LANDED_MIN_AGO = (400, 200)


class Seeded(NamedTuple):
    topics: tuple[dg.AssetKey, dg.AssetKey]
    landed: dg.AssetKey
    check: dg.AssetCheckKey


def seed(instance: dg.DagsterInstance, now: datetime, prefix: str = "kafka") -> Seeded:
    topics = (dg.AssetKey([prefix, "a"]), dg.AssetKey([prefix, "b"]))
    landed = dg.AssetKey([prefix, "landed"])
    for minutes_ago in TICKS_MIN_AGO:
        with freeze_time(now - timedelta(minutes=minutes_ago)):
            for key in topics:
                instance.report_runless_asset_event(dg.AssetObservation(
                    asset_key=key, metadata={"messages": 1000 - minutes_ago},
                    tags={"dagster/data_version": f"v{minutes_ago}"}))
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=topics[0], check_name="replicated",
                passed=minutes_ago != FAILED_MIN_AGO))
    for minutes_ago in LANDED_MIN_AGO:
        with freeze_time(now - timedelta(minutes=minutes_ago)):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=landed, metadata={"rows": minutes_ago}))
    return Seeded(topics, landed, dg.AssetCheckKey(topics[0], "replicated"))


def observed(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[int]:
    """The ``messages`` of each observation of ``key`` left, newest first."""
    return [r.asset_observation.metadata["messages"].value
            for r in instance.fetch_observations(key, limit=100).records]


def materialized(instance: dg.DagsterInstance, key: dg.AssetKey) -> list[int]:
    return [r.asset_materialization.metadata["rows"].value
            for r in instance.fetch_materializations(key, limit=100).records]


def check_history(instance: dg.DagsterInstance, check: dg.AssetCheckKey) -> list[str]:
    return [r.status.value for r in
            instance.event_log_storage.get_asset_check_execution_history(check, limit=100)]
