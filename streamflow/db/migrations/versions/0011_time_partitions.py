"""raw.events, raw.dead_letters and streamflow.notifications partitioned by time
(docs/ARCHITECTURE.md, "Storage over time").

Each table becomes the DEFAULT partition of a new partitioned table of the same name and
columns, range-partitioned on the time its rows were written: no row is copied here, whatever
the table holds. The period partitions are made by ``streamflow.db.partitions.ensure`` (run
right after every upgrade, with STREAMFLOW_PARTITION_INTERVAL), which moves the rows of each
period out of the default partition into its own. The old table-wide unique keys stay on the
old table and are made per partition from then on; the sequences are owned by the new tables;
the dead-letter count triggers (0005) move to the partitioned table, where a statement's
transition table holds the rows of every partition.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TRIGGERS = (
    "CREATE TRIGGER dead_letters_counted AFTER INSERT ON raw.dead_letters "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION streamflow.count_dead_letters()",
    "CREATE TRIGGER dead_letters_recounted AFTER UPDATE ON raw.dead_letters "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION streamflow.count_dead_letters()",
    "CREATE TRIGGER dead_letters_uncounted AFTER DELETE ON raw.dead_letters "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION streamflow.count_dead_letters()",
)
_DROP_TRIGGERS = (
    "DROP TRIGGER dead_letters_counted ON raw.dead_letters",
    "DROP TRIGGER dead_letters_recounted ON raw.dead_letters",
    "DROP TRIGGER dead_letters_uncounted ON raw.dead_letters",
)
_UPGRADE = (
    # Transition-table triggers are not allowed on a partition: off the old table first.
    *_DROP_TRIGGERS,
    "ALTER TABLE raw.events RENAME TO events_default",
    "CREATE TABLE raw.events (LIKE raw.events_default INCLUDING DEFAULTS) "
    "PARTITION BY RANGE (ingested_at)",
    "ALTER SEQUENCE raw.events_ingest_seq OWNED BY raw.events.ingest_seq",
    "CREATE INDEX events_by_ingest_seq ON raw.events (ingest_seq)",
    "ALTER TABLE raw.events ATTACH PARTITION raw.events_default DEFAULT",

    "ALTER TABLE raw.dead_letters RENAME TO dead_letters_default",
    "CREATE TABLE raw.dead_letters (LIKE raw.dead_letters_default INCLUDING DEFAULTS) "
    "PARTITION BY RANGE (created_at)",
    "ALTER SEQUENCE raw.dead_letters_id_seq OWNED BY raw.dead_letters.id",
    "CREATE INDEX dead_letters_by_created_at ON raw.dead_letters (created_at)",
    "CREATE INDEX dead_letters_by_contract_event_id ON raw.dead_letters (lower(event_id)) "
    "WHERE stage = 'contract'",
    "ALTER TABLE raw.dead_letters ATTACH PARTITION raw.dead_letters_default DEFAULT",
    *_TRIGGERS,

    "ALTER TABLE streamflow.notifications RENAME TO notifications_default",
    "CREATE TABLE streamflow.notifications "
    "(LIKE streamflow.notifications_default INCLUDING DEFAULTS) "
    "PARTITION BY RANGE (validated_at)",
    "CREATE INDEX notifications_by_occurred_at ON streamflow.notifications (occurred_at)",
    "CREATE INDEX notifications_by_ingest_seq ON streamflow.notifications (ingest_seq)",
    "ALTER TABLE streamflow.notifications ATTACH PARTITION streamflow.notifications_default "
    "DEFAULT",
)
# Every row back into the old table (the default partition), which takes the names again.
_DOWNGRADE = (
    *_DROP_TRIGGERS,
    "ALTER TABLE streamflow.notifications DETACH PARTITION streamflow.notifications_default",
    "INSERT INTO streamflow.notifications_default SELECT * FROM streamflow.notifications",
    "DROP TABLE streamflow.notifications",
    "ALTER TABLE streamflow.notifications_default RENAME TO notifications",

    "ALTER TABLE raw.dead_letters DETACH PARTITION raw.dead_letters_default",
    "INSERT INTO raw.dead_letters_default SELECT * FROM raw.dead_letters",
    "ALTER SEQUENCE raw.dead_letters_id_seq OWNED BY raw.dead_letters_default.id",
    "DROP TABLE raw.dead_letters",
    "ALTER TABLE raw.dead_letters_default RENAME TO dead_letters",
    *_TRIGGERS,

    "ALTER TABLE raw.events DETACH PARTITION raw.events_default",
    "INSERT INTO raw.events_default SELECT * FROM raw.events",
    "ALTER SEQUENCE raw.events_ingest_seq OWNED BY raw.events_default.ingest_seq",
    "DROP TABLE raw.events",
    "ALTER TABLE raw.events_default RENAME TO events",
)


def upgrade() -> None:
    for step in _UPGRADE:
        op.execute(step)


def downgrade() -> None:
    for step in _DOWNGRADE:
        op.execute(step)
