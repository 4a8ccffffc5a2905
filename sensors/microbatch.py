"""The watermark sensor: new rows in raw.events -> one micro-batch run.

It reads two numbers from PostgreSQL (the truth; the cursor is only a hint), never Kafka, and
returns in milliseconds. The run key names the range, so the same range never runs twice;
a range whose runs failed gets a new attempt (a key of its own) after a backoff, so a failure
is retried even when no new event arrives, and the sensor says so while it waits. With nothing
new but windows waiting to be published, it asks for one run once the stream has been quiet
for the idle time, which closes them (windows.closed_before); its key names the processed
range, so it is asked for once per quiet period.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.microbatch import MAX_RUNTIME, START_TIMEOUT, STEPS, microbatch_job, run_config
from resources import PostgresResource
from streamflow.db import tables
from streamflow.microbatch import batch, windows

# Seconds between evaluations: a window closes every 10 s; a run costs a few seconds.
INTERVAL_S = 3
# One run executing while the next one launches: launching (a process that loads the code)
# costs as much as the work, so overlapping the two halves window latency. Overlapping runs
# claim disjoint ranges (streamflow.microbatch.claims) and work at once, on both cores, so
# during a burst the second run adds throughput instead of waiting for the first.
MAX_ACTIVE_RUNS = 2
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def is_active(status: dg.DagsterRunStatus, created: datetime, started: datetime | None,
              now: datetime) -> bool:
    """Whether a micro-batch run still holds one of the sensor's slots.

    Dagster moves a run's update time only when its status changes, so a long run looks idle
    however busy it is: the rule uses what Dagster records instead. A started run counts
    until it has run for MAX_RUNTIME (run monitoring fails it then, see assets/microbatch.py);
    a run not started yet counts until the instance's start timeout (the same monitoring).
    Runs a stop orphaned are failed by `streamflow up` before anything starts when their
    worker is known gone (streamflow_defs/run_workers.py)."""
    if status not in ACTIVE:
        return False
    if started is not None:
        return now - started < MAX_RUNTIME
    return now - created < START_TIMEOUT


# A failed range is tried again after this, doubling with each failure up to the cap: a
# transient fault (database restart) heals on the first retry, a bad deploy does not flood.
RETRY_AFTER = timedelta(seconds=30)
MAX_RETRY_AFTER = timedelta(minutes=15)


# The windows step's default quiet time (WindowConfig.idle_seconds): the runs asked for here
# use it, so a run asked for by the idle rule publishes what it was asked for.
IDLE = windows.DEFAULT_IDLE


def retry_wait(failed_at: list[datetime], now: datetime) -> timedelta:
    """How long until the next attempt at a range whose runs failed at ``failed_at``
    (zero or negative: due now; no failures: due now)."""
    if not failed_at:
        return timedelta(0)
    backoff = min(RETRY_AFTER * 2 ** (len(failed_at) - 1), MAX_RETRY_AFTER)
    return max(failed_at) + backoff - now


def evaluate(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.connect() as conn:
        landed = batch.landed_max_seq(conn)
        done = batch.watermarks(conn, STEPS)
        processed = min(done.values())
        idle_in = windows.idle_close_in(conn, IDLE) if landed <= processed else None
    if landed <= processed and (idle_in is None or idle_in > timedelta(0)):
        waiting = ("" if idle_in is None else
                   f"; windows wait to be published, closed when the stream has been quiet "
                   f"for {IDLE.total_seconds():.0f} s (in {idle_in.total_seconds():.0f} s)")
        return dg.SkipReason(f"no new events: landed up to {landed}, processed {done}{waiting}")
    now = datetime.now(UTC)
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=microbatch_job.name, statuses=ACTIVE), limit=10)
    active = [r for r in records if is_active(
        r.dagster_run.status, r.create_timestamp,
        datetime.fromtimestamp(r.start_time, UTC) if r.start_time else None, now)]
    if len(active) >= MAX_ACTIVE_RUNS:
        return dg.SkipReason(f"{len(active)} micro-batch runs in progress ({landed - processed}"
                             " events waiting)")
    failed = context.instance.get_run_records(dg.RunsFilter(
        job_name=microbatch_job.name, statuses=[dg.DagsterRunStatus.FAILURE],
        tags={"streamflow/from_seq": str(processed)}), limit=50)
    failed_at = [datetime.fromtimestamp(r.end_time, UTC) if r.end_time else r.create_timestamp
                 for r in failed]
    wait = retry_wait(failed_at, now)
    if wait > timedelta(0):
        return dg.SkipReason(f"{len(failed)} micro-batch run(s) from ingest_seq {processed} "
                             f"failed (see the failed runs' logs); next attempt in "
                             f"{wait.total_seconds():.0f} s")
    context.update_cursor(str(landed))
    # Nothing new: the run closes the idle stream's windows (once per processed range).
    key = (f"events-{processed}-{landed}" if landed > processed else f"idle-{processed}") + (
        f"-attempt-{len(failed) + 1}" if failed else "")
    return dg.RunRequest(run_key=key, run_config=run_config(landed),
                         tags={"streamflow/from_seq": str(processed),
                               "streamflow/upto_seq": str(landed)})


@dg.sensor(job=microbatch_job, minimum_interval_seconds=INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Requests a micro-batch run when {tables.events.fullname} has rows past "
                       "the watermarks.")
def new_events_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    return evaluate(context, postgres)
