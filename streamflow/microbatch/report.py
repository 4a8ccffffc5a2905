"""Dead letters by hour, stage and reason -> streamflow.dlq_report (recomputed, idempotent)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from streamflow.microbatch import batch as batches

STEP = "dlq_report"

_REFRESH = """
    INSERT INTO streamflow.dlq_report AS r (hour, stage, reason_code, dead_letters)
    SELECT date_trunc('hour', created_at), stage, reason_code, count(*)
    FROM raw.dead_letters GROUP BY 1, 2, 3
    ON CONFLICT (hour, stage, reason_code) DO UPDATE SET
        dead_letters = EXCLUDED.dead_letters, updated_at = now()
    WHERE r.dead_letters IS DISTINCT FROM EXCLUDED.dead_letters
"""


@dataclass(frozen=True)
class ReportResult:
    rows: list[tuple]  # (stage, reason_code, dead letters in the last 24 h, all time)
    total: int


def run(conn: psycopg.Connection) -> ReportResult:
    with conn.transaction():
        batches.lock(conn, STEP)
        conn.execute(_REFRESH)
        rows = conn.execute(
            "SELECT stage, reason_code, "
            "sum(dead_letters) FILTER (WHERE hour >= now() - interval '24 hours'), "
            "sum(dead_letters) FROM streamflow.dlq_report GROUP BY 1, 2 ORDER BY 4 DESC"
        ).fetchall()
    return ReportResult([(s, r, int(d or 0), int(a)) for s, r, d, a in rows],
                        sum(int(a) for *_, a in rows))


def markdown(result: ReportResult) -> str:
    lines = ["| stage | reason | last 24 h | all time |", "|---|---|---:|---:|"]
    lines += [f"| {s} | {r} | {d:,} | {a:,} |" for s, r, d, a in result.rows]
    return "\n".join(lines) if result.rows else "No dead letters."
