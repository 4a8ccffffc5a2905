"""The periods the lifecycle dropped from PostgreSQL after archiving them (streamflow.lifecycle):
what was dropped, how many rows, their checksum, and when. The windows step reads it to know
which windows can no longer be recounted from streamflow.notifications.

The dead-letter count triggers (0005) skip a statement made with ``streamflow.restoring`` set
(`streamflow archive restore`): the restored dead letters were counted when they first came,
and their drop (a DROP of the partition) never uncounted them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


# 0005's function, with the restore guard first.
_COUNT = """
CREATE OR REPLACE FUNCTION streamflow.count_dead_letters() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('streamflow.restoring', true) = 'on' THEN
        RETURN NULL;
    END IF;
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


def upgrade() -> None:
    op.execute(_COUNT)
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
    op.execute(_COUNT.replace(
        "    IF current_setting('streamflow.restoring', true) = 'on' THEN\n"
        "        RETURN NULL;\n    END IF;\n", ""))
