"""The pipeline's Kafka topics as external assets, so the lineage starts at the broker."""

from __future__ import annotations

import dagster as dg

from streamflow import topics

TOPIC_GROUP = "kafka"


def topic_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", name.replace("-", "_")])


def topic_assets() -> list[dg.AssetSpec]:
    descriptions = {
        topics.USER_EVENTS: "Masked user events from the producer, keyed by user_id.",
        topics.ANALYTICS: "Closed 10-second windows published by the event_windows asset.",
        topics.NOTIFICATIONS: "Events that passed the contract, published by notifications.",
        topics.DEAD_LETTER: "Everything that could not land or broke the contract, with reasons.",
    }
    return [
        dg.AssetSpec(topic_key(name), description=text, group_name=TOPIC_GROUP,
                     kinds={"kafka"}, metadata={"topic": name})
        for name, text in descriptions.items()
    ]
