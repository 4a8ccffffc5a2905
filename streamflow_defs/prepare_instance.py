"""Prepare the Dagster instance before any of its processes starts, in one process: create
or migrate its storage (what `dagster instance migrate` does; started together, the code
server, webserver and daemon raced to create it), then fail the runs a stop left "in progress".

`streamflow down` (or a crash) can end a run's process without Dagster recording it. The
default run launcher cannot check a run worker's health, so such a run would stay STARTED
until run monitoring's max runtime and hold one of the micro-batch sensor's slots meanwhile.
At start-up no run of this instance can be running, so every one in progress is an orphan.

    python -m streamflow_defs.prepare_instance   # DAGSTER_HOME set (streamflow up does this)
"""

from __future__ import annotations

import contextlib
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
        with contextlib.redirect_stdout(sys.stderr):  # stdout says only what `up` shows
            instance.upgrade()
        failed = fail_orphaned_runs(instance)
    if failed:
        print(f"marked {len(failed)} orphaned Dagster run(s) failed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
