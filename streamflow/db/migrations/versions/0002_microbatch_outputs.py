"""Micro-batch outputs: validated notifications, 10 s event windows, DLQ report, watermarks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE streamflow.watermarks (
            name        text PRIMARY KEY,
            last_seq    bigint NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE streamflow.notifications (
            event_id        uuid PRIMARY KEY,
            ingest_seq      bigint NOT NULL,
            schema_version  integer NOT NULL,
            event_type      text NOT NULL,
            user_id         text NOT NULL,
            email_hash      text NOT NULL,
            email_masked    text NOT NULL,
            occurred_at     timestamptz NOT NULL,
            country         text NOT NULL,
            device          text NOT NULL,
            success         boolean,
            amount_cents    bigint,
            validated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX notifications_occurred_at_idx ON streamflow.notifications "
               "(occurred_at)")
    op.execute("CREATE INDEX notifications_ingest_seq_idx ON streamflow.notifications "
               "(ingest_seq)")
    op.execute(
        """
        CREATE TABLE streamflow.event_windows (
            window_start      timestamptz NOT NULL,
            window_end        timestamptz NOT NULL,
            event_type        text NOT NULL,
            events            integer NOT NULL,
            distinct_users    integer NOT NULL,
            login_successes   integer NOT NULL,
            login_failures    integer NOT NULL,
            purchase_cents    bigint NOT NULL,
            revision          integer NOT NULL DEFAULT 1,
            published_revision integer NOT NULL DEFAULT 0,
            updated_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (window_start, event_type)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE streamflow.dlq_report (
            hour          timestamptz NOT NULL,
            stage         text NOT NULL,
            reason_code   text NOT NULL,
            dead_letters  integer NOT NULL,
            updated_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (hour, stage, reason_code)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE streamflow.dlq_report, streamflow.event_windows, "
               "streamflow.notifications, streamflow.watermarks")
