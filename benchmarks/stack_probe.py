"""One sample of a running local stack, for `make soak`: memory of each process (with its
children), disk of each store, the sink's position against Kafka, the micro-batch backlog, the
micro-batch runs that finished (Dagster's run records)."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import psutil
import psycopg

from benchmarks.catchup import STEPS
from benchmarks.harness import Stack
from benchmarks.pipeline import WARM_UP_S, wait_for_first_window
from streamflow import kafka_clients, supervisor, topics
from streamflow.db.engine import libpq_url
from streamflow.infra import kafka_server, postgres_server, processes

MB = 1_000_000
# The micro-batch Dagster job whose runs are timed (streamflow_defs).
MICROBATCH_JOB = "microbatch"


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    processes: int  # the process and its children, as summed
    rss_mb: float
    pss_mb: float  # shared pages split between their users: sums without double counting


@dataclass(frozen=True)
class RunSeen:
    """A micro-batch run that finished, from Dagster's run records."""

    ended_s: float  # since the soak started
    seconds: float
    status: str
    rows: int | None  # the ingest_seq range it asked for (sensor tags), None if untagged


@dataclass(frozen=True)
class WindowPoint:
    visible_s: float  # since the soak started
    latency_s: float


class SinkPosition(NamedTuple):
    produced: int
    landed: int
    lag: int


@dataclass(frozen=True)
class Sample:
    t_s: float
    processes: dict[str, ProcessMemory]
    disk_mb: dict[str, float]
    produced: int  # user-events messages written to Kafka since the soak started
    landed: int  # of those, what the sink has landed (its offsets stored with the rows)
    sink_lag: int  # high watermarks - the sink's stored offsets, summed over partitions
    backlog: int  # max(raw.events.ingest_seq) - the slower micro-batch watermark
    runs: list[RunSeen] = field(default_factory=list)
    windows: list[WindowPoint] = field(default_factory=list)

    @property
    def total_rss_mb(self) -> float:
        return sum(p.rss_mb for p in self.processes.values())

    @property
    def total_pss_mb(self) -> float:
        return sum(p.pss_mb for p in self.processes.values())


def process_memory(pid: int, *, tree: bool) -> ProcessMemory | None:
    """RSS and PSS of ``pid`` (with its children when ``tree``); None if it is gone."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)] if tree else [root]
    except psutil.Error:
        return None
    rss = pss = counted = 0
    for proc in members:
        with contextlib.suppress(psutil.Error):  # a child may end between listing and reading
            info = proc.memory_full_info()
            rss, pss, counted = rss + info.rss, pss + info.pss, counted + 1
    return ProcessMemory(pid, counted, round(rss / MB, 1), round(pss / MB, 1))


def disk_bytes(path: os.PathLike | str) -> int:
    """Bytes allocated on disk under ``path`` (like `du`; symlinks not followed)."""
    total = 0
    try:
        entries = list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):  # rotated or deleted while walking
            if entry.is_dir(follow_symlinks=False):
                total += disk_bytes(entry.path)
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


class StackProbe:
    """Reads samples of a running stack. Connects in ``setup()``, closes in ``close()``."""

    def __init__(self, st: Stack) -> None:
        self.st = st
        self.workers = [spec.name for spec in supervisor.worker_specs(st.settings)]
        settings = st.settings
        self.stores = {"postgres": settings.postgres_dir, "kafka": settings.kafka_dir,
                       "dagster": settings.dagster_home_dir, "logs": settings.logs_dir}
        self.conn: psycopg.Connection | None = None
        self.consumer = None
        self.instance = None
        self.partitions: list[int] = []
        self.started = 0.0
        self.base = SinkPosition(0, 0, 0)
        self.runs_seen: set[str] = set()
        self.runs_checked = 0.0

    def setup(self) -> StackProbe:
        from dagster import DagsterInstance  # heavy: only when a soak runs

        self.conn = psycopg.connect(libpq_url(self.st.database_url), autocommit=True)
        self.consumer = kafka_clients.consumer(self.st.kafka, "streamflow-soak-probe")
        metadata = self.consumer.list_topics(topics.USER_EVENTS, timeout=30)
        self.partitions = sorted(metadata.topics[topics.USER_EVENTS].partitions)
        self.instance = DagsterInstance.from_config(str(self.st.settings.dagster_home_dir))
        return self

    def close(self) -> None:
        for closing in (self.conn, self.consumer, self.instance):
            if closing is not None:
                with contextlib.suppress(Exception):  # best effort on the way out
                    closing.close()

    def warm_up(self, echo) -> tuple[float, float]:
        """Wait for the first window and WARM_UP_S more, then ``start``: (seconds until the
        first window, the start's epoch time)."""
        first_window_s = wait_for_first_window(self.conn)
        echo(f"first window after {first_window_s:.0f} s; warming up {WARM_UP_S} s ...")
        time.sleep(WARM_UP_S)
        started = time.time()
        self.start(started)
        return first_window_s, started

    def start(self, at: float) -> None:
        """Measure from ``at``: landed events and finished runs count from here."""
        self.started = self.runs_checked = at
        self.base = self.sink_position()
        self.finished_runs()  # the warm-up's runs are not the soak's

    def pids(self) -> dict[str, int]:
        found = {}
        for name in (supervisor.COMPONENT, *self.workers):
            state = processes.read_state(self.st.settings.run_dir, name)
            if state and state.is_alive():
                found[name] = state.pid
        for name, service in (("kafka", kafka_server), ("postgres", postgres_server)):
            if state := service.running(self.st.settings):
                found[name] = state.pid
        return found

    def memory(self) -> dict[str, ProcessMemory]:
        """Each process of the stack; the supervisor alone (its children are the workers)."""
        found = {}
        for name, pid in self.pids().items():
            mem = process_memory(pid, tree=name != supervisor.COMPONENT)
            if mem is not None:
                found[name] = mem
        return found

    def _stored_offsets(self) -> dict[int, int]:
        rows = self.conn.execute(
            "SELECT kafka_partition, next_offset FROM raw.consumer_offsets "
            "WHERE group_id = %s AND topic = %s AND next_offset IS NOT NULL",
            (topics.SINK_GROUP, topics.USER_EVENTS))
        return dict(rows.fetchall())

    def sink_position(self) -> SinkPosition:
        """The sink's stored offsets against Kafka's ends (since ``start``)."""
        ends = topics.end_offsets(self.consumer, topics.USER_EVENTS, self.partitions)
        stored = self._stored_offsets()
        lag = sum(max(end - stored.get(p, 0), 0) for p, end in zip(self.partitions, ends,
                                                                   strict=True))
        return SinkPosition(sum(ends) - self.base.produced,
                            sum(stored.values()) - self.base.landed, lag)

    def backlog(self) -> int:
        landed, done = self.conn.execute(
            "SELECT (SELECT coalesce(max(ingest_seq), 0) FROM raw.events), "
            "(SELECT coalesce(min(last_seq), 0) FROM streamflow.watermarks "
            "WHERE name = ANY(%s))", (STEPS,)).fetchone()
        return max(landed - done, 0)

    def finished_runs(self) -> list[RunSeen]:
        """Micro-batch runs that finished since the last call (each run once)."""
        from dagster import DagsterRunStatus, RunsFilter

        # A margin: a run's record may be written a little after it ended.
        after = datetime.fromtimestamp(self.runs_checked - 60, tz=UTC)
        self.runs_checked = time.time()
        records = self.instance.get_run_records(RunsFilter(
            job_name=MICROBATCH_JOB, updated_after=after,
            statuses=[DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]))
        seen = []
        for r in sorted(records, key=lambda r: r.end_time or 0):
            run_id = r.dagster_run.run_id
            if run_id in self.runs_seen or not (r.start_time and r.end_time):
                continue
            self.runs_seen.add(run_id)
            if r.end_time < self.started:
                continue
            tags = r.dagster_run.tags
            span = (tags.get("streamflow/from_seq"), tags.get("streamflow/upto_seq"))
            rows = int(span[1]) - int(span[0]) if all(s and s.isdigit() for s in span) else None
            seen.append(RunSeen(round(r.end_time - self.started, 1),
                                round(r.end_time - r.start_time, 2),
                                r.dagster_run.status.value, rows))
        return seen

    def sample(self, now: float, windows: list[WindowPoint]) -> Sample:
        position = self.sink_position()
        return Sample(
            t_s=round(now - self.started, 1), processes=self.memory(),
            disk_mb={name: round(disk_bytes(path) / MB, 1) for name, path in self.stores.items()},
            produced=position.produced, landed=position.landed, sink_lag=position.lag,
            backlog=self.backlog(), runs=self.finished_runs(), windows=windows)
