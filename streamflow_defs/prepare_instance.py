"""Prepare the Dagster instance before any of its processes starts, in one process: create
or migrate its storage (what `dagster instance migrate` does; started together, the code
server, webserver and daemon raced to create it), then fail the runs a stop left "in progress"
whose process is gone.

`streamflow down` (or a crash) can end a run's process without Dagster recording it. The
default run launcher cannot check a run worker's health, so such a run would stay STARTED
until run monitoring's max runtime and hold one of the micro-batch sensor's slots meanwhile.
A run whose process still runs is left alone, whatever became of the process that started it
(a supervisor killed outright, a code server restarted, compose's `migrate` run again with the
stack up): it finishes and records its outcome itself. What cannot be checked from here is left
to run monitoring (streamflow_defs/run_workers.py).

    python -m streamflow_defs.prepare_instance   # DAGSTER_HOME set (streamflow up does this)
"""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime

import dagster as dg

from streamflow.supervisor import RUN_START_TIMEOUT_S
from streamflow_defs.run_workers import IN_PROGRESS, Liveness, RunWorker, liveness, run_worker


def _reason(worker: RunWorker) -> str:
    if worker.pid is None:
        return (f"created more than {RUN_START_TIMEOUT_S} s ago and never launched "
                "(found at start-up)")
    return (f"its run worker's process (pid {worker.pid}) is gone: the StreamFlow stack stopped "
            "while this run was in progress (found at start-up)")


def fail_orphaned_runs(instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """Mark failed (a canceling one canceled) every run in progress whose process is gone:
    their run ids, and those of the runs in progress left alone."""
    failed, left = [], []
    now = datetime.now(UTC)
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        worker = run_worker(instance, run)
        if liveness(run.status, record.create_timestamp, worker, now) != Liveness.GONE:
            left.append(run.run_id)
            continue
        run = instance.get_run_by_id(run.run_id)  # it may have finished meanwhile
        if run is None or run.status not in IN_PROGRESS:
            continue
        reason = _reason(worker)
        if run.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, reason)
        else:
            instance.report_run_failed(run, reason)
        failed.append(run.run_id)
    return failed, left


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        with contextlib.redirect_stdout(sys.stderr):  # stdout says only what `up` shows
            instance.upgrade()
        failed, left = fail_orphaned_runs(instance)
    if failed:
        print(f"marked {len(failed)} orphaned Dagster run(s) failed: {', '.join(failed)}")
    if left:
        print(f"left {len(left)} Dagster run(s) in progress (their process runs, or run "
              f"monitoring watches them): {', '.join(left)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
