"""Kafka for Dagster: clients from streamflow's factories (one configuration home)."""

from __future__ import annotations

import dagster as dg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streamflow import kafka_clients


class KafkaResource(dg.ConfigurableResource):
    """``bootstrap_servers`` comes from ``KAFKA_BOOTSTRAP_SERVERS``."""

    bootstrap_servers: str

    def admin(self) -> AdminClient:
        return kafka_clients.admin_client(self.bootstrap_servers)

    def producer(self) -> Producer:
        return kafka_clients.producer(self.bootstrap_servers)

    def consumer(self, group_id: str) -> Consumer:
        return kafka_clients.consumer(self.bootstrap_servers, group_id)
