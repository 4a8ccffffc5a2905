"""Only the sink that owns a partition stores its offsets (docs/ARCHITECTURE.md, "Several
sinks and the zombie fence").

- ``raw.consumer_offsets.owner_epoch``: raised by one each time a sink is assigned the
  partition (its claim); a landing stores the partition's offset only while the epoch is still
  the one its sink claimed, so a sink paused past its session timeout, whose partitions moved,
  lands nothing when it resumes.
- ``next_offset`` may be NULL: a partition claimed before anything of it landed (read from the
  log's beginning, as a partition without a row).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-14
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        ALTER TABLE raw.consumer_offsets
            ALTER COLUMN next_offset DROP NOT NULL,
            ADD COLUMN owner_epoch bigint NOT NULL DEFAULT 0
    """)


def downgrade() -> None:
    op.execute("DELETE FROM raw.consumer_offsets WHERE next_offset IS NULL")
    op.execute("""
        ALTER TABLE raw.consumer_offsets
            DROP COLUMN owner_epoch,
            ALTER COLUMN next_offset SET NOT NULL
    """)
