"""The whole pipeline under a burst: 1M events sent at the producer's max rate into the full
local stack (sink + Dagster). How fast the sink lands them, how fast the micro-batch layer's
watermarks pass them, and what the micro-batch runs cost meanwhile."""

from __future__ import annotations

import os
import statistics
import sys
import time

import psycopg

from benchmarks.cpu_roles import CpuByRole
from benchmarks.harness import Stack
from streamflow import stack, topics
from streamflow.db.engine import libpq_url
from streamflow.microbatch import notifications, windows

STEPS = [notifications.STEP, windows.STEP]
POLL_S = 0.2


def _landed(conn: psycopg.Connection) -> int:
    """Messages of user-events the sink has landed (its offsets, stored with the rows)."""
    return conn.execute("SELECT coalesce(sum(next_offset), 0)::bigint FROM raw.consumer_offsets "
                        "WHERE group_id = %s AND topic = %s",
                        (topics.SINK_GROUP, topics.USER_EVENTS)).fetchone()[0]


def _seq_and_watermark(conn: psycopg.Connection) -> tuple[int, int]:
    landed = conn.execute("SELECT coalesce(max(ingest_seq), 0) FROM raw.events").fetchone()[0]
    done = conn.execute("SELECT coalesce(min(last_seq), 0) FROM streamflow.watermarks "
                        "WHERE name = ANY(%s)", (STEPS,)).fetchone()[0]
    return landed, done


def _wait_for_pipeline(conn: psycopg.Connection, timeout_s: float = 300) -> None:
    """The demo stream has been through one micro-batch: Dagster is up and warm."""
    deadline = time.monotonic() + timeout_s
    while True:
        landed, done = _seq_and_watermark(conn)
        if done and done >= landed - 500:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the micro-batch layer did not start within 5 minutes")
        time.sleep(1)


def bench_catch_up(st: Stack, events: int) -> dict:
    """Start the workers, wait until Dagster keeps up with the demo stream, then send
    ``events`` at max rate; time first landed -> all landed (sink) and -> all processed
    (micro-batch watermarks past the last of them)."""
    stack.start_workers(st.settings, st.database_url, echo=lambda m: print(m, file=sys.stderr))
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        _wait_for_pipeline(conn)
        base = _landed(conn)
        producer = st.start("produce", "--max-rate", "--count", str(events),
                            "--metrics-port", "0")
        first = sink_done = None
        last_seq = 0
        behind: list[int] = []
        sent_at = time.monotonic()
        cpu = CpuByRole()  # from the send: the producer's CPU counts too
        while True:
            now = time.monotonic()
            landed = _landed(conn) - base
            seq, done = _seq_and_watermark(conn)
            if landed > 0 and first is None:
                first = now
            if sink_done is None:
                behind.append(max(seq - done, 0))
                if landed >= events:  # the burst (plus a few demo events) is in raw.events
                    sink_done, last_seq = now, seq
            elif done >= last_seq:
                mb_done = now
                cpu_seconds = cpu.stop()
                break
            if now - sent_at > 1800:
                raise RuntimeError("no catch-up within 30 minutes")
            time.sleep(POLL_S)
        producer.wait(60)
        runs = _run_durations(st)
    stack.stop_workers(st.settings)
    sink_s, mb_s = sink_done - first, mb_done - first
    return {
        "events": events,
        "sink_seconds": round(sink_s, 2),
        "sink_events_per_s": round(events / sink_s),
        "microbatch_seconds": round(mb_s, 2),
        "microbatch_events_per_s": round(events / mb_s),
        "ratio": round(sink_s / mb_s, 3),
        "target_ratio": 0.8,
        "max_rows_behind_while_landing": max(behind, default=0),
        # Send -> both watermarks past the last event: where the two cores went.
        "cpu_seconds_by_role": cpu_seconds,
        "cpu_seconds_available": round((mb_done - sent_at) * (os.cpu_count() or 1), 1),
        "runs": runs,
        "note": "first landed -> last landed (sink) vs first landed -> both watermarks past "
                "the last (notifications + event_windows); full stack on one machine",
    }


def _run_durations(st: Stack) -> dict:
    """The micro-batch runs, from Dagster's own records: how long each took, when it was
    created / started / ended, the range it asked for, and each step's seconds by phase."""
    import os

    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

    os.environ["DAGSTER_HOME"] = str(st.settings.dagster_home_dir)
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(RunsFilter(job_name="microbatch",
                                                      statuses=[DagsterRunStatus.SUCCESS]),
                                           limit=200)
        done = sorted((r for r in records if r.start_time and r.end_time),
                      key=lambda r: r.create_timestamp)
        phases = {}
        for r in done:
            for entry in instance.all_logs(r.dagster_run.run_id,
                                           of_type=DagsterEventType.ASSET_MATERIALIZATION):
                mat = entry.dagster_event.step_materialization_data.materialization
                value = mat.metadata.get("seconds_by_phase")
                if value is not None:
                    phases.setdefault(r.dagster_run.run_id, {})[
                        mat.asset_key.to_user_string()] = value.value
    if not done:
        return {"count": 0}
    durations = sorted(r.end_time - r.start_time for r in done)
    t0 = done[0].create_timestamp.timestamp()
    return {"count": len(durations), "median_s": round(statistics.median(durations), 2),
            "max_s": round(durations[-1], 2),
            "timeline": [{"created": round(r.create_timestamp.timestamp() - t0, 1),
                          "started": round(r.start_time - t0, 1),
                          "ended": round(r.end_time - t0, 1),
                          "range": [r.dagster_run.tags.get("streamflow/from_seq"),
                                    r.dagster_run.tags.get("streamflow/upto_seq")],
                          "seconds_by_phase": phases.get(r.dagster_run.run_id, {})}
                         for r in done]}
