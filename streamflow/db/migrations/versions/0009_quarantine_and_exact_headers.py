"""Headers kept byte for byte where text cannot hold them, and the quarantine: what could not
be processed after every retry, recorded instead of stopping the pipeline.

- ``raw_headers`` (raw.events, raw.dead_letters): ``[[name, base64 value], ...]`` when the
  ``headers`` text column loses something (bytes that are not UTF-8, NUL, a repeated name).
- ``raw.quarantine``: a dead letter whose topic copy Kafka refused for good, or a landed event
  the micro-batch step failed on every attempt (docs/ARCHITECTURE.md, "Quarantine").
- ``step_claims.attempts`` / ``last_error``: a claimed range tried before is split, not run
  whole again, until the one event that fails is found.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites nothing, however many rows there are.
    op.execute("ALTER TABLE raw.events ADD COLUMN raw_headers jsonb")
    op.execute("ALTER TABLE raw.dead_letters ADD COLUMN raw_headers jsonb")
    op.execute(
        """
        ALTER TABLE streamflow.step_claims
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN last_error text
        """
    )
    op.execute(
        """
        CREATE TABLE raw.quarantine (
            id                bigserial PRIMARY KEY,
            kind              text NOT NULL,
            stage             text NOT NULL,
            reason            text NOT NULL,
            source_topic      text NOT NULL,
            source_topic_id   uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000',
            source_partition  integer NOT NULL,
            source_offset     bigint NOT NULL,
            event_id          text,
            ingest_seq        bigint,
            attempts          integer NOT NULL DEFAULT 1,
            created_at        timestamptz NOT NULL DEFAULT now(),
            resolved_at       timestamptz,
            CONSTRAINT quarantine_source_key UNIQUE
                (kind, stage, source_topic, source_topic_id, source_partition, source_offset)
        )
        """
    )
    op.execute("CREATE INDEX quarantine_unresolved_idx ON raw.quarantine (created_at) "
               "WHERE resolved_at IS NULL")


def downgrade() -> None:
    op.execute("DROP TABLE raw.quarantine")
    op.execute("ALTER TABLE streamflow.step_claims DROP COLUMN attempts, DROP COLUMN last_error")
    op.execute("ALTER TABLE raw.dead_letters DROP COLUMN raw_headers")
    op.execute("ALTER TABLE raw.events DROP COLUMN raw_headers")
