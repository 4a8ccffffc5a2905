"""Landing schemas: raw.events, raw.dead_letters, raw.consumer_offsets; empty streamflow schema.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS raw")
    op.execute("CREATE SCHEMA IF NOT EXISTS streamflow")
    op.execute("CREATE SEQUENCE raw.events_ingest_seq AS bigint")
    op.execute(
        """
        CREATE TABLE raw.events (
            event_id        uuid PRIMARY KEY,
            ingest_seq      bigint NOT NULL UNIQUE DEFAULT nextval('raw.events_ingest_seq'),
            schema_version  integer,
            event_type      text,
            user_id         text,
            email_hash      text,
            email_masked    text,
            occurred_at     timestamptz,
            country         text,
            device          text,
            success         boolean,
            amount_cents    bigint,
            payload         jsonb NOT NULL,
            kafka_topic     text NOT NULL,
            kafka_partition integer NOT NULL,
            kafka_offset    bigint NOT NULL,
            ingested_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("ALTER SEQUENCE raw.events_ingest_seq OWNED BY raw.events.ingest_seq")
    # No index on occurred_at: every index costs the sink ~20% of its landing rate, and
    # event-time queries run on streamflow.* outputs, which have their own.
    op.execute(
        """
        CREATE TABLE raw.dead_letters (
            id               bigserial PRIMARY KEY,
            stage            text NOT NULL,
            reason_code      text NOT NULL,
            reason           text NOT NULL,
            payload          bytea,
            message_key      bytea,
            headers          jsonb,
            event_id         text,
            source_topic     text NOT NULL,
            source_partition integer NOT NULL,
            source_offset    bigint NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            replay_count     integer NOT NULL DEFAULT 0,
            last_replayed_at timestamptz,
            -- a replayed batch must not dead-letter the same source message twice
            UNIQUE (stage, source_topic, source_partition, source_offset)
        )
        """
    )
    op.execute("CREATE INDEX dead_letters_created_at_idx ON raw.dead_letters (created_at)")
    op.execute(
        """
        CREATE TABLE raw.consumer_offsets (
            group_id        text NOT NULL,
            topic           text NOT NULL,
            kafka_partition integer NOT NULL,
            next_offset     bigint NOT NULL,
            updated_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, kafka_partition)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE raw.consumer_offsets")
    op.execute("DROP TABLE raw.dead_letters")
    op.execute("DROP TABLE raw.events")
    op.execute("DROP SCHEMA streamflow")
    op.execute("DROP SCHEMA raw")
