"""The `streamflow` command line."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from streamflow import endpoints, stack, topics
from streamflow.errors import StreamFlowError
from streamflow.settings import Settings, load_settings

app = typer.Typer(help="StreamFlow: Kafka -> PostgreSQL -> Dagster event platform.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
kafka_app = typer.Typer(help="The embedded Kafka broker.", no_args_is_help=True)
topics_app = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")

console = Console()


def _settings() -> Settings:
    return load_settings()


def _echo(message: str) -> None:
    console.print(message, highlight=False, markup=False)


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@app.command()
def up() -> None:
    """Start Kafka, PostgreSQL, migrations and topics (each only if not already running)."""
    settings = _settings()
    stack.up(settings, echo=_echo)
    _print_status(stack.status(settings))
    _echo(f"Kafka bootstrap: {settings.bootstrap_servers}")


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
        table.add_row(c.component, str(c.pid or "-"), _redact(c.address),
                      "yes" if c.healthy else "NO", c.detail)
    console.print(table)


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Copy the Kafka jars under STREAMFLOW_HOME with Maven (once; offline afterwards)."""
    from streamflow.infra import kafka_server

    path = kafka_server.fetch(_settings(), echo=_echo)
    _echo(f"Kafka {kafka_server.kafka_version()} jars in {path}")


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics; report existing ones with the wrong partition count."""
    from streamflow.kafka_clients import admin_client, require_broker

    settings = _settings()
    require_broker(settings.bootstrap_servers)
    for s in topics.ensure_topics(admin_client(settings.bootstrap_servers),
                                  topics.topic_specs(settings),
                                  replication_factor=settings.topic_replication_factor):
        _echo(f"{s.name}: {s.outcome}")


@topics_app.command("list")
def topics_list() -> None:
    """Partitions, retention and end offsets of the pipeline's topics."""
    from streamflow.kafka_clients import admin_client, consumer, require_broker

    settings = _settings()
    require_broker(settings.bootstrap_servers)
    names = [spec.name for spec in topics.topic_specs(settings)]
    probe = consumer(settings.bootstrap_servers, "streamflow-cli")
    try:
        infos = topics.describe_topics(admin_client(settings.bootstrap_servers), probe, names)
    finally:
        probe.close()
    table = Table("topic", "partitions", "retention", "end offsets", "messages")
    for info in infos:
        hours = f"{info.retention_ms / 3_600_000:g} h" if info.retention_ms else "-"
        table.add_row(info.name, str(info.partitions), hours,
                      " ".join(map(str, info.end_offsets)), str(info.messages))
    console.print(table)
    missing = sorted(set(names) - {i.name for i in infos})
    if missing:
        _echo(f"missing: {', '.join(missing)} (run `streamflow topics create`)")
        raise typer.Exit(1)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply the schema migrations (idempotent)."""
    from streamflow.db import migrate

    before, after = migrate.upgrade(endpoints.database_url(_settings()))
    _echo(f"schema at revision {after}" + ("" if before == after else f" (was {before})"))


@db_app.command("url")
def db_url() -> None:
    """Print the database URL (for psql, dbt or scripts)."""
    sys.stdout.write(endpoints.database_url(_settings()) + "\n")


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
