"""Table definitions: the one home of every schema, table and column name StreamFlow writes.

Migrations create these tables; writers, assets and dbt sources refer to them through here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

from streamflow import contract
from streamflow.topics import UNKNOWN_TOPIC_ID

RAW_SCHEMA = "raw"          # landing: what the sink wrote, as it arrived
OUTPUT_SCHEMA = "streamflow"  # micro-batch outputs built by Dagster

metadata = MetaData()

events = Table(
    "events",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    # Commit-ordered ingest sequence (allocation is serialised by the sink), the watermark
    # Dagster's sensor reads.
    Column("ingest_seq", BigInteger, nullable=False, unique=True),
    # Typed contract columns: NULL when the payload lacks the field or has the wrong type;
    # the Dagster contract check judges those rows from `payload`.
    Column("schema_version", Integer),
    Column("event_type", Text),
    Column("user_id", Text),
    Column("email_hash", Text),
    Column("email_masked", Text),
    Column("occurred_at", DateTime(timezone=True)),
    Column("country", Text),
    Column("device", Text),
    Column("success", Boolean),
    Column("amount_cents", BigInteger),
    # The message as it arrived: json keeps the text verbatim (jsonb would re-render it), so
    # a dead letter or a replay of this event carries the original bytes, key and headers.
    Column("payload", JSON, nullable=False),
    Column("message_key", LargeBinary),
    Column("headers", JSONB),  # header values as text; NULL: the message had none
    # The payload holds a field its typed column could not hold (NULL: landed before the
    # sink recorded this; unknown): the contract step re-reads only these payloads.
    Column("mistyped", Boolean),
    Column("kafka_topic", Text, nullable=False),
    # The topic's id (Kafka 4): a topic deleted and created again is a new incarnation whose
    # offsets restart at 0 (nil UUID: not recorded).
    Column("kafka_topic_id", UUID(as_uuid=False), nullable=False,
           server_default=UNKNOWN_TOPIC_ID),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=RAW_SCHEMA,
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("stage", Text, nullable=False),         # ingest | contract
    Column("reason_code", Text, nullable=False),   # small documented set, see streamflow.dlq
    Column("reason", Text, nullable=False),        # human-readable detail
    Column("payload", LargeBinary),                # the original bytes, untouched
    Column("message_key", LargeBinary),
    Column("headers", JSONB),
    Column("event_id", Text),
    Column("source_topic", Text, nullable=False),
    Column("source_topic_id", UUID(as_uuid=False), nullable=False,
           server_default=UNKNOWN_TOPIC_ID),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("replay_count", Integer, nullable=False, server_default="0"),
    Column("last_replayed_at", DateTime(timezone=True)),
    schema=RAW_SCHEMA,
)

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("kafka_partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),  # the offset to resume from
    Column("topic_id", UUID(as_uuid=False)),  # the incarnation these offsets belong to
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=RAW_SCHEMA,
)

# The columns the sink writes, in COPY order (ingest_seq and ingested_at are the database's).
# The contract's fields in its order, then what the message was and where it came from.
LANDING_COLUMNS = (*contract.FIELDS, "payload", "message_key", "headers", "mistyped",
                   "kafka_topic", "kafka_topic_id", "kafka_partition", "kafka_offset")
LANDING_INDEX = {name: i for i, name in enumerate(LANDING_COLUMNS)}

# -- micro-batch outputs (Dagster) -------------------------------------------------------------

watermarks = Table(
    "watermarks",
    metadata,
    Column("name", Text, primary_key=True),       # one per micro-batch asset
    Column("last_seq", BigInteger, nullable=False),  # raw.events.ingest_seq processed up to
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

# Ranges past a step's watermark claimed by concurrent runs (streamflow.microbatch.claims).
step_claims = Table(
    "step_claims",
    metadata,
    Column("step", Text, primary_key=True),
    Column("after_seq", BigInteger, primary_key=True),  # the range (after_seq, upto_seq]
    Column("upto_seq", BigInteger, nullable=False),
    Column("done", Boolean, nullable=False, server_default="false"),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

notifications = Table(
    "notifications",
    metadata,
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("ingest_seq", BigInteger, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("email_hash", Text, nullable=False),
    Column("email_masked", Text, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("country", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("success", Boolean),
    Column("amount_cents", BigInteger),
    Column("validated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

event_windows = Table(
    "event_windows",
    metadata,
    Column("window_start", DateTime(timezone=True), primary_key=True),
    Column("window_end", DateTime(timezone=True), nullable=False),
    Column("event_type", Text, primary_key=True),
    Column("events", Integer, nullable=False),
    Column("distinct_users", Integer, nullable=False),
    Column("login_successes", Integer, nullable=False),
    Column("login_failures", Integer, nullable=False),
    Column("purchase_cents", BigInteger, nullable=False),
    Column("revision", Integer, nullable=False, server_default="1"),
    Column("published_revision", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

# Maintained by a trigger on raw.dead_letters (migration 0005): hours are UTC.
dlq_report = Table(
    "dlq_report",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("stage", Text, primary_key=True),
    Column("reason_code", Text, primary_key=True),
    Column("dead_letters", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

# Per minute: events the contract step checked, passed and rejected (its chunk transactions).
contract_counts = Table(
    "contract_counts",
    metadata,
    Column("minute", DateTime(timezone=True), primary_key=True),
    Column("checked", BigInteger, nullable=False),
    Column("valid", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    schema=OUTPUT_SCHEMA,
)
