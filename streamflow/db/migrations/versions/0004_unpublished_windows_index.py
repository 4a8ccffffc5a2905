"""An index on the windows still to publish: every micro-batch run asks for them, and
without it that question scans all of streamflow.event_windows (it grows ~50k rows a day).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX event_windows_unpublished_idx ON streamflow.event_windows "
               "(window_end) WHERE published_revision < revision")


def downgrade() -> None:
    op.execute("DROP INDEX streamflow.event_windows_unpublished_idx")
