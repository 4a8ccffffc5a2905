"""Micro-batch assets: one run covers everything landed since the last one (many windows)."""

from datetime import timedelta

import dagster as dg
from pydantic import Field, model_validator

from assets import dlq_replay
from assets.lineage import RAW_DEAD_LETTERS, RAW_EVENTS
from resources import KafkaResource, PostgresResource
from streamflow import topics
from streamflow.db import tables
from streamflow.microbatch import batch, report, windows
from streamflow.microbatch import notifications as contract_step
from streamflow.supervisor import RUN_START_TIMEOUT_S

GROUP = "microbatch"


class BatchConfig(dg.Config):
    """The sensor fixes ``upto_seq`` so a run (and its retry) covers a known range."""

    upto_seq: int = Field(0, description=f"Process {tables.events.fullname} up to this "
                                         "ingest_seq (0: all landed when the run starts).")


class NotificationsConfig(BatchConfig):
    drain_seconds: float = Field(
        2.0, ge=0, description="Keep checking events that land meanwhile while the step has "
                               "run less than this (a burst is worked off without a run "
                               "launch every few seconds; longer holds windows back); 0: "
                               "exactly up to upto_seq.")


class WindowConfig(BatchConfig):
    grace_seconds: float = Field(windows.DEFAULT_GRACE.total_seconds(),
                                 description="Seconds after a window's end before it is closed "
                                             "and published.")
    idle_seconds: float = Field(
        windows.DEFAULT_IDLE.total_seconds(),
        description="Seconds (processing time) without a new validated event after which the "
                    "stream counts as idle: every window up to the one holding the last event "
                    "is closed and published. More than grace_seconds. The sensor asks for a "
                    "run with the default.")

    @model_validator(mode="after")
    def _idle_after_grace(self) -> "WindowConfig":
        # A shorter quiet time would publish windows before late events had their grace.
        if self.idle_seconds <= self.grace_seconds:
            raise ValueError(f"idle_seconds ({self.idle_seconds}) must exceed grace_seconds "
                             f"({self.grace_seconds})")
        return self


def _upto(config: BatchConfig, conn) -> int:
    return config.upto_seq or batch.landed_max_seq(conn)


@dg.asset(group_name=GROUP, deps=[RAW_EVENTS], kinds={"pandera", "postgres", "kafka"},
          description="Landed events checked against the pandera contract; valid ones in "
                      f"{tables.notifications.fullname} and on `notifications`, failures "
                      "dead-lettered.")
def notifications(context: dg.AssetExecutionContext, config: NotificationsConfig,
                  postgres: PostgresResource, kafka: KafkaResource) -> dg.MaterializeResult:
    with postgres.connect() as conn:
        result = contract_step.run(
            conn, _upto(config, conn), lambda m: kafka.publish(topics.NOTIFICATIONS, m),
            kafka.publish_dead_letters, drain_s=config.drain_seconds)
    context.log.info(f"checked {result.checked} events ({result.after}, {result.upto}]: "
                     f"{result.valid} valid, {result.rejected} rejected")
    return dg.MaterializeResult(metadata={
        "checked": result.checked, "valid": result.valid, "rejected": result.rejected,
        "published": result.published, "chunks": result.chunks,
        "quarantined": result.quarantined,
        "seconds_by_phase": result.phases.rounded(),
        "pass_rate": dg.MetadataValue.float(round(result.pass_rate, 4)),
        "ingest_seq_range": f"({result.after}, {result.upto}]",
        "top_reasons": dg.MetadataValue.md(
            "\n".join(f"- {reason}: {n}" for reason, n in result.top_reasons) or "none"),
    })


@dg.asset(group_name=GROUP, deps=[notifications], kinds={"postgres", "kafka"},
          description="10 s event-time tumbling windows per event type; touched windows are "
                      "recomputed (late events amend them, revision + 1); closed windows are "
                      "published to `analytics`.")
def event_windows(context: dg.AssetExecutionContext, config: WindowConfig,
                  postgres: PostgresResource, kafka: KafkaResource) -> dg.MaterializeResult:
    with postgres.connect() as conn:
        # Everything the contract step validated, also past upto_seq when it drained more.
        upto = max(_upto(config, conn), batch.watermark(conn, contract_step.STEP))
        result = windows.run(conn, upto,
                             lambda m: kafka.publish(topics.ANALYTICS, m),
                             grace=timedelta(seconds=config.grace_seconds),
                             idle=timedelta(seconds=config.idle_seconds))
    return dg.MaterializeResult(metadata={
        "windows_touched": result.touched, "windows_changed": result.changed,
        "windows_published": result.published,
        "closed_before": str(result.watermark) if result.watermark else "none yet",
        "ingest_seq_range": f"({result.after}, {result.upto}]",
        "seconds_by_phase": result.phases.rounded(),
    })


@dg.asset(group_name=GROUP, deps=[RAW_DEAD_LETTERS, notifications], kinds={"postgres"},
          description=f"Dead letters by hour, stage and reason ({tables.dlq_report.fullname}).")
def dlq_report(context: dg.AssetExecutionContext,
               postgres: PostgresResource) -> dg.MaterializeResult:
    with postgres.connect() as conn:
        result = report.run(conn)
    return dg.MaterializeResult(metadata={
        "dead_letters": result.total, "report": dg.MetadataValue.md(report.markdown(result)),
        "replay": dlq_replay.job_link(context)})


MICROBATCH_ASSETS = [notifications, event_windows, dlq_report]
# Run monitoring fails a micro-batch run after this long (a healthy one takes seconds; a
# 1M-event backlog about a minute on 2 cores): a hung run cannot hold a sensor slot forever.
MAX_RUNTIME = timedelta(minutes=15)
START_TIMEOUT = timedelta(seconds=RUN_START_TIMEOUT_S)
STEPS = [contract_step.STEP, windows.STEP]  # steps with a watermark

microbatch_job = dg.define_asset_job(
    "microbatch",
    # Checks run on their own schedule (assets/checks.py): every step here delays windows.
    selection=dg.AssetSelection.assets(*MICROBATCH_ASSETS).without_checks(),
    description="One micro-batch: contract check, windows, DLQ report.",
    tags={"dagster/max_retries": "2",
          "dagster/max_runtime": str(int(MAX_RUNTIME.total_seconds()))},
    # All steps in the run's own process: a subprocess per step costs seconds of start-up on
    # 2 cores, more than the steps themselves (window visibility p95, see `make bench`).
    executor_def=dg.in_process_executor,
)


def run_config(upto_seq: int) -> dict:
    return {"ops": {"notifications": {"config": {"upto_seq": upto_seq}},
                    "event_windows": {"config": {"upto_seq": upto_seq}}}}
