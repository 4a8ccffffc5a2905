"""Kafka client factories: the one place that turns settings into librdkafka configuration.

Clients are created on demand by the caller (workers in ``setup()``), never at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streamflow.errors import KafkaUnavailable

# Producer delivery guarantees (see ARCHITECTURE.md): idempotence implies acks=all and
# bounded in-flight requests, so a retry never reorders or duplicates within a partition.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # lz4: cheapest CPU per byte of the codecs Kafka supports, and JSON compresses ~4x.
    "compression.type": "lz4",
    # 5 ms (librdkafka's default): at 100k events/s that still gathers ~500 events a batch,
    # and at 1k/s it adds at most 5 ms to produce->row (20 ms cost ~10 ms of its p50).
    "linger.ms": 5,
    "batch.size": 1_000_000,  # bytes; librdkafka's default (1 MB) messages-per-batch cap
    # 256 MB of local queue before produce() raises BufferError (the caller polls and retries).
    "queue.buffering.max.kbytes": 262_144,
}

CONSUMER_DEFAULTS: dict[str, Any] = {
    # Offsets are committed by the worker after its own durable write, never automatically.
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    # Cooperative rebalancing: adding a sink process does not stop the others.
    "partition.assignment.strategy": "cooperative-sticky",
    # A crashed consumer's partitions move on after 10 s instead of the default 45 s.
    "session.timeout.ms": 10_000,
}


def admin_client(bootstrap: str, **overrides: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **overrides})


def producer(bootstrap: str, **overrides: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, **PRODUCER_DEFAULTS, **overrides})


def consumer(bootstrap: str, group_id: str, **overrides: Any) -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group_id, **CONSUMER_DEFAULTS, **overrides}
    )


def deliver(producer: Producer, topic: str,
            messages: Iterable[tuple[bytes | None, bytes | None, list | None]],
            timeout_s: float = 30.0) -> tuple[int, list[str]]:
    """Send (key, value, headers) messages and flush; returns (undelivered, errors).

    A full local queue is backpressure: poll for delivery reports and retry, never drop.
    """
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
    return producer.flush(timeout_s), errors


def broker_answers(bootstrap: str, *, timeout_s: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout_s``."""
    try:
        # log_level 0: a probe of a broker that is down must not spam stderr with retries.
        metadata = admin_client(bootstrap, **{"socket.connection.setup.timeout.ms": 1000,
                                              "log_level": 0}
                                ).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return bool(metadata.brokers)


def require_broker(bootstrap: str, *, timeout_s: float = 5.0) -> None:
    if not broker_answers(bootstrap, timeout_s=timeout_s):
        raise KafkaUnavailable(
            f"no Kafka broker answered at {bootstrap}: run `streamflow up` for the embedded "
            "one, or set KAFKA_BOOTSTRAP_SERVERS to a reachable cluster"
        )
