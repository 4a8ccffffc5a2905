"""Ranges of a micro-batch step claimed by concurrent runs (streamflow.microbatch.claims).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE streamflow.step_claims (
            step        text NOT NULL,
            after_seq   bigint NOT NULL,
            upto_seq    bigint NOT NULL,
            done        boolean NOT NULL DEFAULT false,
            claimed_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (step, after_seq),
            CHECK (upto_seq > after_seq)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE streamflow.step_claims")
