"""The local stack's health for the live page: each component's state and rate, the sink's
lag and the produce->row latency (p50/p95 over the last LATENCY_WINDOW_S).

The live server's health thread calls `Monitor.refresh()` once a second, whatever the number
of pages open: one metadata request to Kafka (judged by cluster_health: brokers down,
partitions under-replicated or offline; the embedded nodes from their run files), the workers'
run-state files (written by the supervisor, naming each worker's /metrics address) and one
scrape of the producer's and the sink's /metrics. `document()` turns the newest `Snapshot`
and the rates the live view counts on the stream itself into the frame's `health` (pure, so
unit tests call it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import KafkaException

from streamflow import cluster, cluster_health, kafka_clients, metrics, topics
from streamflow.infra import processes
from streamflow.kafka_connection import KafkaConnection
from streamflow.metrics import Samples, total

# The supervisor's names for the workers (supervisor.worker_specs; a unit test compares).
PRODUCER, SINK = "producer", "sink"
DAGSTER = ("dagster-daemon", "dagster-code-server", "dagster-webserver")
# Seconds a worker's /metrics may take: it answers from memory in a few ms, even under load.
SCRAPE_TIMEOUT_S = 0.5
# Seconds the broker may take to answer the metadata probe before Kafka counts as
# unreachable: far above a loaded broker's few ms, short enough to say so within 2 s.
PROBE_TIMEOUT_S = 1.5
# Seconds of sink history the latency quantiles cover: long enough for a few hundred samples
# at the demo's 50 events/s, short enough to show a change within a minute.
LATENCY_WINDOW_S = 60.0
LATENCY_METRIC = "streamflow_sink_produce_to_row_seconds_bucket"

# A component's state: ok, degraded (amber), down (red), as the cluster's health says them.
OK, DEGRADED, DOWN = cluster_health.OK, cluster_health.DEGRADED, cluster_health.DOWN
STARTING, UNKNOWN = "starting", "unknown"
SUPERVISOR = "supervisor"  # its state file marks a run directory of `streamflow up`

def scrape(address: str) -> Samples | None:
    return metrics.scrape(address, timeout_s=SCRAPE_TIMEOUT_S)


# -- latency --------------------------------------------------------------------------------

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


def buckets(samples: Samples, name: str = LATENCY_METRIC) -> Buckets:
    return tuple(sorted((float(labels["le"]), value) for labels, value in samples.get(name, ())))


def quantile(q: float, histogram: Buckets) -> float | None:
    """The q-quantile of a histogram, interpolated inside its bucket as Prometheus's
    histogram_quantile does (None: no observations); in the +Inf bucket, the highest bound."""
    if not histogram or histogram[-1][1] <= 0:
        return None
    rank = q * histogram[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in histogram:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside
                                                          if inside else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


class Latency(NamedTuple):
    p50_s: float | None
    p95_s: float | None
    samples: int  # observations in the window
    window_s: float


class LatencyWindow:
    """Cumulative histograms as scraped, kept LATENCY_WINDOW_S: their difference is the
    histogram of the last window (as Prometheus's rate() would take it)."""

    def __init__(self, window_s: float = LATENCY_WINDOW_S) -> None:
        self.window_s = window_s
        self._history: deque[tuple[float, Buckets]] = deque()

    def add(self, at: float, histogram: Buckets) -> None:
        if self._history:
            last = self._history[-1][1]
            if [b for b, _ in last] != [b for b, _ in histogram] or \
                    (histogram and histogram[-1][1] < last[-1][1]):
                self._history.clear()  # the sink restarted (counts fell) or changed buckets
        self._history.append((at, histogram))
        while len(self._history) > 1 and self._history[1][0] <= at - self.window_s:
            self._history.popleft()

    def clear(self) -> None:
        self._history.clear()

    def latency(self) -> Latency:
        if not self._history:
            return Latency(None, None, 0, self.window_s)
        first, last = self._history[0][1], self._history[-1][1]
        if len(self._history) == 1:
            first = tuple((bound, 0.0) for bound, _ in last)  # all since the sink started
        window = tuple((bound, count - before)
                       for (bound, count), (_, before) in zip(last, first, strict=True))
        seen = int(window[-1][1]) if window else 0
        return Latency(quantile(0.5, window), quantile(0.95, window), seen, self.window_s)


# -- the snapshot ---------------------------------------------------------------------------

class KafkaState(NamedTuple):
    reachable: bool | None  # None: not probed yet
    detail: str
    since: float  # when it became so (epoch seconds)
    cluster: cluster_health.ClusterHealth | None = None  # None: no answer


class Worker(NamedTuple):
    state: str  # OK (answering), STARTING (alive, /metrics not answering yet), DOWN, UNKNOWN
    samples: Samples | None = None
    rates: dict[str, float] | None = None  # counter name -> per second since the last scrape


@dataclass(frozen=True)
class Snapshot:
    kafka: KafkaState
    # None: no workers of `streamflow up` to look at (no run directory, or no supervisor
    # ever started in it: `up --no-workers`, docker compose)
    workers: dict[str, Worker] | None = None
    latency: Latency = Latency(None, None, 0, LATENCY_WINDOW_S)


# Counters of which the live page shows a rate (sample names as scraped).
RATE_COUNTERS = ("streamflow_events_landed_total",)


class Monitor:
    """Refreshed by one background thread; `snapshot` is replaced whole, never mutated, so
    the frame builder reads it without a lock."""

    def __init__(self, kafka: KafkaConnection, run_dir: Path | None,
                 nodes: cluster_health.NodesReader | None = None) -> None:
        self.kafka = kafka
        self.run_dir = run_dir
        self.nodes = nodes
        self.snapshot = Snapshot(KafkaState(None, "checking…", time.time()))
        self._admin = None
        self._latency = LatencyWindow()
        self._counters: dict[str, tuple[float, dict[str, float]]] = {}  # worker -> (at, values)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        while not stop.is_set():
            self.refresh()
            stop.wait(interval_s)

    def refresh(self) -> None:
        workers = self._workers()
        sink = (workers or {}).get(SINK)
        if sink is not None and sink.samples is not None:
            self._latency.add(time.time(), buckets(sink.samples))
        else:
            self._latency.clear()
        self.snapshot = Snapshot(self._probe_kafka(), workers, self._latency.latency())

    def _probe_kafka(self) -> KafkaState:
        previous = self.snapshot.kafka
        if self._admin is None:
            # Quiet: a broker that is down is reported on the page, not as log lines a second.
            self._admin = kafka_clients.admin_client(
                self.kafka, **{"log_level": 0, "socket.connection.setup.timeout.ms": 1000})
        try:
            replication = cluster.read_replication(self._admin, timeout_s=PROBE_TIMEOUT_S)
        except KafkaException:
            replication = None
        finally:
            self._admin.poll(0)
        reachable = replication is not None and bool(replication.brokers)
        judged = (cluster_health.judge(replication, self.nodes() if self.nodes else None)
                  if reachable else None)
        where = self.kafka.describe()
        detail = judged.summary(where) if judged else f"no answer from {where}"
        since = previous.since if previous.reachable == reachable else time.time()
        return KafkaState(reachable, detail, since, judged)

    def _workers(self) -> dict[str, Worker] | None:
        if self.run_dir is None or processes.read_state(self.run_dir, SUPERVISOR) is None:
            return None
        workers = {}
        for name in (PRODUCER, SINK, *DAGSTER):
            state = processes.read_state(self.run_dir, name)
            if state is None or not state.is_alive():
                workers[name] = Worker(DOWN)
                self._counters.pop(name, None)
            elif state.address.endswith("/metrics"):
                samples = scrape(state.address)
                workers[name] = (Worker(STARTING) if samples is None
                                 else Worker(OK, samples, self._rates(name, samples)))
            else:
                workers[name] = Worker(OK)
        return workers

    def _rates(self, name: str, samples: Samples) -> dict[str, float]:
        now = time.monotonic()
        values = {c: v for c in RATE_COUNTERS if (v := total(samples, c)) is not None}
        then, before = self._counters.get(name, (now, {}))
        self._counters[name] = (now, values)
        elapsed = now - then
        return {c: max(v - before[c], 0.0) / elapsed for c, v in values.items()
                if c in before and elapsed > 0}


# -- the frame's `health` -------------------------------------------------------------------

def _component(name: str, state: str, rate: float | None, unit: str, detail: str) -> dict:
    return {"name": name, "state": state,
            "rate": None if rate is None else round(rate, 2), "unit": unit, "detail": detail}


def document(snapshot: Snapshot, topic_rates: dict[str, float], *, assigned: bool) -> dict:
    """The frame's `health`: a row per component, the sink's lag and the latency."""
    kafka = snapshot.kafka
    waiting = kafka.reachable and not assigned
    rows = [_component("Kafka", kafka_row_state(kafka, assigned=assigned),
                       sum(topic_rates.values()), "msg/s",
                       kafka.detail + ("; waiting for partitions" if waiting else ""))]
    workers = snapshot.workers
    if workers is None:
        unknown = "not known: no workers of `streamflow up` here"
        rows += [_component(n, UNKNOWN, None, "", unknown)
                 for n in ("PostgreSQL", "producer", "sink", "micro-batch (Dagster)")]
        return {"components": rows, "sink_lag": None, "latency": snapshot.latency._asdict()}

    sink = workers.get(SINK, Worker(DOWN))
    producer = workers.get(PRODUCER, Worker(DOWN))
    sink_samples = sink.samples or {}
    lag = total(sink_samples, "streamflow_consumer_lag")
    database = total(sink_samples, "streamflow_database_available")
    rows.append(_component(
        "PostgreSQL", UNKNOWN if database is None else OK if database >= 1 else DOWN,
        (sink.rates or {}).get("streamflow_events_landed_total"), "rows/s",
        "no sink running to ask" if database is None
        else "the sink reaches it (rate: rows landed)" if database >= 1
        else "the sink cannot reach it"))
    rows.append(_worker_row("producer", producer, "events/s", _producer_detail(producer)))
    lag_text = "" if lag is None else f"lag {lag:,.0f} message" + ("" if lag == 1 else "s")
    rows.append(_worker_row("sink", sink, "events/s", lag_text))
    dagster = {name: workers.get(name, Worker(DOWN)).state for name in DAGSTER}
    stopped = [name for name, state in dagster.items() if state != OK]
    rows.append(_component(
        "micro-batch (Dagster)",  # the daemon's sensor launches the runs
        OK if not stopped else DOWN if dagster[DAGSTER[0]] != OK else DEGRADED,
        topic_rates.get(topics.ANALYTICS, 0.0) + topic_rates.get(topics.NOTIFICATIONS, 0.0),
        "msg/s",
        "daemon, code server and webserver running (rate: windows and notifications "
        "published)" if not stopped
        else "not running: " + ", ".join(stopped)))
    return {"components": rows, "sink_lag": lag, "latency": snapshot.latency._asdict()}


def kafka_row_state(kafka: KafkaState, *, assigned: bool) -> str:
    """The Kafka row: the cluster's state (cluster_health: ok, degraded = amber, down = red),
    down when it does not answer, starting while the live view waits for its partitions."""
    if kafka.reachable is None:
        return UNKNOWN
    if not kafka.reachable:
        return DOWN
    state = kafka.cluster.state if kafka.cluster is not None else OK
    return STARTING if state == OK and not assigned else state


def _worker_row(name: str, worker: Worker, unit: str, detail: str) -> dict:
    rate = total(worker.samples, "streamflow_rate") if worker.samples else None
    detail = {DOWN: "not running", STARTING: "starting"}.get(worker.state, detail)
    return _component(name, worker.state, rate, unit, detail)


def _producer_detail(producer: Worker) -> str:
    samples = producer.samples or {}
    produced = total(samples, "streamflow_events_produced_total")
    failed = total(samples, "streamflow_delivery_failures_total")
    if produced is None:
        return ""
    return f"{produced:,.0f} sent" + (f", {failed:,.0f} failed" if failed else "")
