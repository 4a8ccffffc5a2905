"""`streamflow up / down / status`: the local platform as one unit.

``up`` is idempotent: each component is started only when it is not already running and
healthy, so running it twice never starts duplicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from streamflow import endpoints, topics
from streamflow.db import migrate
from streamflow.db.engine import server_version
from streamflow.infra import kafka_server, postgres_server
from streamflow.kafka_clients import admin_client, broker_answers, require_broker
from streamflow.settings import Settings


def up(settings: Settings, *, echo=print) -> None:
    for directory in (settings.home_dir, settings.logs_dir, settings.run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if settings.embedded_kafka:
        kafka_server.fetch(settings, echo=echo)
        kafka_server.start(settings, echo=echo)
    else:
        require_broker(settings.bootstrap_servers)
        echo(f"using Kafka at {settings.bootstrap_servers} (KAFKA_BOOTSTRAP_SERVERS)")
    if settings.embedded_postgres:
        postgres_server.start(settings, echo=echo)
    else:
        echo("using PostgreSQL from DATABASE_URL")
    url = endpoints.database_url(settings)
    before, after = migrate.upgrade(url)
    echo(f"schema at revision {after}" + ("" if before == after else f" (was {before})"))
    statuses = topics.ensure_topics(
        admin_client(settings.bootstrap_servers), topics.topic_specs(settings),
        replication_factor=settings.topic_replication_factor,
    )
    echo("topics: " + ", ".join(f"{s.name} ({s.outcome})" for s in statuses))


def down(settings: Settings, *, echo=print) -> dict[str, str]:
    """Stop what ``up`` started, in reverse order; external services are left alone."""
    report = {}
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


def _kafka_status(settings: Settings) -> ComponentStatus:
    state = kafka_server.running(settings) if settings.embedded_kafka else None
    healthy = broker_answers(settings.bootstrap_servers, timeout_s=2.0)
    detail = "embedded" if settings.embedded_kafka else "external"
    if settings.embedded_kafka and state is None:
        detail = "not running"
    return ComponentStatus("kafka", state.pid if state else None, settings.bootstrap_servers,
                           healthy, detail)


def _postgres_status(settings: Settings) -> ComponentStatus:
    state = postgres_server.running(settings) if settings.embedded_postgres else None
    try:
        url = endpoints.database_url(settings)
        detail = f"PostgreSQL {server_version(url)}"
        healthy = True
    except Exception as exc:  # status reports every failure, it never raises
        url = state.address if state else ""
        detail, healthy = str(exc).splitlines()[0], False
    return ComponentStatus("postgres", state.pid if state else None, url, healthy, detail)


def status(settings: Settings) -> list[ComponentStatus]:
    return [_kafka_status(settings), _postgres_status(settings)]


def status_document(settings: Settings) -> dict:
    """``status --json``: the same table plus the addresses scripts need."""
    components = status(settings)
    by_name = {c.component: c for c in components}
    return {
        "home": str(settings.home_dir),
        "kafka_bootstrap_servers": settings.bootstrap_servers,
        "database_url": by_name["postgres"].address,
        "healthy": all(c.healthy for c in components),
        "components": [asdict(c) for c in components],
    }
