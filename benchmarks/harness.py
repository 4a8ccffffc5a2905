"""Shared benchmark plumbing: an isolated embedded stack, timing, RSS sampling, results."""

from __future__ import annotations

import contextlib
import json
import platform as host
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from streamflow import contract, endpoints, stack
from streamflow.db.engine import server_version
from streamflow.infra import kafka_server
from streamflow.infra.processes import free_port, free_port_run
from streamflow.kafka_clients import producer
from streamflow.producer.generator import EventGenerator
from streamflow.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"
BENCH_PII_KEY = "bench-pii-key-0123456789abcdef"


class Stack(stack.Services):
    def worker_env(self, **extra: str) -> dict:
        return worker_env(self.settings, self.database_url, **extra)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A `streamflow` CLI worker on this stack (its output discarded); ``env``: more
        settings for it."""
        return subprocess.Popen([sys.executable, "-m", "streamflow.cli", *args],
                                env=self.worker_env(**(env or {})), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def isolated_stack(**overrides: object):
    """A fresh embedded Kafka + PostgreSQL (no workers) in a temp dir, torn down afterwards.

    ``overrides``: more settings by environment name (STREAMFLOW_DEMO_RATE=2000, say); the
    workers that `stack.start_workers` starts on it inherit them."""
    jars = kafka_server.fetch(load_settings())  # once, in the default home (make fetch-kafka)
    # A cluster's nodes take consecutive ports from the first (settings.kafka_node_ports).
    kafka_port = free_port_run(2 * int(overrides.get("STREAMFLOW_KAFKA_BROKERS", 1)))
    with tempfile.TemporaryDirectory(prefix="streamflow-bench-") as home:
        settings = load_settings(
            STREAMFLOW_HOME=home, STREAMFLOW_KAFKA_PORT=kafka_port,
            STREAMFLOW_KAFKA_CONTROLLER_PORT=kafka_port + 1, STREAMFLOW_DAGSTER_PORT=free_port(),
            STREAMFLOW_DAGSTER_CODE_PORT=free_port(),
            STREAMFLOW_METRICS_PORT=free_port(), STREAMFLOW_LIVE_PORT=free_port(),
            KAFKA_BOOTSTRAP_SERVERS=None,
            DATABASE_URL=None, **overrides)
        kafka_server.share_jars(settings, jars)
        stack.up(settings, workers=False, echo=lambda m: print(m, file=sys.stderr))
        try:
            yield Stack(settings, endpoints.database_url(settings))
        finally:
            stack.down(settings, echo=lambda m: print(m, file=sys.stderr))


def worker_env(settings: Settings, database_url: str, **extra: str) -> dict:
    """The environment of a `streamflow` worker process pointed at a benchmark stack
    (``stack.child_env``), with the benchmarks' PII key."""
    return stack.child_env(settings, database_url, STREAMFLOW_PII_KEY=BENCH_PII_KEY, **extra)


def produce_demo_events(st: Stack, topic: str, events: int, *, invalid_rate: float = 0.01,
                        late_rate: float = 0.05) -> None:
    """A backlog of ``events`` demo events (seed 1) in ``topic``, with the producer's headers,
    as fast as the client takes them."""
    generator = EventGenerator(BENCH_PII_KEY.encode(), seed=1, late_rate=late_rate,
                               invalid_rate=invalid_rate)
    sender = producer(st.kafka)
    for key, value in generator.batch(events):
        while True:
            try:
                sender.produce(topic, value, key, headers=contract.HEADERS)
                break
            except BufferError:
                sender.poll(0.1)
    sender.flush(60)


def poll_until(predicate, timeout_s: float, what: str, *, interval_s: float = 0.25):
    """Call ``predicate`` until it returns something truthy (returned); TimeoutError after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return value


def percentile(ordered: list[float], q: float) -> float:
    """The q-quantile (0..1) of an ascending list, nearest rank below."""
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


class RssSampler:
    """Peak resident memory of a process, sampled every 100 ms on a thread."""

    def __init__(self, pid: int, interval_s: float = 0.1) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def environment(st: Stack) -> dict:
    return {
        "host": host.node(),
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "kafka": kafka_server.version_from_log(st.settings),
        "postgres": server_version(st.database_url),
    }


def write_results(name: str, document: dict, stamp: str | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}-{name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)  # noqa: S603
