"""End-to-end on the full local stack (workers + Dagster daemon): how soon a 10 s window is
visible in streamflow.event_windows after it closes."""

from __future__ import annotations

import statistics
import sys
import time
from datetime import UTC, datetime

import psycopg

from benchmarks.harness import Stack
from streamflow import stack
from streamflow.db.engine import libpq_url


def bench_window_visibility(st: Stack, duration_s: float) -> dict:
    """Start the workers and Dagster, then note when each window first appears.

    Latency = first seen - window_end (wall clock; on-time demo events have event time
    = send time). Windows already closed when watching began are left out.
    """
    stack.start_workers(st.settings, st.database_url, echo=lambda m: print(m, file=sys.stderr))
    first_seen: dict[tuple, float] = {}
    started = time.time()
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        while time.time() - started < duration_s:
            now = time.time()
            for start, end, event_type in conn.execute(
                    "SELECT window_start, window_end, event_type FROM streamflow.event_windows "
                    "WHERE window_end > %s", (datetime.fromtimestamp(started, tz=UTC),)):
                first_seen.setdefault((start, event_type), now - end.timestamp())
            time.sleep(0.5)
    stack.stop_workers(st.settings)
    latencies = sorted(max(v, 0.0) for v in first_seen.values())
    if len(latencies) < 2:
        return {"windows": len(latencies), "error": "too few windows observed"}
    return {
        "windows": len(latencies),
        "watch_seconds": duration_s,
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "max_s": round(latencies[-1], 2),
        "target_p95_s": 30,
        "note": "sensor every 5 s, one Dagster run per micro-batch (run launch ~seconds)",
    }
