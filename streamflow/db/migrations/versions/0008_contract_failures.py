"""A contract dead letter's failures as records (column, check, expected, got), beside the
reason text, so that tools read them instead of parsing the text.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing, however many dead letters there are.
    op.execute("ALTER TABLE raw.dead_letters ADD COLUMN failures jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE raw.dead_letters DROP COLUMN failures")
