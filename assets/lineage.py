"""What the workers write, as external assets: the lineage runs topic -> table -> assets."""

from __future__ import annotations

import dagster as dg

from streamflow import topics

RAW_EVENTS = dg.AssetKey(["raw", "events"])
RAW_DEAD_LETTERS = dg.AssetKey(["raw", "dead_letters"])
# The periods the lifecycle job dropped (assets/lifecycle.py), which dbt's marts read.
DROPPED_PERIODS = dg.AssetKey(["streamflow", "dropped_periods"])


def topic_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", name.replace("-", "_")])


def topic_specs() -> list[dg.AssetSpec]:
    """The four topics; `analytics` and `notifications` are fed by the micro-batch assets."""
    return [
        dg.AssetSpec(topic_key(topics.USER_EVENTS), group_name="kafka", kinds={"kafka"},
                     description="Masked user events from the producer, keyed by user_id.",
                     metadata={"topic": topics.USER_EVENTS}),
        dg.AssetSpec(topic_key(topics.ANALYTICS), group_name="kafka", kinds={"kafka"},
                     deps=[dg.AssetKey("event_windows")],
                     description="Closed 10 s windows (with revision) from event_windows.",
                     metadata={"topic": topics.ANALYTICS}),
        dg.AssetSpec(topic_key(topics.NOTIFICATIONS), group_name="kafka", kinds={"kafka"},
                     deps=[dg.AssetKey("notifications")],
                     description="Events that passed the contract, from notifications.",
                     metadata={"topic": topics.NOTIFICATIONS}),
        dg.AssetSpec(topic_key(topics.DEAD_LETTER), group_name="kafka", kinds={"kafka"},
                     deps=[topic_key(topics.USER_EVENTS), dg.AssetKey("notifications")],
                     description="Everything that could not land or broke the contract.",
                     metadata={"topic": topics.DEAD_LETTER}),
    ]


def landing_specs() -> list[dg.AssetSpec]:
    """Tables the sink writes (external: the sink, not Dagster, materialises them; the landing
    sensor, sensors/landing.py, reports each new batch as a materialization)."""
    return [
        dg.AssetSpec(RAW_EVENTS, group_name="landing", kinds={"postgres"},
                     deps=[topic_key(topics.USER_EVENTS)],
                     description="One row per distinct event_id, landed exactly once."),
        dg.AssetSpec(RAW_DEAD_LETTERS, group_name="landing", kinds={"postgres"},
                     deps=[topic_key(topics.USER_EVENTS)],
                     description="Rejected messages with reason code, reason and source."),
    ]
