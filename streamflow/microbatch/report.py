"""Dead letters by hour, stage and reason: streamflow.dlq_report and its summary.

The table is kept exact by the database itself: a trigger counts dead letters in the very
transaction that inserts them (migration 0005), so no run ever recounts raw.dead_letters
(its cost would grow with history). A run reads the summary, ~24 rows a day per reason."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.rows import class_row

from streamflow.db.compose import statement
from streamflow.db.tables import dlq_report

STEP = "dlq_report"


@dataclass(frozen=True, slots=True)
class ReportRow:
    stage: str
    reason_code: str
    last_day: int   # dead letters in the last 24 hours
    all_time: int


@dataclass(frozen=True)
class ReportResult:
    rows: list[ReportRow]  # most dead letters first
    total: int


_SUMMARY = statement("""
    SELECT {r.stage}, {r.reason_code},
           coalesce(sum({r.dead_letters}) FILTER (WHERE {r.hour} >= now() - interval '24 hours'),
                    0)::bigint AS last_day,
           sum({r.dead_letters})::bigint AS all_time
    FROM {r} GROUP BY 1, 2 ORDER BY 4 DESC
""", r=dlq_report)


def run(conn: psycopg.Connection) -> ReportResult:
    with conn.transaction(), conn.cursor(row_factory=class_row(ReportRow)) as cur:
        rows = cur.execute(_SUMMARY).fetchall()
    return ReportResult(rows, sum(r.all_time for r in rows))


def markdown(result: ReportResult) -> str:
    lines = ["| stage | reason | last 24 h | all time |", "|---|---|---:|---:|"]
    lines += [f"| {r.stage} | {r.reason_code} | {r.last_day:,} | {r.all_time:,} |"
              for r in result.rows]
    return "\n".join(lines) if result.rows else "No dead letters."
