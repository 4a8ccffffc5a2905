"""Dagster sensors (watermark polling and Kafka metadata only: a sensor never consumes)."""

from sensors.kafka_topics import kafka_topics_sensor
from sensors.microbatch import new_events_sensor

SENSORS = [new_events_sensor, kafka_topics_sensor]

__all__ = ["SENSORS", "kafka_topics_sensor", "new_events_sensor"]
