"""The `streamflow` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from streamflow import browser, endpoints, stack, topics
from streamflow.archive import commands as archive_commands
from streamflow.db.engine import redacted
from streamflow.dlq_ops import commands as dlq_commands
from streamflow.dlq_ops import quarantine_commands
from streamflow.errors import StreamFlowError
from streamflow.settings import Settings, load_settings

app = typer.Typer(help="StreamFlow: Kafka -> PostgreSQL -> Dagster event platform.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
kafka_app = typer.Typer(help="The embedded Kafka broker.", no_args_is_help=True)
topics_app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
dagster_app = typer.Typer(help="The Dagster instance.", no_args_is_help=True)
dbt_app = typer.Typer(help="The dbt project.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(dagster_app, name="dagster")
app.add_typer(dbt_app, name="dbt")
app.add_typer(dlq_commands.app, name="dlq")
app.add_typer(quarantine_commands.app, name="quarantine")
app.add_typer(archive_commands.app, name="archive")
lifecycle_app = typer.Typer(help="Time partitions, the archive and hot retention.",
                            no_args_is_help=True)
app.add_typer(lifecycle_app, name="lifecycle")

console = Console()
# Events/s of `streamflow produce` without --rate: a gentle demo stream.
DEFAULT_RATE = 20.0
# Bounds of numeric flags, so a wrong value is a one-line usage error at start, not a
# traceback later: confluent-kafka's consume() takes at most 1,000,000 messages a call; a
# synthetic user costs ~300 B of memory; a rate beyond the producer's ~150k/s means --max-rate.
MAX_BATCH_SIZE = 1_000_000
MAX_USERS = 10_000_000
MAX_RATE = 10_000_000.0


def _settings() -> Settings:
    return load_settings()


def _echo(message: str) -> None:
    console.print(message, highlight=False, markup=False)


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from importlib.metadata import version

    from streamflow.infra import kafka_server

    # The package's version from its installed metadata (pyproject.toml, the one home), and
    # the Kafka the embedded broker runs (pom.xml).
    _echo(f"streamflow {version('streamflow')} (Apache Kafka {kafka_server.kafka_version()})")
    raise typer.Exit()


@app.callback()
def _options(_version: bool = typer.Option(False, "--version", callback=_print_version,
                                           is_eager=True, help="Print the version and exit.")
             ) -> None:
    """StreamFlow: Kafka -> PostgreSQL -> Dagster event platform."""


@app.command()
def up(workers: bool = typer.Option(True, "--workers/--no-workers",
                                    help="Also start the supervised producer and sink.")) -> None:
    """Start Kafka, PostgreSQL, migrations, topics and the workers (only what is not running)."""
    settings = _settings()
    stack.up(settings, echo=_echo, workers=workers)
    _print_status(stack.status(settings))
    _echo(f"Kafka bootstrap: {settings.kafka.describe()}")


@app.command()
def down() -> None:
    """Stop the embedded services (SIGTERM, wait, report)."""
    stack.down(_settings(), echo=_echo)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Each component: pid, address, healthy? Exits 1 when something is unhealthy."""
    settings = _settings()
    if as_json:
        document = stack.status_document(settings)
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        healthy = document["healthy"]
    else:
        components = stack.status(settings)
        _print_status(components)
        healthy = all(c.healthy for c in components)
    raise typer.Exit(0 if healthy else 1)


def _print_status(components: list[stack.ComponentStatus]) -> None:
    table = Table("component", "pid", "address", "healthy", "detail")
    table.columns[2].overflow = "fold"
    for c in components:
        table.add_row(c.component, str(c.pid or "-"), redacted(c.address),
                      "yes" if c.healthy else "NO", c.detail)
    console.print(table)


def _logging(settings: Settings) -> None:
    from streamflow import logs

    logs.setup(settings)


def _serve_metrics(settings: Settings, port: int | None) -> None:
    from streamflow import logs, metrics

    bound = metrics.serve(settings.metrics_port if port is None else port, settings.metrics_host)
    logs.notice(f"metrics on http://{settings.metrics_host}:{bound}/metrics", "streamflow.cli")


@app.command()
def produce(
    rate: float | None = typer.Option(None, "--rate", min=0.001, max=MAX_RATE,
                                      help="Events per second."),
    max_rate: bool = typer.Option(False, "--max-rate", help="As fast as the broker takes."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after N events."),
    duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after S s."),
    invalid_rate: float = typer.Option(0.0, "--invalid-rate", min=0, max=1,
                                       help="Share of invalid events (DLQ demo)."),
    late_rate: float = typer.Option(0.0, "--late-rate", min=0, max=1,
                                    help="Share of late, out-of-order events."),
    from_file: Path | None = typer.Option(None, "--from-file", exists=True, dir_okay=False,
                                          help="Replay a JSON-lines file (e-mails masked)."),
    topic: str = typer.Option(topics.USER_EVENTS, "--topic"),
    users: int = typer.Option(10_000, "--users", min=1, max=MAX_USERS,
                              help="Distinct synthetic users."),
    seed: int | None = typer.Option(None, "--seed", help="Reproducible synthetic stream."),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535,
        help="Default: first free from STREAMFLOW_METRICS_PORT."),
    stats_file: Path | None = typer.Option(
        None, "--stats-file", dir_okay=False,
        help="On exit, write the delivery counts here as JSON (delivered = acknowledged)."),
) -> None:
    """Produce user events (PII masked before they leave this process); SIGTERM flushes."""
    from dataclasses import asdict

    from streamflow import pii
    from streamflow.kafka_clients import require_broker
    from streamflow.producer.worker import ProducerConfig, ProducerStats, run_producer

    if rate is not None and max_rate:
        raise typer.BadParameter("choose --rate or --max-rate, not both")
    settings = _settings()
    _logging(settings)
    key = pii.load_key(settings)
    # A wrong address is one line now, not a traceback when the topic lookup times out; an
    # outage after the start is waited out (docs/RELIABILITY.md).
    require_broker(settings.kafka)
    _serve_metrics(settings, metrics_port)
    stats = ProducerStats()
    try:
        run_producer(ProducerConfig(
            settings.kafka, topic=topic,
            rate=None if max_rate else (rate if rate is not None else DEFAULT_RATE),
            count=count, duration_s=duration, invalid_rate=invalid_rate, late_rate=late_rate,
            from_file=from_file, users=users, seed=seed,
        ), key, stats=stats)
    finally:
        # Also after a failed run: a harness compares what landed with what was acknowledged.
        if stats_file is not None:
            stats_file.write_text(json.dumps(asdict(stats)) + "\n")


@app.command()
def sink(
    topic: str = typer.Option(topics.USER_EVENTS, "--topic"),
    group: str = typer.Option(topics.SINK_GROUP, "--group",
                              help="Consumer group (shared by sinks)."),
    dlq_topic: str = typer.Option(topics.DEAD_LETTER, "--dlq-topic"),
    batch_size: int = typer.Option(10_000, "--batch-size", min=1, max=MAX_BATCH_SIZE,
                                   help="Most messages per transaction."),
    synchronous_commit: bool = typer.Option(False, "--synchronous-commit/--async-commit",
                                            help="PostgreSQL synchronous_commit for the sink."),
    stop_when_idle: float | None = typer.Option(None, "--stop-when-idle", min=0.1,
                                                help="Exit after S s without messages."),
    instance_id: str | None = typer.Option(
        None, "--instance-id", help="Static group member id: a restart resumes at once."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", min=0, max=65535),
) -> None:
    """Land user events in raw.events exactly once; rejects go to the dead-letter topic."""
    from streamflow.db.engine import require_credentials
    from streamflow.kafka_clients import require_broker
    from streamflow.sink.worker import SinkConfig, run_sink

    settings = _settings()
    _logging(settings)
    database_url = endpoints.database_url(settings)
    # A refusal (wrong password) ends the sink at once in one line; a database that is only
    # down is waited for, as during a run (docs/RELIABILITY.md).
    require_credentials(database_url)
    require_broker(settings.kafka)  # a refused login is one line, not a silent retry loop
    _serve_metrics(settings, metrics_port)
    run_sink(SinkConfig(
        settings.kafka, database_url, topic=topic,
        group_id=group, dlq_topic=dlq_topic, batch_size=batch_size,
        synchronous_commit=synchronous_commit, stop_when_idle_s=stop_when_idle,
        instance_id=instance_id, group_protocol=settings.kafka_group_protocol,
    ))


@app.command()
def live(port: int | None = typer.Option(None, "--port", help="Default: STREAMFLOW_LIVE_PORT."),
         host: str = typer.Option("127.0.0.1", "--host",
                                  help="Interface to listen on (0.0.0.0 in a container; "
                                       "beyond loopback STREAMFLOW_LIVE_TOKEN is required).")
         ) -> None:
    """Serve the live WebSocket view of the stream (and /health)."""
    from functools import partial

    from streamflow import logs
    from streamflow.cluster_health import embedded_nodes
    from streamflow.live.access import parse_allowed_origins, require_token_off_loopback
    from streamflow.live.server import LiveConfig, run_live

    settings = _settings()
    _logging(settings)
    token = settings.live_token.get_secret_value() if settings.live_token else None
    # Checked before the banner: a refused start prints its one error line and nothing else.
    require_token_off_loopback(host, token)
    origins = parse_allowed_origins(settings.live_allowed_origins)
    bound = port or settings.live_port
    logs.notice(f"live view on http://{host}:{bound}/", "streamflow.cli")
    nodes = partial(embedded_nodes, settings) if settings.embedded_kafka else None
    run_live(LiveConfig(settings.kafka, token=token,
                        dagster_url=f"http://127.0.0.1:{settings.dagster_port}",
                        allowed_origins=origins, run_dir=settings.run_dir, nodes=nodes),
             bound, host)


@app.command(hidden=True)
def supervise() -> None:
    """Run the workers of the local stack, restarting any that dies (started by `up`)."""
    from streamflow.supervisor import run_supervisor

    run_supervisor(_settings())


# The Kafka browser (topics list is under `topics`): rendering in streamflow/browser.py.
app.command("groups")(browser.groups_command)
app.command("tail")(browser.tail_command)


NODE = typer.Option(None, "--node", min=1, help="Only this node (1 to STREAMFLOW_KAFKA_BROKERS).")


@kafka_app.command("start")
def kafka_start(node: int | None = NODE) -> None:
    """Start the embedded Kafka nodes that are not running (all, or --node N)."""
    from streamflow.infra import kafka_server

    settings = _settings()
    kafka_server.fetch(settings, echo=_echo)
    kafka_server.start(settings, echo=_echo, node_id=node)
    _echo(f"kafka: answering on {settings.bootstrap_servers}")


@kafka_app.command("stop")
def kafka_stop(node: int | None = NODE) -> None:
    """Stop the embedded Kafka nodes (all, or --node N): a controlled shutdown each."""
    from streamflow.infra import kafka_server

    _echo(f"kafka: {kafka_server.stop(_settings(), node_id=node)}")


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Copy the Kafka jars under STREAMFLOW_HOME with Maven (once; offline afterwards)."""
    from streamflow.infra import kafka_server

    path = kafka_server.fetch(_settings(), echo=_echo)
    _echo(f"Kafka {kafka_server.kafka_version()} jars in {path}")


@topics_app.command("create")
def topics_create(add_partitions: bool = typer.Option(
        False, "--add-partitions",
        help="Grow existing topics with fewer partitions than the settings say (Kafka cannot "
             "remove any; a key's later messages may go to another partition)."),
        fix_replication: bool = typer.Option(
        False, "--fix-replication",
        help="Give existing topics the replication factor and min.insync.replicas the cluster "
             "asks for: copies added (or removed) while the topics are in use, then "
             "min.insync.replicas set once they are in sync.")) -> None:
    """Create the pipeline's topics; report existing ones with the wrong partition count or
    replication."""
    from streamflow.kafka_clients import admin_client, require_broker
    from streamflow.replicas import Mover

    settings = _settings()
    require_broker(settings.kafka)
    mover = Mover(settings.kafka) if fix_replication else None
    try:
        statuses = topics.ensure_topics(
            admin_client(settings.kafka), topics.topic_specs(settings),
            replication_factor=settings.topic_replication_factor,
            min_insync_replicas=settings.topic_min_insync_replicas,
            add_partitions=add_partitions, fix_replication=mover)
    finally:
        if mover is not None:
            mover.close()
    for s in statuses:
        notes = [n for n in (s.detail, s.replicated) if n]
        _echo(f"{s.name}: {s.outcome}" + (f" ({'; '.join(notes)})" if notes else ""))


@topics_app.command("list")
def topics_list(
    every: bool = typer.Option(False, "--all", help="Every topic, not only the pipeline's."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document."),
) -> None:
    """Partitions, retention and end offsets of the pipeline's topics (exit 1: one missing)."""
    from streamflow import cluster
    from streamflow.kafka_clients import require_broker

    settings = _settings()
    require_broker(settings.kafka)
    names = [spec.name for spec in topics.topic_specs(settings)]
    infos = cluster.topic_infos(settings.kafka, None if every else names)
    missing = sorted(set(names) - {i.name for i in infos})
    if as_json:
        sys.stdout.write(json.dumps({"topics": [cluster.topic_dict(i) for i in infos],
                                     "missing": missing}, indent=2) + "\n")
        raise typer.Exit(1 if missing else 0)
    table = Table("topic", "partitions", "retention", "end offsets", "messages")
    for info in infos:
        hours = f"{info.retention_ms / 3_600_000:g} h" if info.retention_ms else "-"
        table.add_row(info.name, str(info.partitions), hours,
                      " ".join(map(str, info.end_offsets)), str(info.messages))
    console.print(table)
    if missing:
        _echo(f"missing: {', '.join(missing)} (run `streamflow topics create`)")
        raise typer.Exit(1)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the schema migrations (idempotent)."""
    from streamflow.db import migrate

    before, after = migrate.upgrade(endpoints.database_url(_settings()))
    _echo(f"schema at revision {after}" + ("" if before == after else f" (was {before})"))


@lifecycle_app.command("run")
def lifecycle_run() -> None:
    """One lifecycle pass now (Dagster's lifecycle schedule runs it on its own): partitions
    made ahead, closed periods archived, periods past retention verified and dropped."""
    from streamflow import lifecycle

    settings = _settings()
    report = lifecycle.run_configured(settings, endpoints.database_url(settings), echo=_echo)
    _echo(f"lifecycle: {report.count('made')} partitions made, {report.count('archived')} "
          f"periods archived, {report.count('dropped')} dropped, {report.count('busy')} busy, "
          f"{len(report.failures)} failed (archive: {settings.archive_location})")
    for table, rows in report.default_rows.items():
        if rows:
            _echo(f"warning: {table}'s default partition had caught {rows} rows (no period "
                  "partition was made for them in time: is the lifecycle schedule running?)")
    if report.failures:
        raise typer.Exit(1)


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (for psql, dbt or scripts)."""
    sys.stdout.write(endpoints.database_url(_settings()) + "\n")


@dagster_app.command("prepare")
def dagster_prepare(
    storage: str | None = typer.Option(
        None, "--storage", help="sqlite or postgres. Default: STREAMFLOW_DAGSTER_STORAGE."),
    code_host: str = typer.Option(
        "127.0.0.1", "--code-host",
        help="Host of the Dagster code server (its service name in docker-compose)."),
) -> None:
    """Write DAGSTER_HOME's dagster.yaml and workspace.yaml as `streamflow up` does, then
    create or migrate the instance's storage (docker-compose's `migrate` service runs this)."""
    from streamflow import supervisor

    settings = _settings() if storage is None else load_settings(
        STREAMFLOW_DAGSTER_STORAGE=storage)
    supervisor.prepare_dagster_instance(settings, endpoints.database_url(settings),
                                        echo=_echo, code_host=code_host)
    _echo(f"Dagster instance ({settings.dagster_storage}) in {settings.dagster_home_dir}")


@dbt_app.command("prepare")
def dbt_prepare(force: bool = typer.Option(False, "--force", help="Parse even if fresh.")) -> None:
    """Write the dbt manifest the Dagster definitions load (`dbt parse`, no database), when the
    project changed since the last one."""
    from streamflow import dbt_env

    parsed = dbt_env.prepare_manifest(force=force)
    _echo(f"dbt manifest {'written' if parsed else 'up to date'}: {dbt_env.manifest_path()}")


def main() -> None:
    """Entry point: StreamFlow's own errors end in one line on stderr and exit code 1."""
    try:
        app()
    except StreamFlowError as exc:
        # One line, never wrapped: scripts and tests grep it.
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
