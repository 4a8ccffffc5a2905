"""The watermark sensor: new rows in raw.events -> one micro-batch run.

It reads two numbers from PostgreSQL (the truth; the cursor is only a hint), never Kafka, and
returns in milliseconds. The run key names the range, so the same range never runs twice.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.microbatch import STEPS, microbatch_job, run_config
from resources import PostgresResource
from streamflow.microbatch import batch

# Seconds between evaluations: a window closes every 10 s; a run costs a few seconds.
INTERVAL_S = 3
# One run executing while the next one launches: launching (a process that loads the code)
# costs as much as the work, so overlapping the two halves window latency. The steps lock
# and read their own watermarks, so overlapping runs never process a row twice.
MAX_ACTIVE_RUNS = 2
# A run not updated for this long is not in progress: it was orphaned (the stack stopped
# under it) and must not block the sensor; run monitoring marks it failed.
STALE_AFTER = timedelta(minutes=2)
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def evaluate(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    with postgres.connect() as conn:
        landed = batch.landed_max_seq(conn)
        done = batch.watermarks(conn, STEPS)
    processed = min(done.values())
    if landed <= processed:
        return dg.SkipReason(f"no new events: landed up to {landed}, processed {done}")
    active = context.instance.get_run_ids(
        dg.RunsFilter(job_name=microbatch_job.name, statuses=ACTIVE,
                      updated_after=datetime.now(UTC) - STALE_AFTER), limit=MAX_ACTIVE_RUNS)
    if len(active) >= MAX_ACTIVE_RUNS:
        return dg.SkipReason(f"{len(active)} micro-batch runs in progress ({landed - processed}"
                             " events waiting)")
    context.update_cursor(str(landed))
    return dg.RunRequest(run_key=f"events-{processed}-{landed}", run_config=run_config(landed),
                         tags={"streamflow/from_seq": str(processed),
                               "streamflow/upto_seq": str(landed)})


@dg.sensor(job=microbatch_job, minimum_interval_seconds=INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Requests a micro-batch run when raw.events has rows past the watermarks.")
def new_events_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource):
    return evaluate(context, postgres)
