"""Every StreamFlow setting, read from the environment in one place.

Nothing else in the code base reads ``os.environ``: workers, the CLI, Dagster resources and
docker-compose all use the names declared here. Settings are read when ``load_settings()`` is
called, never at import time, so tests can change the environment freely.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamflow.errors import SettingsError
from streamflow.kafka_connection import KafkaConnection, security_properties

Port = int  # validated by _valid_port below

# Ports between one embedded Kafka node and the next (its listener, its controller).
KAFKA_PORT_STRIDE = 2
LOCALHOST = "127.0.0.1"


class Settings(BaseSettings):
    """The frozen, validated configuration of one StreamFlow process."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        env_file=".env",
        env_file_encoding="utf-8",
        # An empty variable is an unset one: compose's `${KAFKA_SASL_USERNAME:-}` passes ""
        # for what a user left out, and `DATABASE_URL=` in .env means the embedded server.
        env_ignore_empty=True,
    )

    # -- where things live -------------------------------------------------------------
    home: Path = Field(Path(".streamflow"), alias="STREAMFLOW_HOME")
    dagster_home: Path | None = Field(None, alias="DAGSTER_HOME")

    # -- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(None, alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_port: Port = Field(9092, alias="STREAMFLOW_KAFKA_PORT")
    kafka_controller_port: Port = Field(9093, alias="STREAMFLOW_KAFKA_CONTROLLER_PORT")
    # Nodes of the embedded KRaft cluster (each broker and controller). Node i listens on
    # STREAMFLOW_KAFKA_PORT + 2 (i - 1), its controller on STREAMFLOW_KAFKA_CONTROLLER_PORT +
    # 2 (i - 1): 9092/9093, 9094/9095, 9096/9097 by default.
    kafka_brokers: int = Field(1, ge=1, le=9, alias="STREAMFLOW_KAFKA_BROKERS")
    # Heap of each embedded broker. 512 MB suits one broker on a 2-core development machine
    # (Kafka's default is 1 GB); three get 384 MB each unless this is set (~390 MB RSS each).
    kafka_heap_mb: int | None = Field(None, ge=128, le=65536, alias="STREAMFLOW_KAFKA_HEAP_MB")
    # Seconds to wait for the broker to answer metadata after start.
    kafka_start_timeout_s: float = Field(90.0, gt=0, alias="STREAMFLOW_KAFKA_START_TIMEOUT")
    # How consumers join their group: "classic" (the client assigns, cooperative-sticky, 10 s
    # session) or "consumer", Kafka 4's protocol (KIP-848: the broker assigns and times out;
    # kafka_clients.GROUP_PROTOCOLS).
    kafka_group_protocol: Literal["classic", "consumer"] = Field(
        "classic", alias="STREAMFLOW_KAFKA_GROUP_PROTOCOL")
    java: str = Field("java", alias="STREAMFLOW_JAVA")
    mvn: str = Field("mvn", alias="STREAMFLOW_MVN")

    # -- Kafka security (a managed or secured cluster; README "Deploying") ----------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(None, alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, alias="KAFKA_SASL_PASSWORD")
    # PEM files: the CA that signed the brokers' certificates, and a client certificate (mTLS).
    kafka_ssl_ca_location: Path | None = Field(None, alias="KAFKA_SSL_CA_LOCATION")
    kafka_ssl_certificate_location: Path | None = Field(
        None, alias="KAFKA_SSL_CERTIFICATE_LOCATION")
    kafka_ssl_key_location: Path | None = Field(None, alias="KAFKA_SSL_KEY_LOCATION")
    kafka_ssl_key_password: SecretStr | None = Field(None, alias="KAFKA_SSL_KEY_PASSWORD")
    # Any other librdkafka property as a JSON object (secret: it may hold OAuth credentials).
    kafka_client_properties: SecretStr | None = Field(None, alias="KAFKA_CLIENT_PROPERTIES")

    # -- topics ----------------------------------------------------------------------------
    user_events_partitions: int = Field(
        3, ge=1, le=1000, alias="STREAMFLOW_USER_EVENTS_PARTITIONS")
    user_events_retention_hours: int = Field(
        168, ge=1, alias="STREAMFLOW_USER_EVENTS_RETENTION_HOURS")
    # analytics, notifications and dead-letter-topic (the reference gave every topic 3).
    topic_partitions: int = Field(3, ge=1, le=1000, alias="STREAMFLOW_TOPIC_PARTITIONS")
    # Replicas of each pipeline topic, and how many must hold a write before it is
    # acknowledged (acks=all). Unset: 3 and 2 on a cluster of three or more brokers, else
    # the brokers' count and 1 (a cluster's size is read from the cluster itself).
    topic_replication_factor: int | None = Field(
        None, ge=1, le=32, alias="STREAMFLOW_TOPIC_REPLICATION_FACTOR")
    topic_min_insync_replicas: int | None = Field(
        None, ge=1, le=32, alias="STREAMFLOW_TOPIC_MIN_INSYNC_REPLICAS")
    # Comma-separated topics `dlq replay` may send to (unset: user-events alone). A replay
    # sends unvalidated bytes, so the pipeline's output topics are refused here.
    replay_topics: str | None = Field(None, alias="STREAMFLOW_REPLAY_TOPICS")

    # -- PostgreSQL ------------------------------------------------------------------------
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")

    # -- storage over time (docs/ARCHITECTURE.md, "Storage over time") ----------------------
    # raw.events, raw.dead_letters, streamflow.notifications: one partition per period, which
    # must divide a day (5m, 1h, 1d ...) or be whole days.
    partition_interval: str = Field("1d", alias="STREAMFLOW_PARTITION_INTERVAL")
    # Periods older than this are archived, verified, then dropped; dead letters are kept
    # longer (someone may still replay them). Like Kafka's user-events retention by default.
    hot_retention: str = Field("7d", alias="STREAMFLOW_HOT_RETENTION")
    dead_letter_retention: str = Field("30d", alias="STREAMFLOW_DEAD_LETTER_RETENTION")
    # Where archived periods go: any fsspec URL (s3://bucket/path with s3fs installed ...);
    # default STREAMFLOW_HOME/archive.
    archive_url: str | None = Field(None, alias="STREAMFLOW_ARCHIVE_URL")
    # Dagster's own storage (assets/retention.py): successful runs of the frequent jobs, and
    # the events no run holds (sensor observations, check executions), are deleted past these.
    dagster_run_retention: str = Field("6h", alias="STREAMFLOW_DAGSTER_RUN_RETENTION")
    dagster_event_retention: str = Field("2d", alias="STREAMFLOW_DAGSTER_EVENT_RETENTION")

    # -- PII -------------------------------------------------------------------------------
    pii_key: SecretStr | None = Field(None, alias="STREAMFLOW_PII_KEY")

    # -- services --------------------------------------------------------------------------
    dagster_port: Port = Field(3000, alias="STREAMFLOW_DAGSTER_PORT")
    # The code server the webserver and daemon share (gRPC, local only).
    dagster_code_port: Port = Field(4000, alias="STREAMFLOW_DAGSTER_CODE_PORT")
    # Dagster's run/event storage: SQLite under DAGSTER_HOME, or the PostgreSQL of DATABASE_URL.
    dagster_storage: Literal["sqlite", "postgres"] = Field(
        "sqlite", alias="STREAMFLOW_DAGSTER_STORAGE")
    # Sink processes the local stack's supervisor runs in the db-sink group (compose's sink
    # replicas too): one per partition of user-events at most helps, more sit idle.
    sink_processes: int = Field(1, ge=1, le=64, alias="STREAMFLOW_SINK_PROCESSES")
    # Events per second of the local stack's demo producer (`make soak` raises it).
    demo_rate: float = Field(50.0, gt=0, le=1_000_000, alias="STREAMFLOW_DEMO_RATE")
    live_port: Port = Field(3001, alias="STREAMFLOW_LIVE_PORT")
    live_token: SecretStr | None = Field(None, alias="STREAMFLOW_LIVE_TOKEN")
    # Comma-separated Origins (scheme://host[:port]) allowed besides the live view's own.
    live_allowed_origins: str | None = Field(None, alias="STREAMFLOW_LIVE_ALLOWED_ORIGINS")
    # First Prometheus port; each worker takes the next free one from here.
    metrics_port: Port = Field(9400, alias="STREAMFLOW_METRICS_PORT")
    # The address workers serve /metrics on: 0.0.0.0 lets a scraper in another container in.
    metrics_host: str = Field(LOCALHOST, alias="STREAMFLOW_METRICS_HOST")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="STREAMFLOW_LOG_LEVEL"
    )
    # text for people, json (one object per line) for a log collector.
    log_format: Literal["text", "json"] = Field("text", alias="STREAMFLOW_LOG_FORMAT")
    # Local stack logs (STREAMFLOW_HOME/logs/*.log): rotated past this size in MiB, keeping
    # this many older copies. 20 MiB x (3 + 1) x the 8 logs of `up` caps them near 640 MiB.
    log_max_mb: int = Field(20, ge=1, le=10_240, alias="STREAMFLOW_LOG_MAX_MB")
    log_backups: int = Field(3, ge=0, le=100, alias="STREAMFLOW_LOG_BACKUPS")

    @field_validator("kafka_port", "kafka_controller_port", "dagster_port",
                     "dagster_code_port", "live_port", "metrics_port")
    @classmethod
    def _valid_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port (1-65535)")
        return value

    @field_validator("partition_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        from streamflow.db.partitions import parse_interval  # pure; imports no settings

        try:
            parse_interval(value)
        except SettingsError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value

    @field_validator("hot_retention", "dead_letter_retention", "dagster_run_retention",
                     "dagster_event_retention")
    @classmethod
    def _duration(cls, value: str) -> str:
        from streamflow.db.partitions import parse_duration

        try:
            parse_duration(value, "")
        except SettingsError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgresql://", "postgres://", "postgresql+psycopg://")
        ):
            raise ValueError("must be a postgresql:// URL")
        if value is not None:
            from sqlalchemy.engine import make_url  # only when DATABASE_URL is set
            from sqlalchemy.exc import ArgumentError

            try:  # a URL that does not parse would fail later, at each connection
                make_url(value.get_secret_value())
            except (ValueError, ArgumentError) as exc:  # names the bad part, not the password
                raise ValueError(f"not a valid URL ({exc})") from None
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @field_validator("replay_topics")
    @classmethod
    def _replay_targets(cls, value: str | None) -> str | None:
        from streamflow import topics  # topics imports this module

        names = _names(value)
        if value is not None and not names:
            raise ValueError("names no topic (comma-separated topic names)")
        outputs = sorted(set(names) & set(topics.PIPELINE_TOPICS) - {topics.USER_EVENTS})
        if outputs:
            raise ValueError(f"{', '.join(outputs)}: the pipeline's output topics carry "
                             "validated data only, a replay may never send to them")
        return value

    @model_validator(mode="after")
    def _kafka_nodes_fit(self) -> Settings:
        top = max(max(pair) for pair in self.kafka_node_ports)
        if top > 65535:
            raise ValueError(f"STREAMFLOW_KAFKA_BROKERS={self.kafka_brokers} needs ports up to "
                             f"{top}: lower STREAMFLOW_KAFKA_PORT / _CONTROLLER_PORT")
        listeners = {p for p, _ in self.kafka_node_ports}
        if listeners & {c for _, c in self.kafka_node_ports}:
            raise ValueError("STREAMFLOW_KAFKA_PORT and STREAMFLOW_KAFKA_CONTROLLER_PORT give "
                             "two nodes the same port (node i uses each + 2 (i - 1))")
        return self

    @model_validator(mode="after")
    def _replication_consistent(self) -> Settings:
        rf, isr = self.topic_replication_factor, self.topic_min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"STREAMFLOW_TOPIC_MIN_INSYNC_REPLICAS={isr} exceeds "
                             f"STREAMFLOW_TOPIC_REPLICATION_FACTOR={rf}: no write could succeed")
        if self.embedded_kafka and rf is not None and rf > self.kafka_brokers:
            raise ValueError(f"STREAMFLOW_TOPIC_REPLICATION_FACTOR={rf} exceeds the embedded "
                             f"cluster's STREAMFLOW_KAFKA_BROKERS={self.kafka_brokers}")
        return self

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Settings:
        self.kafka  # noqa: B018 - raises ValueError naming what is inconsistent
        return self

    # -- derived facts (one place for each) ------------------------------------------------
    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def kafka_node_ports(self) -> list[tuple[int, int]]:
        """(listener, controller) port of each embedded node, node 1 first."""
        return [(self.kafka_port + KAFKA_PORT_STRIDE * i,
                 self.kafka_controller_port + KAFKA_PORT_STRIDE * i)
                for i in range(self.kafka_brokers)]

    @property
    def embedded_kafka_heap_mb(self) -> int:
        if self.kafka_heap_mb is not None:
            return self.kafka_heap_mb
        return 512 if self.kafka_brokers == 1 else 384

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or ",".join(
            f"{LOCALHOST}:{port}" for port, _ in self.kafka_node_ports)

    @cached_property
    def kafka(self) -> KafkaConnection:
        """Every Kafka client's connection: the bootstrap servers plus security."""
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return KafkaConnection(self.bootstrap_servers, security_properties(
            protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=secret(self.kafka_sasl_password),
            ssl_ca_location=self.kafka_ssl_ca_location,
            ssl_certificate_location=self.kafka_ssl_certificate_location,
            ssl_key_location=self.kafka_ssl_key_location,
            ssl_key_password=secret(self.kafka_ssl_key_password),
            client_properties=secret(self.kafka_client_properties)))

    @property
    def replay_topic_names(self) -> tuple[str, ...]:
        """The topics a dead-letter replay may send to (docs/ARCHITECTURE.md, delivery
        guarantees)."""
        from streamflow import topics  # topics imports this module

        return _names(self.replay_topics) or (topics.USER_EVENTS,)

    @property
    def partition_period(self) -> timedelta:
        from streamflow.db.partitions import parse_interval

        return parse_interval(self.partition_interval)

    def retention(self, *, dead_letters: bool = False) -> timedelta:
        """How long rows stay hot: dead letters' own retention, or every other table's."""
        from streamflow.db.partitions import parse_duration

        if dead_letters:
            return parse_duration(self.dead_letter_retention, "STREAMFLOW_DEAD_LETTER_RETENTION")
        return parse_duration(self.hot_retention, "STREAMFLOW_HOT_RETENTION")

    def dagster_retention(self, *, events: bool = False) -> timedelta:
        """How long Dagster keeps successful runs, or runless events and check executions."""
        from streamflow.db.partitions import parse_duration

        if events:
            return parse_duration(self.dagster_event_retention,
                                  "STREAMFLOW_DAGSTER_EVENT_RETENTION")
        return parse_duration(self.dagster_run_retention, "STREAMFLOW_DAGSTER_RUN_RETENTION")

    @property
    def archive_location(self) -> str:
        return self.archive_url or str(self.home_dir / "archive")

    @property
    def logs_dir(self) -> Path:
        return self.home_dir / "logs"

    @property
    def log_max_bytes(self) -> int:
        return self.log_max_mb * 1024 * 1024

    @property
    def run_dir(self) -> Path:
        return self.home_dir / "run"

    @property
    def kafka_dir(self) -> Path:
        return self.home_dir / "kafka"

    @property
    def postgres_dir(self) -> Path:
        return self.home_dir / "postgres"

    @property
    def dagster_home_dir(self) -> Path:
        return (self.dagster_home or self.home_dir / "dagster").expanduser().resolve()


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(name.strip() for name in (text or "").split(",") if name.strip())


def to_env(settings: Settings) -> dict[str, str]:
    """The settings as environment variables, for child processes (same values, same names)."""
    env = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None or field.alias is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[field.alias] = str(value)
    env["STREAMFLOW_HOME"] = str(settings.home_dir)
    return env


def env_var_names() -> frozenset[str]:
    """Every environment variable StreamFlow reads (docker-compose is checked against this)."""
    return frozenset(field.alias for field in Settings.model_fields.values() if field.alias)


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and ``.env``); a bad value raises a one-line ``SettingsError``."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a rule across settings: its message names them (no values)
            raise SettingsError(str(first["msg"]).removeprefix("Value error, ")) from None
        field = first["loc"][0]
        by_alias = {f.alias: f for f in Settings.model_fields.values() if f.alias}
        spec = Settings.model_fields.get(field) or by_alias.get(field)
        alias = spec.alias if spec is not None and spec.alias else field
        secret = spec is not None and "SecretStr" in str(spec.annotation)
        shown = "<redacted>" if secret else repr(first.get("input"))
        # `from None`: the validation error's own text repeats the input, secrets included.
        raise SettingsError(f"{alias}={shown}: {first['msg']}") from None
