"""Table definitions: the one home of every schema, table and column name StreamFlow writes.

Migrations create these tables; writers, assets and dbt sources refer to them through here.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

from streamflow.topics import UNKNOWN_TOPIC_ID

RAW_SCHEMA = "raw"          # landing: what the sink wrote, as it arrived
OUTPUT_SCHEMA = "streamflow"  # micro-batch outputs built by Dagster

metadata = MetaData()

# raw.events.ingest_seq's own sequence (0001), the column's server default: the database
# numbers the rows, the sink never sends the column.
events_ingest_seq = Sequence("events_ingest_seq", schema=RAW_SCHEMA, metadata=metadata,
                             data_type=BigInteger)

# Serialises every statement that allocates raw.events.ingest_seq (the sink's landing
# INSERT, a quarantined event's retry) across sessions, so the sequence is commit-ordered and
# Dagster's watermark never skips a row (docs/ARCHITECTURE.md).
INGEST_SEQ_LOCK = 0x5F5F_0002

# Held shared by each micro-batch transaction that reads raw.events or writes
# streamflow.notifications or raw.dead_letters; taken alone by the lifecycle for the moment it
# detaches a period, so that no long transaction holds the table it must lock alone
# (streamflow.lifecycle; docs/ARCHITECTURE.md, "Storage over time").
LIFECYCLE_LOCK = 0x5F5F_0003

events = Table(
    "events",
    metadata,
    # Unique within each time partition (streamflow.db.partitions); across the hot horizon
    # the sink's landing makes it so (streamflow.db.landing).
    Column("event_id", UUID(as_uuid=True), nullable=False),
    # Commit-ordered ingest sequence (allocation is serialised by the sink), the watermark
    # Dagster's sensor reads.
    Column("ingest_seq", BigInteger, nullable=False,
           server_default=events_ingest_seq.next_value()),
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
    # The headers byte for byte, [[name, base64 value], ...], where `headers` cannot hold
    # them (not UTF-8, NUL, a repeated name: streamflow.dlq.raw_headers_json); else NULL.
    Column("raw_headers", JSONB),
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
    Index("events_by_ingest_seq", "ingest_seq"),
    # No other index (0001): each one costs the sink ~20% of its landing rate.
    schema=RAW_SCHEMA,
    # By the time a row landed, one partition per STREAMFLOW_PARTITION_INTERVAL (0011).
    postgresql_partition_by="RANGE (ingested_at)",
)
# As 0001 made it: dropping the table drops its sequence (SQLAlchemy has no OWNED BY).
event.listen(events, "after_create", DDL(
    "ALTER SEQUENCE %(schema)s.%(seq)s OWNED BY %(fullname)s.ingest_seq",
    context={"seq": events_ingest_seq.name}))

# raw.dead_letters.id's sequence (0001's bigserial).
dead_letters_id_seq = Sequence("dead_letters_id_seq", schema=RAW_SCHEMA, metadata=metadata,
                               data_type=BigInteger)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", BigInteger, nullable=False,  # unique per partition: its own sequence
           server_default=dead_letters_id_seq.next_value()),
    Column("stage", Text, nullable=False),         # ingest | contract
    Column("reason_code", Text, nullable=False),   # small documented set, see streamflow.dlq
    Column("reason", Text, nullable=False),        # human-readable detail
    # Stage contract: each failure as {column, check, expected, got} (contract.Failure); NULL
    # for other stages and for letters written before migration 0008.
    Column("failures", JSONB),
    Column("payload", LargeBinary),                # the original bytes, untouched
    Column("message_key", LargeBinary),
    Column("headers", JSONB),
    Column("raw_headers", JSONB),  # as raw.events.raw_headers: every byte of the headers
    Column("event_id", Text),
    Column("source_topic", Text, nullable=False),
    Column("source_topic_id", UUID(as_uuid=False), nullable=False,
           server_default=UNKNOWN_TOPIC_ID),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("replay_count", Integer, nullable=False, server_default="0"),
    Column("last_replayed_at", DateTime(timezone=True)),
    # A replayed batch must not dead-letter the same source message twice (0006): unique per
    # partition (streamflow.db.partitions), across the hot horizon by the writer's NOT EXISTS.
    Index("dead_letters_by_created_at", "created_at"),  # `streamflow dlq list/stats`
    schema=RAW_SCHEMA,
    postgresql_partition_by="RANGE (created_at)",  # 0011
)
event.listen(dead_letters, "after_create", DDL(
    "ALTER SEQUENCE %(schema)s.%(seq)s OWNED BY %(fullname)s.id",
    context={"seq": dead_letters_id_seq.name}))
# The sink's "was this event rejected by the contract?" when it arrives again (0003).
Index("dead_letters_by_contract_event_id", func.lower(dead_letters.c.event_id),
      postgresql_where=dead_letters.c.stage == "contract")
# The columns that name a dead letter's source message (unique per stage, see above).
DEAD_LETTER_SOURCE = ("stage", "source_topic", "source_topic_id", "source_partition",
                      "source_offset")

consumer_offsets = Table(
    "consumer_offsets",
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("topic", Text, primary_key=True),
    Column("kafka_partition", Integer, primary_key=True),
    # The offset to resume from; NULL: claimed, nothing landed yet (read from the beginning).
    Column("next_offset", BigInteger),
    Column("topic_id", UUID(as_uuid=False)),  # the incarnation these offsets belong to
    # Raised by each sink assigned the partition; only its holder stores offsets (0010;
    # docs/ARCHITECTURE.md, "Several sinks and the zombie fence").
    Column("owner_epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=RAW_SCHEMA,
)


# What could not be processed after every retry, recorded instead of stopping a worker or a
# run (0009; docs/ARCHITECTURE.md, "Quarantine"): streamflow.db.quarantine.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),    # streamflow.db.quarantine.Kind
    Column("stage", Text, nullable=False),   # ingest | contract (streamflow.dlq.Stage)
    Column("reason", Text, nullable=False),  # the error, as Kafka or the step raised it
    Column("source_topic", Text, nullable=False),
    Column("source_topic_id", UUID(as_uuid=False), nullable=False,
           server_default=UNKNOWN_TOPIC_ID),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("event_id", Text),
    Column("ingest_seq", BigInteger),  # kind event: where it landed
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True)),  # NULL: still needs someone to look
    UniqueConstraint("kind", "stage", "source_topic", "source_topic_id", "source_partition",
                     "source_offset", name="quarantine_source_key"),
    schema=RAW_SCHEMA,
)
# The asset check and `streamflow status`: what is still unresolved.
Index("quarantine_unresolved_idx", quarantine.c.created_at,
      postgresql_where=quarantine.c.resolved_at.is_(None))


class LandingRow(NamedTuple):
    """A row the sink writes to raw.events, in COPY order (ingest_seq and ingested_at are the
    database's): the contract's fields in its order (None: missing or of the wrong type), then
    what the message was and where it came from. A tuple, so COPY writes it as it is."""

    event_id: str
    schema_version: int | None
    event_type: str | None
    user_id: str | None
    email_hash: str | None
    email_masked: str | None
    occurred_at: datetime | None
    country: str | None
    device: str | None
    success: bool | None
    amount_cents: int | None
    payload: str                # the message's text, verbatim
    message_key: bytes | None   # as COPY takes it (streamflow.db.landing.key_for_copy)
    headers: str | None         # JSON text; None: the message had none
    raw_headers: str | None     # JSON text; None: ``headers`` holds them exactly
    mistyped: bool
    kafka_topic: str
    kafka_topic_id: str
    kafka_partition: int
    kafka_offset: int


LANDING_COLUMNS = LandingRow._fields

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
    # Times the range was taken to work on (a taker that failed or died counts), and why the
    # last failure: a range taken again after one is split (streamflow.microbatch.claims).
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    CheckConstraint("upto_seq > after_seq", name="step_claims_check"),
    schema=OUTPUT_SCHEMA,
)

notifications = Table(
    "notifications",
    metadata,
    Column("event_id", UUID(as_uuid=True), nullable=False),  # unique as raw.events'
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
    Index("notifications_by_occurred_at", "occurred_at"),
    Index("notifications_by_ingest_seq", "ingest_seq"),  # windows read by ingest_seq range
    schema=OUTPUT_SCHEMA,
    postgresql_partition_by="RANGE (validated_at)",  # 0011
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
# The windows still to publish, asked for by every micro-batch run (0004).
Index("event_windows_unpublished_idx", event_windows.c.window_end,
      postgresql_where=event_windows.c.published_revision < event_windows.c.revision)

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

# The periods the lifecycle dropped after archiving and verifying them (0012,
# streamflow.lifecycle): the windows step does not recount a window older than the last one.
dropped_periods = Table(
    "dropped_periods",
    metadata,
    Column("table_name", Text, primary_key=True),  # schema.table
    Column("period_start", DateTime(timezone=True), primary_key=True),
    Column("period_end", DateTime(timezone=True), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("checksum", Numeric, nullable=False),  # streamflow.archive.checksum, as verified
    Column("dropped_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    schema=OUTPUT_SCHEMA,
)

# -- dbt's marts (dbt_project/models/marts), built by dbt, partitioned and archived by
# StreamFlow: declared apart, as dbt creates them (not the migrations) ---------------------

DBT_MARTS_SCHEMA = "marts"
dbt_metadata = MetaData()

# One row per validated event (dbt_project/models/marts/fct_events.sql); partitioned by
# validated_at, like streamflow.notifications, by the model's post-hook (partition_by_time).
fct_events = Table(
    "fct_events",
    dbt_metadata,
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("ingest_seq", BigInteger, nullable=False),
    Column("user_id", Text),
    Column("email_hash", Text),
    Column("event_type", Text),
    Column("country", Text),
    Column("device", Text),
    Column("success", Boolean),
    Column("amount_cents", BigInteger),
    Column("occurred_at", DateTime(timezone=True)),
    Column("occurred_hour", DateTime(timezone=True)),
    Column("occurred_date", Date),
    Column("validated_at", DateTime(timezone=True)),
    schema=DBT_MARTS_SCHEMA,
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
