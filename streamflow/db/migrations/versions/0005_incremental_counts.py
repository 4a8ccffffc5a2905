"""Counts kept as the rows arrive, so no per-run or per-minute query grows with history:

- streamflow.dlq_report is maintained by statement triggers on raw.dead_letters, in the
  transaction that inserts, updates or deletes the dead letters: exact, never recounted. Hours are
  UTC, whatever the session's time zone.
- streamflow.contract_counts holds, per minute, how many events the contract step checked,
  passed and rejected (written in each chunk's transaction); the asset checks sum an hour
  of it instead of counting raw.events and streamflow.notifications.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION streamflow.count_dead_letters() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                UPDATE streamflow.dlq_report r SET dead_letters = r.dead_letters - d.n,
                    updated_at = now()
                FROM (SELECT date_trunc('hour', created_at, 'UTC') AS hour, stage,
                             reason_code, count(*) AS n
                      FROM old_rows GROUP BY 1, 2, 3) d
                WHERE (r.hour, r.stage, r.reason_code) = (d.hour, d.stage, d.reason_code);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO streamflow.dlq_report AS r (hour, stage, reason_code, dead_letters)
                SELECT date_trunc('hour', created_at, 'UTC'), stage, reason_code, count(*)
                FROM new_rows GROUP BY 1, 2, 3
                ORDER BY 1, 2, 3  -- one lock order for concurrent writers
                ON CONFLICT (hour, stage, reason_code) DO UPDATE SET
                    dead_letters = r.dead_letters + EXCLUDED.dead_letters, updated_at = now();
            END IF;
            RETURN NULL;
        END $$
        """
    )
    op.execute("CREATE TRIGGER dead_letters_counted AFTER INSERT ON raw.dead_letters "
               "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
               "EXECUTE FUNCTION streamflow.count_dead_letters()")
    # Any update (a replay marks rows) recounts the rows it touched: net zero unless it moved
    # one to another hour, stage or reason. (Transition tables allow no column list.)
    op.execute("CREATE TRIGGER dead_letters_recounted AFTER UPDATE ON raw.dead_letters "
               "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT "
               "EXECUTE FUNCTION streamflow.count_dead_letters()")
    op.execute("CREATE TRIGGER dead_letters_uncounted AFTER DELETE ON raw.dead_letters "
               "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT "
               "EXECUTE FUNCTION streamflow.count_dead_letters()")
    # Recount once, by UTC hour, under a lock so no insert slips between recount and trigger.
    op.execute("LOCK TABLE raw.dead_letters IN SHARE MODE")
    op.execute("DELETE FROM streamflow.dlq_report")
    op.execute("INSERT INTO streamflow.dlq_report (hour, stage, reason_code, dead_letters) "
               "SELECT date_trunc('hour', created_at, 'UTC'), stage, reason_code, count(*) "
               "FROM raw.dead_letters GROUP BY 1, 2, 3")
    op.execute("ALTER TABLE streamflow.dlq_report ALTER COLUMN dead_letters TYPE bigint")
    op.execute(
        """
        CREATE TABLE streamflow.contract_counts (
            minute    timestamptz PRIMARY KEY,
            checked   bigint NOT NULL,
            valid     bigint NOT NULL,
            rejected  bigint NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE streamflow.contract_counts")
    op.execute("DROP TRIGGER dead_letters_uncounted ON raw.dead_letters")
    op.execute("DROP TRIGGER dead_letters_recounted ON raw.dead_letters")
    op.execute("DROP TRIGGER dead_letters_counted ON raw.dead_letters")
    op.execute("DROP FUNCTION streamflow.count_dead_letters()")
    op.execute("ALTER TABLE streamflow.dlq_report ALTER COLUMN dead_letters TYPE integer")
