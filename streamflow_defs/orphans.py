"""Runs a stop left "in progress": failed when the local stack starts, before any Dagster
process does.

`streamflow down` (or a crash) can end a run's process without Dagster recording it. The
default run launcher cannot check a run worker's health, so such a run would stay STARTED
until run monitoring's max runtime and hold one of the micro-batch sensor's slots meanwhile.
At start-up no run of this instance can be running, so every one in progress is an orphan.

    python -m streamflow_defs.orphans     # with DAGSTER_HOME set (streamflow up does this)
"""

from __future__ import annotations

import sys

import dagster as dg

IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
               dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
               dg.DagsterRunStatus.CANCELING]
REASON = "the StreamFlow stack stopped while this run was in progress (found at start-up)"


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every run in progress failed (a canceling one canceled); their run ids."""
    orphans = instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS))
    for run in orphans:
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, REASON)
        else:
            instance.report_run_failed(run, REASON)
    return [run.run_id for run in orphans]


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        failed = fail_orphaned_runs(instance)
    if failed:
        print(f"marked {len(failed)} orphaned Dagster run(s) failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
