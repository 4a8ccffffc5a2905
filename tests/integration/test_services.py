"""The embedded real services: Kafka 4.x in KRaft mode and PostgreSQL, as the tests see them."""

import uuid

import pytest
from confluent_kafka.admin import NewTopic
from sqlalchemy import text

from streamflow import topics
from streamflow.db import migrate
from streamflow.db.engine import make_engine
from streamflow.errors import TopicMismatch
from streamflow.kafka_clients import admin_client, consumer, producer


def test_server_versions(platform):
    print(f"Kafka {platform.kafka_version}, PostgreSQL {platform.postgres_version}")
    assert platform.kafka_version.startswith("4.")
    assert int(platform.postgres_version.split(".")[0]) >= 14


def test_pipeline_topics_have_their_partitions_and_retention(platform):
    admin = admin_client(platform.kafka)
    probe = consumer(platform.kafka, f"probe-{uuid.uuid4()}")
    try:
        infos = {i.name: i for i in topics.describe_topics(
            admin, probe, [s.name for s in topics.topic_specs(platform.settings)])}
    finally:
        probe.close()
    assert infos[topics.USER_EVENTS].partitions == 3
    assert infos[topics.USER_EVENTS].retention_ms == 168 * 3_600_000
    assert set(infos) == {topics.USER_EVENTS, topics.ANALYTICS, topics.NOTIFICATIONS,
                          topics.DEAD_LETTER}


def test_topic_creation_is_idempotent(platform):
    admin = admin_client(platform.kafka)
    statuses = topics.ensure_topics(admin, topics.topic_specs(platform.settings))
    assert {s.outcome for s in statuses} == {"exists"}


def test_wrong_partition_count_is_reported(platform, unique_name):
    admin = admin_client(platform.kafka)
    admin.create_topics([NewTopic(unique_name, num_partitions=2, replication_factor=1)])[
        unique_name].result(30)
    spec = topics.TopicSpec(unique_name, partitions=3, retention_ms=3_600_000)
    with pytest.raises(TopicMismatch, match="has 2 partitions, expected 3"):
        topics.ensure_topics(admin, [spec])


def test_produce_consume_round_trip(platform, unique_name):
    admin = admin_client(platform.kafka)
    admin.create_topics([NewTopic(unique_name, num_partitions=3, replication_factor=1)])[
        unique_name].result(30)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(50)}
    prod = producer(platform.kafka)
    for key, value in sent.items():
        prod.produce(unique_name, value=value, key=key)
    assert prod.flush(30) == 0
    cons = consumer(platform.kafka, f"g-{unique_name}")
    cons.subscribe([unique_name])
    received = {}
    try:
        for _ in range(60):
            for msg in cons.consume(100, timeout=1.0):
                assert msg.error() is None
                received[msg.key()] = msg.value()
            if len(received) == len(sent):
                break
    finally:
        cons.close()
    assert received == sent


def _schema_snapshot(url: str) -> list[tuple]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT table_schema, table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema IN ('raw', 'streamflow') "
            # time partitions come and go with the clock (streamflow.db.partitions)
            "AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.relispartition AND "
            "c.oid = format('%I.%I', table_schema, table_name)::regclass) "
            "ORDER BY 1, 2, ordinal_position")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_migrations_apply_twice_without_change(platform):
    before = _schema_snapshot(platform.database_url)
    rev_before, rev_after = migrate.upgrade(platform.database_url)
    assert rev_before == rev_after == migrate.head_revision()
    assert _schema_snapshot(platform.database_url) == before


def test_raw_events_has_the_landing_columns(platform):
    columns = {r[2]: r[3] for r in _schema_snapshot(platform.database_url)
               if r[:2] == ("raw", "events")}
    assert columns["event_id"] == "uuid"
    assert columns["ingest_seq"] == "bigint"
    assert columns["payload"] == "json"  # verbatim text: the original bytes of the message
    assert (columns["message_key"], columns["headers"]) == ("bytea", "jsonb")
    assert columns["kafka_topic_id"] == "uuid"
    for name in ("kafka_partition", "kafka_offset", "ingested_at", "event_type", "user_id",
                 "email_hash", "occurred_at", "amount_cents", "mistyped"):
        assert name in columns
    tables = {r[:2] for r in _schema_snapshot(platform.database_url)}
    assert ("raw", "dead_letters") in tables and ("raw", "consumer_offsets") in tables


# One line per relation, column, constraint, index and sequence of StreamFlow's schemas, as
# PostgreSQL itself renders them (format_type, pg_get_expr, pg_get_constraintdef,
# pg_get_indexdef): two databases built differently compare without a type-name map.
# Triggers (0005) are not here: streamflow.db.tables does not declare them.
_CATALOG = (
    """SELECT format('%s.%s %s', n.nspname, c.relname, c.relkind) FROM pg_class c
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
         AND NOT c.relispartition""",
    """SELECT format('%s.%s partitioned by %s', n.nspname, c.relname, pg_get_partkeydef(c.oid))
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY(:schemas) AND c.relkind = 'p'""",
    """SELECT format('%s.%s column %s %s%s%s', n.nspname, c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                  ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid))
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON (d.adrelid, d.adnum) = (a.attrelid, a.attnum)
       WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         AND a.attnum > 0 AND NOT a.attisdropped""",
    """SELECT format('%s.%s constraint %s %s', n.nspname, c.relname, k.conname,
                  pg_get_constraintdef(k.oid))
       FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = ANY(:schemas) AND NOT c.relispartition""",
    """SELECT format('%s.%s index %s', i.schemaname, i.tablename, i.indexdef)
       FROM pg_indexes i JOIN pg_class c ON c.oid = format('%I.%I', i.schemaname,
                                                          i.tablename)::regclass
       WHERE i.schemaname = ANY(:schemas) AND NOT c.relispartition""",
    """SELECT format('sequence %s.%s %s start %s increment %s cycle %s owned by %s',
                  s.schemaname, s.sequencename, s.data_type, s.start_value, s.increment_by,
                  s.cycle, coalesce((
                      SELECT d.refobjid::regclass || '.' || a.attname FROM pg_depend d
                      JOIN pg_attribute a ON (a.attrelid, a.attnum) = (d.refobjid, d.refobjsubid)
                      WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                        AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass),
                  'nobody'))
       FROM pg_sequences s WHERE s.schemaname = ANY(:schemas)""",
)


def _catalog(url: str) -> set[str]:
    from streamflow.db.tables import OUTPUT_SCHEMA, RAW_SCHEMA

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {line for query in _CATALOG for (line,) in conn.execute(
                text(query), {"schemas": [RAW_SCHEMA, OUTPUT_SCHEMA]})}
    finally:
        engine.dispose()


def test_the_migrated_schema_matches_the_table_definitions(platform, fresh_database):
    """streamflow.db.tables is the one home of the schema: the migrated database and one
    built from the table definitions alone must have the same tables, column types,
    nullability and defaults, keys, constraints, indexes (with their expressions and
    predicates), partitioning and sequences. (Time partitions are streamflow.db.partitions'
    and tested there.)"""
    from sqlalchemy.schema import CreateSchema

    from streamflow.db.tables import OUTPUT_SCHEMA, RAW_SCHEMA, metadata

    engine = make_engine(fresh_database)
    with engine.begin() as conn:
        for schema in (RAW_SCHEMA, OUTPUT_SCHEMA):
            conn.execute(CreateSchema(schema))
        metadata.create_all(conn)
    engine.dispose()
    migrated, declared = _catalog(platform.database_url), _catalog(fresh_database)
    assert {f"{t.schema}.{t.name} {'p' if t.dialect_options['postgresql']['partition_by'] else 'r'}"
            for t in metadata.tables.values()} <= declared
    assert migrated == declared, "\n".join([
        "the migrations and streamflow.db.tables disagree;", "only in the migrated database:",
        *sorted(migrated - declared), "only in streamflow.db.tables:",
        *sorted(declared - migrated)])


def test_the_session_postgres_is_recognised_from_its_pid_file(platform):
    from streamflow.infra.postgres_server import _pgdata, postmaster_of

    proc = postmaster_of(_pgdata(platform.settings))
    assert proc is not None and proc.is_running()


def test_dagster_postgres_storage_shares_the_database(fresh_database):
    """Both keep an Alembic version: StreamFlow's in its own table, Dagster's in
    public.alembic_version. Sharing one table, each found the other's revision there."""
    from dagster_postgres import DagsterPostgresStorage

    def dagster_storage() -> None:  # creates (or checks) and stamps Dagster's schema
        storage = DagsterPostgresStorage(url)
        for part in (storage.run_storage, storage.event_log_storage, storage.schedule_storage):
            part.dispose()

    url = fresh_database
    assert migrate.upgrade(url)[1] == migrate.head_revision()
    dagster_storage()
    assert migrate.upgrade(url) == (migrate.head_revision(), migrate.head_revision())
    dagster_storage()  # a restart of the Dagster side still works


def test_a_database_migrated_before_the_own_version_table_is_adopted(fresh_database):
    url = fresh_database
    migrate.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:  # as it was: StreamFlow's revision in public.alembic_version
        conn.execute(text(f"DROP TABLE public.{migrate.VERSION_TABLE}"))
        conn.execute(text("CREATE TABLE public.alembic_version (version_num varchar(32) "
                          "NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"))
        conn.execute(text("INSERT INTO public.alembic_version VALUES (:v)"),
                     {"v": migrate.head_revision()})
    assert migrate.upgrade(url) == (migrate.head_revision(), migrate.head_revision())
    with engine.connect() as conn:
        left = conn.execute(text("SELECT to_regclass('public.alembic_version')")).scalar_one()
    engine.dispose()
    assert left is None  # public.alembic_version is Dagster's again
