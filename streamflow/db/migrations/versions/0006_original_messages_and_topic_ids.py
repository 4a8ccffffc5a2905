"""raw.events keeps each message as it arrived; Kafka topic ids tell topic incarnations apart.

- ``payload`` becomes ``json``: PostgreSQL keeps json text verbatim (jsonb re-renders it), so
  a contract dead letter carries the original bytes, and a replay sends the original message.
  ``message_key`` and ``headers`` keep the rest of it.
- ``mistyped``: the sink marks a row whose payload holds a field its typed column could not
  hold, so the contract step re-reads only those payloads (NULL: landed before this revision,
  unknown, re-read).
- ``kafka_topic_id`` / ``source_topic_id`` / ``topic_id``: the topic id (Kafka 4) of the
  incarnation a message came from. A topic deleted and created again restarts its offsets at
  0; with the id in the key, a new message at an old (topic, partition, offset) is a new
  message, and its dead letter is not taken for a replay of an old one. The nil UUID stands for
  "not recorded" (rows from before this revision).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.execute("ALTER TABLE raw.events ALTER COLUMN payload TYPE json USING payload::json")
    op.execute("""
        ALTER TABLE raw.events
            ADD COLUMN message_key bytea,
            ADD COLUMN headers jsonb,
            ADD COLUMN mistyped boolean,
            ADD COLUMN kafka_topic_id uuid NOT NULL
                DEFAULT '00000000-0000-0000-0000-000000000000'
    """)
    op.execute("""
        ALTER TABLE raw.dead_letters ADD COLUMN source_topic_id uuid NOT NULL
            DEFAULT '00000000-0000-0000-0000-000000000000'
    """)
    # The unique key of 0001 was named by PostgreSQL; find it rather than guess the name.
    op.execute("""
        DO $$
        DECLARE name text;
        BEGIN
            SELECT conname INTO STRICT name FROM pg_constraint
            WHERE conrelid = 'raw.dead_letters'::regclass AND contype = 'u';
            EXECUTE format('ALTER TABLE raw.dead_letters DROP CONSTRAINT %I', name);
        END $$
    """)
    op.execute("""
        ALTER TABLE raw.dead_letters ADD CONSTRAINT dead_letters_source_key
            UNIQUE (stage, source_topic, source_topic_id, source_partition, source_offset)
    """)
    op.execute("ALTER TABLE raw.consumer_offsets ADD COLUMN topic_id uuid")


def downgrade() -> None:
    op.execute("ALTER TABLE raw.consumer_offsets DROP COLUMN topic_id")
    op.execute("ALTER TABLE raw.dead_letters DROP CONSTRAINT dead_letters_source_key")
    op.execute("ALTER TABLE raw.dead_letters DROP COLUMN source_topic_id")
    op.execute("""
        ALTER TABLE raw.dead_letters
            ADD UNIQUE (stage, source_topic, source_partition, source_offset)
    """)
    op.execute("""
        ALTER TABLE raw.events DROP COLUMN message_key, DROP COLUMN headers,
            DROP COLUMN mistyped, DROP COLUMN kafka_topic_id
    """)
    op.execute("ALTER TABLE raw.events ALTER COLUMN payload TYPE jsonb USING payload::jsonb")
