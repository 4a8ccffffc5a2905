"""The periods the lifecycle dropped from PostgreSQL after archiving them (streamflow.lifecycle):
what was dropped, how many rows, their checksum, and when. The windows step reads it to know
which windows can no longer be recounted from streamflow.notifications.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE streamflow.dropped_periods (
            table_name    text NOT NULL,
            period_start  timestamptz NOT NULL,
            period_end    timestamptz NOT NULL,
            rows          bigint NOT NULL,
            checksum      numeric NOT NULL,
            dropped_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, period_start)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE streamflow.dropped_periods")
