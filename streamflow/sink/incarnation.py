"""Which incarnation of its topic the sink's stored offsets belong to (`streamflow status`).

One small query on raw.consumer_offsets and one topic description: cheap enough for every
status call.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamflow import topics
from streamflow.db.compose import statement
from streamflow.db.engine import connect_admin
from streamflow.db.tables import consumer_offsets
from streamflow.kafka_clients import admin_client
from streamflow.kafka_connection import KafkaConnection

_STORED_IDS = statement(
    "SELECT {o.topic_id}::text, count(*) FROM {o} WHERE {o.group_id} = %s AND {o.topic} = %s "
    "GROUP BY {o.topic_id} ORDER BY count(*) DESC", o=consumer_offsets)


@dataclass(frozen=True)
class StoredIncarnation:
    topic: str
    stored: dict[str | None, int]  # topic id -> partitions stored under it (None: before ids)
    live_id: str | None            # the topic's id now (None: missing or the broker did not say)

    @property
    def outdated(self) -> bool:
        """Offsets of a deleted incarnation: the sink reads the new topic from its beginning."""
        return any(topics.is_old_incarnation(i, self.live_id) for i in self.stored)

    def describe(self) -> str:
        if not self.stored:
            return f"{self.topic}: no offsets stored yet"
        ids = ", ".join(f"{i or 'not recorded'} ({n} partitions)" for i, n in self.stored.items())
        if self.outdated:
            return (f"{self.topic}: offsets of topic id {ids}, but the topic was deleted and "
                    f"created again as {self.live_id}: the sink reads it from its beginning")
        return f"{self.topic}: offsets of topic id {ids}" + (
            "" if self.live_id else " (live topic id unknown)")


def stored_incarnation(database_url: str, kafka: KafkaConnection, *,
                       topic: str = topics.USER_EVENTS, group: str = topics.SINK_GROUP,
                       timeout_s: float = 2.0) -> StoredIncarnation:
    with connect_admin(database_url, "streamflow-status") as conn:
        stored = dict(conn.execute(_STORED_IDS, (group, topic)).fetchall())
    live = topics.topic_ids(admin_client(kafka), [topic], timeout_s=timeout_s).get(topic)
    return StoredIncarnation(topic, stored, live)
