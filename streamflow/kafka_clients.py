"""Kafka client factories: the one place that turns settings into librdkafka configuration.

Every client takes a ``KafkaConnection`` (``settings.kafka``): bootstrap servers plus the
security properties of a secured cluster. Clients are created on demand by the caller
(workers in ``setup()``), never at import time.

Every client logs through Python logging (``logs.librdkafka_logger()``), never straight to
stderr. confluent-kafka hands librdkafka's lines to that logger only from ``poll()``,
``consume()`` and ``flush()``: a long-lived client is polled by its owner's loop (the
producer's, the sink's, the live view's); what a short-lived client that is never polled
(a CLI's admin client or offsets probe) queued is dropped with it, and its failures reach the
caller as exceptions anyway.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from streamflow import logs
from streamflow.errors import KafkaUnavailable
from streamflow.kafka_connection import KafkaConnection

# Producer delivery guarantees (docs/ARCHITECTURE.md): idempotence implies acks=all and
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
}

# How a consumer joins its group (STREAMFLOW_KAFKA_GROUP_PROTOCOL). "classic": the client
# assigns and sets its own timeouts. "consumer": Kafka 4's protocol (KIP-848), assignment on
# the broker, incremental; the broker sets the session timeout, heartbeat and assignor
# (group.consumer.* on the broker), and librdkafka refuses the classic properties with it.
GROUP_PROTOCOLS: dict[str, dict[str, Any]] = {
    "classic": {
        # Cooperative rebalancing: adding a sink process does not stop the others.
        "partition.assignment.strategy": "cooperative-sticky",
        # A crashed consumer's partitions move on after 10 s instead of the default 45 s.
        "session.timeout.ms": 10_000,
    },
    "consumer": {"group.protocol": "consumer"},
}


# Kafka refused the message itself, not the moment: sending it again can never succeed (too
# large for the topic, a record the broker cannot read). Anything else is waited out.
REFUSED_FOR_GOOD = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_MSG, KafkaError._INVALID_ARG,
    KafkaError._BAD_MSG,
})


def refused_for_good(errors: Iterable[KafkaError]) -> list[KafkaError]:
    return [e for e in errors if e.code() in REFUSED_FOR_GOOD]


def _logged(kafka: KafkaConnection) -> dict[str, Any]:
    return {**kafka.config(), "logger": logs.librdkafka_logger()}


def admin_client(kafka: KafkaConnection, **overrides: Any) -> AdminClient:
    return AdminClient({**_logged(kafka), **overrides})


def producer(kafka: KafkaConnection, **overrides: Any) -> Producer:
    return Producer({**_logged(kafka), **PRODUCER_DEFAULTS, **overrides})


def consumer(kafka: KafkaConnection, group_id: str, *, group_protocol: str = "classic",
             **overrides: Any) -> Consumer:
    return Consumer({**_logged(kafka), "group.id": group_id, **CONSUMER_DEFAULTS,
                     **GROUP_PROTOCOLS[group_protocol], **overrides})


# The connection's own properties in kafka-python's names (partition_admin). Pass-through
# properties (KAFKA_CLIENT_PROPERTIES) are librdkafka's: they have no meaning there.
_KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol", "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username", "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile", "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile", "ssl.key.password": "ssl_password",
}


def partition_admin_config(kafka: KafkaConnection) -> dict[str, Any]:
    return {"bootstrap_servers": kafka.bootstrap.split(","), "client_id": "streamflow-replicas",
            **{_KAFKA_PYTHON_NAMES[k]: v for k, v in kafka.security.items()
               if k in _KAFKA_PYTHON_NAMES}}


def partition_admin(kafka: KafkaConnection):
    """kafka-python's admin client, for partition reassignment alone (librdkafka has none;
    replicas.Mover). It connects when created."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(**partition_admin_config(kafka))


def deliver(producer: Producer, topic: str,
            messages: Iterable[tuple[bytes | None, bytes | None, list | None]],
            timeout_s: float = 30.0,
            refused: Callable[[], str | None] = lambda: None,
            on_ack: Callable[[int], None] | None = None) -> tuple[int, list[KafkaError]]:
    """Send (key, value, headers) messages and flush; returns (undelivered, errors).

    A full local queue is backpressure: poll for delivery reports and retry, never drop.
    ``refused`` (the producer's error callback's finding) ends the flush early: a cluster
    that refused our credentials would otherwise be waited on for the whole timeout.
    ``on_ack`` is called with the position of each message Kafka acknowledged (a producer
    with ``delivery.report.only.error`` never reports one).
    """
    errors: list[KafkaError] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err)

    def acknowledged(i: int, err, _msg) -> None:
        if err is None:
            on_ack(i)
        else:
            errors.append(err)

    for i, (key, value, headers) in enumerate(messages):
        report = on_delivery if on_ack is None else functools.partial(acknowledged, i)
        while True:
            try:
                producer.produce(topic, value, key, headers=headers, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
                if refused():
                    return len(producer), errors
            except KafkaException as exc:  # refused before sending (too large): reported
                if exc.args[0].code() not in REFUSED_FOR_GOOD:
                    raise
                errors.append(exc.args[0])
                break
    deadline = time.monotonic() + timeout_s
    while (remaining := producer.flush(min(1.0, timeout_s))) and not refused():
        if time.monotonic() >= deadline:
            break
    return remaining, errors


def security_refusal(error: KafkaError) -> str | None:
    """Why the cluster refused us, when ``error`` says it did (not a broker still starting).

    librdkafka retries a failed SASL login or TLS handshake for ever; a client that waits
    for a connection would hang, so callers stop at the first such error instead.
    """
    text = error.str()
    if error.code() == KafkaError._AUTHENTICATION or "SASL" in text:
        return (f"SASL authentication failed ({text}): check KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM")
    if error.code() == KafkaError._SSL or "SSL handshake failed" in text:
        return (f"TLS handshake failed ({text}): check KAFKA_SSL_CA_LOCATION and that the "
                "listener speaks KAFKA_SECURITY_PROTOCOL")
    return None


def broker_problem(kafka: KafkaConnection, *, timeout_s: float = 3.0) -> str | None:
    """None when the cluster answers a metadata request within ``timeout_s``, else why not."""
    refusals: list[str] = []

    def on_error(error: KafkaError) -> None:
        if reason := security_refusal(error):
            refusals.append(reason)

    # log_level 0: a probe of a broker that is down must not spam stderr with retries.
    admin = admin_client(kafka, **{"socket.connection.setup.timeout.ms": 1000, "log_level": 0,
                                   "error_cb": on_error})
    deadline = time.monotonic() + timeout_s
    while not refusals:
        try:  # short rounds: a refusal ends the wait at once instead of after timeout_s
            if admin.list_topics(timeout=min(0.5, timeout_s)).brokers:
                return None
        except KafkaException:
            pass
        admin.poll(0)  # error callbacks run here
        if time.monotonic() >= deadline:
            return f"no Kafka broker answered at {kafka.describe()} within {timeout_s:g}s"
    return f"Kafka at {kafka.describe()} refused the connection: {refusals[0]}"


def broker_answers(kafka: KafkaConnection, *, timeout_s: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout_s``."""
    return broker_problem(kafka, timeout_s=timeout_s) is None


def require_broker(kafka: KafkaConnection, *, timeout_s: float = 5.0) -> None:
    """Raise ``KafkaUnavailable`` with one line: unreachable, or refused and why."""
    problem = broker_problem(kafka, timeout_s=timeout_s)
    if problem is None:
        return
    if "refused the connection" not in problem:
        problem += (": run `streamflow up` for the embedded one, or set "
                    "KAFKA_BOOTSTRAP_SERVERS to a reachable cluster")
    raise KafkaUnavailable(problem)
