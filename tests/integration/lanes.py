"""Shared by tests that run a real sink subprocess on their own topic ("a lane").

A lane is a fresh topic, its own dead-letter topic and consumer group, so a test reads back
exactly what it sent, while the session's Kafka and PostgreSQL are shared.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from sqlalchemy import text

from streamflow.kafka_clients import consumer
from tests.conftest import worker_env


class SinkProcess:
    """`streamflow sink` as a real subprocess on an isolated topic, group and DLQ topic."""

    def __init__(self, platform, topic: str, dlq_topic: str, group: str, log_path, *,
                 instance: int = 1, env: dict[str, str] | None = None, name: str = "sink") -> None:
        self.platform, self.topic, self.dlq_topic, self.group = platform, topic, dlq_topic, group
        self.log_path = log_path
        self.instance = instance  # its static member id in the group: <group>-<instance>
        self.env = env or {}
        self.name = name  # what the test calls it
        self.proc: subprocess.Popen | None = None

    def start(self) -> SinkProcess:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow.cli", "sink", "--topic", self.topic, "--group",
             self.group, "--dlq-topic", self.dlq_topic, "--metrics-port", "0",
             "--batch-size", "2000", "--instance-id", f"{self.group}-{self.instance}"],
            env=worker_env(self.platform, **self.env), stdout=self.log,
            stderr=subprocess.STDOUT)
        return self

    def metrics_address(self) -> str | None:
        """Where it serves /metrics (its start-up line says; None: not yet)."""
        found = re.search(r"metrics on (http://\S+/metrics)", self.output())
        return found.group(1) if found else None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.log.close()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def rows(engine, topic: str) -> tuple[int, int, int]:
    """(rows, distinct event_ids, distinct source offsets) landed from ``topic``."""
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT count(*), count(DISTINCT event_id), "
            "count(DISTINCT (kafka_partition, kafka_offset)) FROM raw.events "
            "WHERE kafka_topic = :t"), {"t": topic}).one())


def dead_letters(engine, topic: str) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT id, reason_code, reason, payload, headers, source_topic_id::text AS topic_id, "
            "source_partition, source_offset FROM raw.dead_letters "
            "WHERE source_topic = :t ORDER BY source_offset, id"), {"t": topic})]


def offsets_stored(engine, group: str, topic: str) -> int:
    """Sum over partitions of the next offset the sink stored with its rows."""
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT coalesce(sum(next_offset), 0) FROM raw.consumer_offsets "
            "WHERE group_id = :g AND topic = :t"), {"g": group, "t": topic}).scalar_one()


def read_topic(platform, topic: str, expected: int, timeout_s: float = 60) -> list:
    cons = consumer(platform.kafka, f"reader-{uuid.uuid4()}")
    cons.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += [m for m in cons.consume(1000, 0.5) if m.error() is None]
    finally:
        cons.close()
    return got


def read_whole_topic(platform, topic: str, timeout_s: float = 60) -> list:
    """Every message of every partition of ``topic`` up to its end offsets at call time."""
    cons = consumer(platform.kafka, f"reader-{uuid.uuid4()}")
    try:
        partitions = cons.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        todo = {p for p, end in ends.items() if end > 0}
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        got = []
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                pytest.fail(f"read {len(got)} messages of {topic}, partitions {sorted(todo)} "
                            f"not read to their end within {timeout_s:.0f}s")
            for msg in cons.consume(1000, 0.5):
                if msg.error() is not None:
                    continue
                got.append(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
        return got
    finally:
        cons.close()
