"""Dead-letter operations: an index for the sink's re-check of replayed contract rejects
(created_at, for `streamflow dlq list/stats`, is indexed since 0001).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sink asks "was this event rejected by the contract?" when it arrives again.
    op.execute("CREATE INDEX dead_letters_event_id_idx ON raw.dead_letters (lower(event_id)) "
               "WHERE stage = 'contract'")


def downgrade() -> None:
    op.execute("DROP INDEX raw.dead_letters_event_id_idx")
