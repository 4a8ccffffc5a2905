"""`streamflow up / down / status`: the local platform as one unit.

``up`` is idempotent: each component is started only when it is not already running and
healthy, so running it twice never starts duplicates. A failed ``up`` stops again what it
started itself, so it never leaves a half-started stack behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from streamflow import dbt_env, endpoints, pii, supervisor, topics
from streamflow.cluster_health import ClusterHealth
from streamflow.db import migrate
from streamflow.db.engine import redacted, server_version
from streamflow.errors import WorkersFailed
from streamflow.infra import kafka_server, postgres_server, processes
from streamflow.kafka_clients import admin_client, broker_problem, require_broker
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import Settings, env_var_names, to_env


@dataclass(frozen=True)
class Services:
    """A running Kafka and PostgreSQL as their clients reach them (tests, benchmarks)."""

    settings: Settings
    database_url: str

    @property
    def kafka(self) -> KafkaConnection:
        return self.settings.kafka

    @property
    def bootstrap(self) -> str:
        return self.settings.bootstrap_servers


def up(settings: Settings, *, echo=print, workers: bool = True) -> None:
    for directory in (settings.home_dir, settings.logs_dir, settings.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    # What this call starts is stopped again if a later step fails (a refused DATABASE_URL,
    # Ctrl-C); what ran before it is left alone.
    with contextlib.ExitStack() as started:
        if settings.embedded_kafka:
            kafka_server.fetch(settings, echo=echo)
            states = kafka_server.node_states(settings)
            stopped = [n.node_id for n, state in states if state is None]
            if len(stopped) == len(states):
                started.callback(_undo, lambda: {"kafka": kafka_server.stop(settings)}, echo)
            elif stopped:  # a cluster with nodes down: only those are this call's
                started.callback(_undo, lambda: {f"kafka node {i}": kafka_server.stop(
                    settings, node_id=i) for i in stopped}, echo)
            kafka_server.start(settings, echo=echo)
        else:
            require_broker(settings.kafka)
            echo(f"using Kafka at {settings.kafka.describe()} (KAFKA_BOOTSTRAP_SERVERS)")
        if settings.embedded_postgres:
            if postgres_server.running(settings) is None:
                started.callback(
                    _undo, lambda: {"postgres": postgres_server.stop(settings)}, echo)
            postgres_server.start(settings, echo=echo)
        else:
            echo("using PostgreSQL from DATABASE_URL")
        url = endpoints.database_url(settings)
        # The interval of these settings, not of the environment (a caller may override it).
        before, after = migrate.upgrade(url, partition_interval=settings.partition_period)
        echo(f"schema at revision {after}" + ("" if before == after else f" (was {before})"))
        # A layout other than the settings' (a stack created before with 1 partition) is
        # reported with its fix, not fatal: the workers read any partition count.
        statuses = topics.ensure_topics(
            admin_client(settings.kafka), topics.topic_specs(settings),
            replication_factor=settings.topic_replication_factor,
            min_insync_replicas=settings.topic_min_insync_replicas, strict=False,
        )
        echo("topics: " + ", ".join(f"{s.name} ({s.outcome})" for s in statuses))
        if problem := topics.mismatch_message(statuses):
            echo(f"warning: {problem}")
        _local_pii_key(settings)  # `streamflow produce` needs it, with or without workers
        if workers:
            if not _supervisor_alive(settings):
                started.callback(_undo, lambda: stop_workers(settings), echo)
            start_workers(settings, url, echo=echo)
        started.pop_all()  # every step done: keep it all running


def _undo(stop: Callable[[], dict[str, str]], echo) -> None:
    for component, outcome in stop().items():
        if outcome != "not running":
            echo(f"{component}: {outcome} (`up` did not finish)")


def _local_pii_key(settings: Settings) -> None:
    """The local stack's own PII key, kept private under STREAMFLOW_HOME, unless
    STREAMFLOW_PII_KEY gives one (`up` makes it, and `start_workers`, which benchmarks call
    without `up`)."""
    if settings.pii_key is None:
        pii.generate_local_key(settings)


def _supervisor_alive(settings: Settings) -> bool:
    state = processes.read_state(settings.run_dir, supervisor.COMPONENT)
    return bool(state and state.is_alive())


def child_env(settings: Settings, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `streamflow` child process (the supervisor and its workers, or a
    worker a test or benchmark starts) on this stack: it sees exactly these settings, including
    ones given in code rather than the environment; a StreamFlow variable of this process's
    environment that the settings do not carry is left out. ``extra`` wins (a test's PII key)."""
    inherited = {k: v for k, v in os.environ.items() if k not in env_var_names()}
    return {**inherited, **to_env(settings), "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, **extra}


def start_workers(settings: Settings, database_url: str, *, echo=print) -> None:
    """Start the supervisor (it starts and restarts the workers), unless it runs already."""
    state = processes.read_state(settings.run_dir, supervisor.COMPONENT)
    if state and state.is_alive():
        echo(f"workers already running (supervisor pid {state.pid})")
        return
    # One generation: workers of a supervisor that was killed outright (SIGKILL, the OOM
    # killer) still run, and would run beside the new ones, out of reach of `down`.
    for name, outcome in _stop_orphaned_workers(settings).items():
        echo(f"{name}: {outcome} (left running by a supervisor that was killed)")
    _local_pii_key(settings)
    if dbt_env.prepare_manifest():  # the code server loads the dbt assets from it
        echo(f"dbt manifest written: {dbt_env.manifest_path()}")
    supervisor.prepare_dagster_instance(settings, database_url, echo=echo)
    env = child_env(settings, database_url)
    state, _ = processes.spawn(
        supervisor.COMPONENT, [sys.executable, "-m", "streamflow.cli", "supervise"],
        run_dir=settings.run_dir, log_path=settings.logs_dir / "supervisor.log", env=env)
    names = [spec.name for spec in supervisor.worker_specs(settings)]

    def workers_up() -> bool:
        return all((w := processes.read_state(settings.run_dir, n)) and w.is_alive()
                   for n in names)

    if not processes.wait_until(workers_up, timeout_s=20):
        raise WorkersFailed(f"workers did not start; see {settings.logs_dir}/supervisor.log")
    echo(f"workers: {', '.join(names)} (supervisor pid {state.pid})")
    echo(f"Live view: http://127.0.0.1:{settings.live_port}/")
    dagster_ui = f"http://127.0.0.1:{settings.dagster_port}"
    if processes.wait_until(lambda: _http_ok(dagster_ui + "/server_info"), timeout_s=120):
        echo(f"Dagster UI: {dagster_ui}")
    else:
        echo(f"Dagster UI not answering yet at {dagster_ui}; see "
             f"{settings.logs_dir}/dagster-webserver.log")


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_workers(settings: Settings) -> dict[str, str]:
    report = {}
    state = processes.read_state(settings.run_dir, supervisor.COMPONENT)
    if state and state.is_alive():
        report["supervisor"] = processes.terminate(state.pid, timeout_s=90)
    processes.clear_state(settings.run_dir, supervisor.COMPONENT)
    return {**report, **_stop_orphaned_workers(settings)}


def _stop_orphaned_workers(settings: Settings) -> dict[str, str]:
    """Stop the workers whose supervisor is gone; clear every worker's state file.

    Each worker's state file (written by the supervisor as it starts one) names its pid, and
    ``is_alive`` checks the process is still that one by its start time, so a pid reused by
    another program after a crash or reboot is never signalled."""
    report = {}
    for spec in supervisor.worker_specs(settings):
        worker = processes.read_state(settings.run_dir, spec.name)
        if worker and worker.is_alive():
            report[spec.name] = processes.terminate(worker.pid)
        processes.clear_state(settings.run_dir, spec.name)
    return report


def down(settings: Settings, *, echo=print) -> dict[str, str]:
    """Stop what ``up`` started, in reverse order; external services are left alone."""
    report = stop_workers(settings)
    if settings.embedded_postgres:
        report["postgres"] = postgres_server.stop(settings)
    if settings.embedded_kafka:
        report["kafka"] = kafka_server.stop(settings)
    for component, outcome in report.items():
        echo(f"{component}: {outcome}")
    return report


@dataclass(frozen=True)
class ComponentStatus:
    component: str
    pid: int | None
    address: str
    healthy: bool
    detail: str = ""
    partitions: list[int] | None = None  # a running sink's partitions (supervisor.SINK)


@dataclass(frozen=True)
class BrokerStatus:
    node_id: int
    pid: int | None      # None: not an embedded node, or not running
    address: str
    up: bool
    controller: bool     # the KRaft quorum's leader (embedded nodes only)


@dataclass(frozen=True)
class KafkaCluster:
    """What `status` says of Kafka: the cluster's health (streamflow.cluster_health, as the
    live view and the Dagster check judge it) with each embedded node's process."""

    health: ClusterHealth | None  # None: the cluster did not answer
    pids: dict[int, int]          # embedded node id -> its running process
    problem: str | None           # why it did not answer

    @property
    def brokers(self) -> tuple[BrokerStatus, ...]:
        if self.health is None:
            return tuple(BrokerStatus(i, pid, "", False, False)
                         for i, pid in sorted(self.pids.items()))
        return tuple(BrokerStatus(b.id, self.pids.get(b.id), b.address, b.up, b.controller)
                     for b in self.health.brokers)

    @property
    def under_replicated(self) -> int | None:
        return None if self.health is None else len(self.health.under_replicated)

    @property
    def offline(self) -> int | None:
        return None if self.health is None else len(self.health.offline)

    @property
    def quorum(self) -> bool:
        return self.health is not None and self.health.quorum

    def describe(self) -> str:
        return self.health.summary() if self.health is not None else (self.problem or "")


def kafka_cluster(settings: Settings) -> KafkaCluster:
    """The cluster's health and each embedded node's process. Never raises: what fails is
    reported."""
    from streamflow import cluster, cluster_health

    pids = ({n.node_id: state.pid for n, state in kafka_server.node_states(settings)
             if state is not None} if settings.embedded_kafka else {})
    problem = broker_problem(settings.kafka, timeout_s=2.0)
    if problem is not None:
        return KafkaCluster(None, pids, problem)
    try:
        replication = cluster.replication(settings.kafka, timeout_s=3.0)
    except Exception as exc:  # status reports every failure, it never raises
        return KafkaCluster(None, pids, str(exc).splitlines()[0])
    nodes = cluster_health.embedded_nodes(settings) if settings.embedded_kafka else None
    return KafkaCluster(cluster_health.judge(replication, nodes), pids, None)


def _kafka_status(settings: Settings, kafka: KafkaCluster) -> list[ComponentStatus]:
    detail = "embedded" if settings.embedded_kafka else f"external, {settings.kafka.protocol}"
    if settings.embedded_kafka and not kafka.pids:
        detail = "not running"
    elif kafka.problem is not None:
        detail = kafka.problem
    elif len(kafka.brokers) > 1 or kafka.health.state != "ok":
        detail += f": {kafka.describe()}"
    healthy = kafka.health is not None and kafka.health.state == "ok"
    rows = [ComponentStatus("kafka", kafka.pids.get(min(kafka.pids, default=0)),
                            settings.bootstrap_servers, healthy, detail)]
    if settings.embedded_kafka and settings.kafka_brokers > 1:
        rows += [ComponentStatus(f"kafka node {b.node_id}", b.pid, b.address, b.up,
                                 ("controller" if b.controller else "broker") if b.up else
                                 ("not running" if b.pid is None else "not in the cluster yet"))
                 for b in kafka.brokers]
    return rows


def _postgres_status(settings: Settings) -> ComponentStatus:
    state = postgres_server.running(settings) if settings.embedded_postgres else None
    try:
        url = endpoints.database_url(settings)
        detail = f"PostgreSQL {server_version(url)}"
        healthy = True
    except Exception as exc:  # status reports every failure, it never raises
        url = state.address if state else ""
        detail, healthy = str(exc).splitlines()[0], False
    # The address is shown (the table, `status --json`), so never with DATABASE_URL's password.
    return ComponentStatus("postgres", state.pid if state else None, redacted(url), healthy,
                           detail)


def _worker_statuses(settings: Settings) -> list[ComponentStatus]:
    state = processes.read_state(settings.run_dir, supervisor.COMPONENT)
    if state is None:
        return []  # workers not started (`up --no-workers`, or the stack is down)
    rows = [ComponentStatus(supervisor.COMPONENT, state.pid, "", state.is_alive(),
                            "" if state.is_alive() else "not running")]
    first_sink = True
    for spec in supervisor.worker_specs(settings):
        worker = processes.read_state(settings.run_dir, spec.name)
        alive = bool(worker and worker.is_alive())
        detail = "not running"
        partitions = None
        address = worker.address if worker else ""
        if alive and address.endswith("/metrics"):  # the port the supervisor gave it
            from streamflow import metrics  # prometheus_client: not for every CLI start

            samples = metrics.scrape(address) or {}
            rate = metrics.total(samples, "streamflow_rate")
            detail = f"{rate:,.1f} events/s" if rate is not None else "starting"
            if spec.kind == supervisor.SINK:
                partitions = metrics.held_partitions(samples)
                detail += "; partitions " + (", ".join(map(str, partitions)) or "none")
                # The group's stored offsets, once (every sink of the group shares them).
                detail += _sink_offsets(settings, samples) if first_sink else ""
                first_sink = False
        elif alive and address.startswith("grpc://"):  # answers when its port is taken
            detail = "starting" if processes.port_is_free(int(address.rsplit(":", 1)[1])) \
                else "answering"
        elif alive and address:
            detail = "answering" if _http_ok(address + spec.health_path) else "starting"
        elif alive:
            detail = "running"
        rows.append(ComponentStatus(spec.name, worker.pid if alive else None,
                                    worker.address if worker else "", alive, detail, partitions))
    return rows


def _sink_offsets(settings: Settings, samples: dict) -> str:
    """The running sink's detail: which incarnation of its topic its stored offsets are of,
    and whether it saw the topic deleted and created again."""
    from streamflow.sink.incarnation import stored_incarnation

    try:
        detail = "; " + stored_incarnation(endpoints.database_url(settings),
                                           settings.kafka).describe()
    except Exception as exc:  # status reports every failure, it never raises
        detail = f"; stored offsets unknown: {str(exc).splitlines()[0]}"
    from streamflow import metrics

    if metrics.total(samples, "streamflow_topic_recreations_total"):
        detail += "; the topic was deleted and created again: read from its beginning"
    return detail


def _quarantine_status(settings: Settings, postgres: ComponentStatus) -> list[ComponentStatus]:
    """A line while anything is quarantined (nothing stopped, but someone must look)."""
    if not postgres.healthy:
        return []
    from streamflow.db import quarantine
    from streamflow.db.engine import connect_admin

    try:
        with connect_admin(endpoints.database_url(settings), "streamflow-status") as conn:
            count, oldest = quarantine.unresolved(conn)
    except Exception:  # noqa: BLE001 - the postgres line says what is wrong with the database
        return []
    if not count:
        return []
    return [ComponentStatus("quarantine", None, "", False,
                            f"{count} unresolved since {oldest:%Y-%m-%d %H:%M} UTC: "
                            "`streamflow quarantine list`")]


def status(settings: Settings, kafka: KafkaCluster | None = None) -> list[ComponentStatus]:
    postgres = _postgres_status(settings)
    return [*_kafka_status(settings, kafka or kafka_cluster(settings)), postgres,
            *_quarantine_status(settings, postgres), *_worker_statuses(settings)]


def status_document(settings: Settings) -> dict:
    """``status --json``: the same table plus the addresses scripts need (a database URL's
    password shown as ``***``)."""
    kafka = kafka_cluster(settings)
    components = status(settings, kafka)
    by_name = {c.component: c for c in components}
    return {
        "home": str(settings.home_dir),
        "kafka_bootstrap_servers": settings.bootstrap_servers,
        "database_url": by_name["postgres"].address,
        "healthy": all(c.healthy for c in components),
        "components": [asdict(c) for c in components],
        "kafka": {"state": kafka.health.state if kafka.health else "down",
                  "reasons": kafka.health.reasons() if kafka.health else [kafka.problem],
                  "brokers": [asdict(b) for b in kafka.brokers],
                  "under_replicated_partitions": kafka.under_replicated,
                  "offline_partitions": kafka.offline},
    }
