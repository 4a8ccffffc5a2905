"""Run retention: the `dagster_retention` job deletes old runs of the high-frequency jobs (and,
assets/event_retention.py, the runless events and check executions no run deletion reaches).

A micro-batch every few seconds is ~17,000 Dagster runs a day and nothing in Dagster deletes
them (the instance's `retention:` section purges schedule and sensor ticks only). On the local
SQLite instance `instance.delete_run` removes a run's rows but frees almost nothing: each run
keeps its own ~160 KB event-log database file and a compute-log folder, both left behind.
`purge_runs` deletes those too, so disk use levels off at about a day of runs.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.checks import checks_job
from assets.event_retention import (
    EVENT_AGE,
    purge_automation_evaluations,
    purge_events,
    purge_ticks,
)
from assets.lifecycle import LIFECYCLE_CHECKS_JOB, LIFECYCLE_JOB
from assets.microbatch import microbatch_job
from streamflow.settings import Settings

JOB_NAME = "dagster_retention"
# Runs older than these are deleted. A successful run is only worth a look while its batch is
# recent (6 h of micro-batches is ~0.8 GiB on SQLite, see README "Storage over time"; 24 h
# would be ~3 GiB on a laptop); a failed or canceled one is kept for a week, to look into it.
SUCCESS_AGE = timedelta(hours=6)
FAILURE_AGE = timedelta(days=7)
# Runs fetched and deleted per page (one query, then one delete each). Deleting a run from the
# local SQLite instance took ~22 ms on this 2-core machine (row deletes plus the file
# removals), so a page is ~2 s of work.
PAGE_SIZE = 100
# Runs deleted per call at most (~45 s at 22 ms each), 2.5x an hour's intake of ~780 runs
# (720 micro-batches, 60 checks runs, this job): a backlog (retention switched on for an old
# instance, the stack started again after days) drains over a few hourly runs instead of one
# run that holds the instance's SQLite files for minutes.
MAX_RUNS = 2_000

SUCCEEDED = (dg.DagsterRunStatus.SUCCESS,)
# Finished without success. Every other status (QUEUED, NOT_STARTED, STARTING, STARTED,
# CANCELING, MANAGED) is a run that may still be in progress: never selected, never deleted.
UNSUCCESSFUL = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


# Runs the declarative automation launches (the dbt models, every 5 minutes) carry this tag;
# their job is Dagster's implicit asset job, which a hand-launched materialization shares, so
# they are selected by the tag, not the job.
AUTOMATION_TAG = ("dagster/from_automation_condition", "true")


@dataclass(frozen=True)
class RetentionPolicy:
    # The archive's runs stay: they are what the UI shows as archived (one a period).
    jobs: tuple[str, ...] = (microbatch_job.name, checks_job.name, JOB_NAME, LIFECYCLE_JOB,
                             LIFECYCLE_CHECKS_JOB)
    tagged: tuple[tuple[str, str], ...] = (AUTOMATION_TAG,)  # runs with any of these tags
    success_age: timedelta = SUCCESS_AGE
    failure_age: timedelta = FAILURE_AGE
    max_runs: int = MAX_RUNS


@dataclass(frozen=True)
class PurgeResult:
    deleted: Counter[tuple[str, dg.DagsterRunStatus]] = field(default_factory=Counter)
    pages: int = 0
    capped: bool = False  # stopped at max_runs: older runs are left for the next call

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


@dataclass
class _Selection:
    """One job's runs in some statuses created before a cutoff, fetched oldest first."""

    runs: dg.RunsFilter  # a job's runs, or those with a tag
    statuses: tuple[dg.DagsterRunStatus, ...]
    created_before: datetime

    def page(self, instance: dg.DagsterInstance, limit: int) -> list[dg.DagsterRun]:
        records = instance.get_run_records(
            dg.RunsFilter(job_name=self.runs.job_name, tags=self.runs.tags,
                          statuses=list(self.statuses), created_before=self.created_before),
            limit=limit, order_by="create_timestamp", ascending=True)
        return [record.dagster_run for record in records]


def _success_cutoff(instance: dg.DagsterInstance, runs: dg.RunsFilter,
                    cutoff: datetime) -> datetime:
    """Never older than the newest successful run, which is always kept: after the stack was
    down for longer than the age, each asset still shows its last materialization."""
    newest = instance.get_run_records(
        dg.RunsFilter(job_name=runs.job_name, tags=runs.tags, statuses=list(SUCCEEDED)),
        limit=1)
    return min(cutoff, newest[0].create_timestamp) if newest else cutoff


def _delete(instance: dg.DagsterInstance, run_id: str) -> None:
    """The run, its event log, its event-log file (SQLite) and its compute logs."""
    instance.delete_run(run_id)
    events = instance.event_log_storage
    if events.is_run_sharded:
        # SqliteEventLogStorage keeps one database file per run; delete_run empties it, leaves
        # it. A private method: tests/unit/test_retention.py fails if an upgrade moves it.
        Path(events.path_for_shard(run_id)).unlink(missing_ok=True)  # type: ignore[attr-defined]
    # Local compute logs live in <base_dir>/<run_id>/; the prefix covers the run's every step.
    instance.compute_log_manager.delete_logs(prefix=[run_id])


def purge_runs(instance: dg.DagsterInstance, now: datetime,
               policy: RetentionPolicy = RetentionPolicy(),
               page_size: int = PAGE_SIZE) -> PurgeResult:
    """Delete the policy's jobs' finished runs created before their age, oldest first.

    Successful runs older than ``success_age`` (except each job's newest), failed and canceled
    ones older than ``failure_age``; runs in any other status are never selected. Pages of
    ``page_size`` runs, taken in turn from each job and status, so a capped call still makes
    progress on every job; at most ``max_runs`` runs per call.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")  # RunsFilter compares in UTC
    now = now.astimezone(UTC)
    selections = []
    for runs in [dg.RunsFilter(job_name=job) for job in policy.jobs] + [
            dg.RunsFilter(tags={key: value}) for key, value in policy.tagged]:
        selections.append(_Selection(runs, SUCCEEDED, _success_cutoff(
            instance, runs, now - policy.success_age)))
        selections.append(_Selection(runs, UNSUCCESSFUL, now - policy.failure_age))
    deleted: Counter[tuple[str, dg.DagsterRunStatus]] = Counter()
    pages = 0
    while selections:
        for selection in list(selections):
            budget = policy.max_runs - sum(deleted.values())
            if budget <= 0:
                return PurgeResult(deleted, pages, capped=True)
            limit = min(page_size, budget)
            runs = selection.page(instance, limit)
            if runs:
                pages += 1
            for run in runs:
                _delete(instance, run.run_id)
                deleted[(run.job_name, run.status)] += 1
            if len(runs) < limit:  # nothing older is left for this selection
                selections.remove(selection)
    return PurgeResult(deleted, pages)


class RetentionConfig(dg.Config):
    success_hours: float = Field(SUCCESS_AGE / timedelta(hours=1), gt=0,
                                 description="Delete successful runs older than this.")
    failure_days: float = Field(FAILURE_AGE / timedelta(days=1), gt=0,
                                description="Delete failed and canceled runs older than this.")
    max_runs: int = Field(MAX_RUNS, gt=0, description="Delete at most this many runs in one go; "
                                                "the next hourly run goes on.")
    jobs: list[str] = Field(list(RetentionPolicy().jobs),
                            description="The jobs whose runs are deleted.")


def _by_job_and_status(item: tuple[tuple[str, dg.DagsterRunStatus], int]) -> tuple[str, str]:
    (job, status), _ = item
    return job, status.value


@dg.op(out=dg.Out(dg.Nothing),
       description="Deletes old finished runs of the listed jobs with their event logs and "
                   "compute logs; never a run in progress.")
def purge_old_runs(context: dg.OpExecutionContext, config: RetentionConfig):
    policy = RetentionPolicy(jobs=tuple(config.jobs),
                             success_age=timedelta(hours=config.success_hours),
                             failure_age=timedelta(days=config.failure_days),
                             max_runs=config.max_runs)
    result = purge_runs(context.instance, datetime.now(UTC), policy)
    context.log.info(f"deleted {result.total} runs in {result.pages} pages"
                     + (" (capped: more next time)" if result.capped else ""))
    rows = ["| job | status | deleted |", "|---|---|---:|"]
    rows += [f"| {job} | {status.value} | {n} |"
             for (job, status), n in sorted(result.deleted.items(), key=_by_job_and_status)]
    context.add_output_metadata({"deleted": result.total, "pages": result.pages,
                                 "capped": result.capped,
                                 "by job and status": dg.MetadataValue.md("\n".join(rows))})


class EventRetentionConfig(dg.Config):
    event_days: float = Field(EVENT_AGE / timedelta(days=1), gt=0,
                              description="Delete runless asset events (sensor observations, "
                                          "reported materializations), asset-check "
                                          "executions and sensor and schedule ticks older "
                                          "than this; the newest of each is kept.")


@dg.op(ins={"after_runs": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing),
       description="Deletes old runless asset events, asset-check executions, sensor and "
                   "schedule ticks and automation evaluations, which no run deletion reaches "
                   "(assets/event_retention.py).")
def purge_old_events(context: dg.OpExecutionContext, config: EventRetentionConfig):
    now, age = datetime.now(UTC), timedelta(days=config.event_days)
    result = purge_events(context.instance, now, age)
    instigators = purge_ticks(context.instance, now, age)
    evaluations = purge_automation_evaluations(context.instance, now, age)
    context.log.info(f"deleted {result.total_events} runless events, "
                     f"{result.check_executions} check executions, {evaluations} automation "
                     f"evaluations and the old ticks of {instigators} sensors and schedules")
    context.add_output_metadata({"runless events": result.total_events,
                                 "check executions": result.check_executions,
                                 "event tags": result.tags,
                                 "automation evaluations": evaluations,
                                 "sensors and schedules with ticks purged": instigators})


@dg.job(name=JOB_NAME, executor_def=dg.in_process_executor,
        description="Deletes old runs of the micro-batch, checks and retention jobs, then old "
                    "runless events and check executions (ages in the launchpad config).")
def retention_job():
    # Events after runs: the check executions of runs just deleted go in the same pass.
    purge_old_events(after_runs=purge_old_runs())


# The hourly cadence at the default ages. Hourly, not daily: an hour is ~780 runs to delete
# (~17 s); a day is ~19,000 (~7 minutes), far past MAX_RUNS, so a daily job would never catch
# up. Minute 7: not one of the minutes the 5-minute dbt automation ticks on.
HOURLY = "7 * * * *"
# Shorter run ages (the lifecycle soak keeps minutes) are purged four times an age, so that the
# storage levels off at ~1.25 ages of runs; never more often than every 5 minutes.
TIMES_PER_AGE = 4
CADENCES_MIN = (5, 10, 15, 20, 30)


def cron_for(run_age: timedelta) -> str:
    """Hourly at minute 7, or every 5-30 minutes (off the 5-minute marks) for ages under 4 h."""
    minutes = run_age / timedelta(minutes=1) / TIMES_PER_AGE
    if minutes >= 60:
        return HOURLY
    every = max([m for m in CADENCES_MIN if m <= minutes], default=CADENCES_MIN[0])
    return f"2-59/{every} * * * *"


def retention_schedule_for(settings: Settings) -> dg.ScheduleDefinition:
    """The scheduled runs use STREAMFLOW_DAGSTER_RUN_RETENTION and _EVENT_RETENTION; a run
    launched by hand uses its launchpad config (the defaults above)."""
    run_age, event_age = settings.dagster_retention(), settings.dagster_retention(events=True)
    return dg.ScheduleDefinition(
        name=f"{JOB_NAME}_schedule", job=retention_job, cron_schedule=cron_for(run_age),
        run_config=dg.RunConfig(ops={
            "purge_old_runs": RetentionConfig(success_hours=run_age / timedelta(hours=1)),
            "purge_old_events": EventRetentionConfig(event_days=event_age / timedelta(days=1)),
        }),
        default_status=dg.DefaultScheduleStatus.RUNNING)
