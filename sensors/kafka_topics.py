"""Topic end offsets and the sink's consumer lag, recorded as observations of the topic assets.

Metadata requests only (end offsets, committed offsets): this sensor never consumes.
"""

import dagster as dg
from confluent_kafka import TopicPartition

from assets.lineage import topic_key
from resources import KafkaResource
from streamflow import topics

INTERVAL_S = 30
TIMEOUT_S = 5.0


def observe(kafka: KafkaResource) -> list[dg.AssetObservation]:
    names = topics.PIPELINE_TOPICS
    metadata = kafka.admin().list_topics(timeout=TIMEOUT_S).topics
    probe = kafka.consumer(topics.SINK_GROUP)  # never subscribes: reads committed offsets only
    observations = []
    try:
        for name in names:
            if name not in metadata:
                continue
            parts = [TopicPartition(name, p) for p in sorted(metadata[name].partitions)]
            ends = [probe.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1] for tp in parts]
            meta = {"partitions": len(parts), "end_offsets": ends, "messages": sum(ends)}
            if name == topics.USER_EVENTS:
                committed = probe.committed(parts, timeout=TIMEOUT_S)
                lag = sum(max(end - max(c.offset, 0), 0)
                          for end, c in zip(ends, committed, strict=True))
                meta["consumer_group"] = topics.SINK_GROUP
                meta["consumer_lag"] = lag
            observations.append(dg.AssetObservation(asset_key=topic_key(name), metadata=meta))
    finally:
        probe.close()
    return observations


@dg.sensor(minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Records topic end offsets and the db-sink consumer lag.")
def kafka_topics_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
    return dg.SensorResult(asset_events=observe(kafka))
