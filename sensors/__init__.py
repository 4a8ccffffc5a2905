"""Dagster sensors (watermark polling and Kafka metadata only: a sensor never consumes)."""

from sensors.kafka_topics import kafka_topics_sensor
from sensors.landing import landing_sensor
from sensors.microbatch import new_events_sensor
from sensors.reprocess import dbt_full_refresh_job, dbt_refresh_after_reprocess

SENSORS = [new_events_sensor, kafka_topics_sensor, landing_sensor, dbt_refresh_after_reprocess]

__all__ = ["SENSORS", "dbt_full_refresh_job", "dbt_refresh_after_reprocess",
           "kafka_topics_sensor", "landing_sensor", "new_events_sensor"]
