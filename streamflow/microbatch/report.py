"""Dead letters by hour, stage and reason: streamflow.dlq_report and its summary.

The table is kept exact by the database itself: a trigger counts dead letters in the very
transaction that inserts them (migration 0005), so no run ever recounts raw.dead_letters
(its cost would grow with history). A run reads the summary, ~24 rows a day per reason."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

STEP = "dlq_report"


@dataclass(frozen=True)
class ReportResult:
    rows: list[tuple]  # (stage, reason_code, dead letters in the last 24 h, all time)
    total: int


def run(conn: psycopg.Connection) -> ReportResult:
    with conn.transaction():
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
