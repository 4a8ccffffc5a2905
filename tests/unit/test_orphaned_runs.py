"""Runs left in progress by a stop are failed at start-up; finished runs are untouched."""

import dagster as dg

from streamflow_defs.prepare_instance import fail_orphaned_runs


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny() -> None:
    noop()


def test_runs_in_progress_are_failed_and_finished_ones_kept():
    with dg.instance_for_test() as instance:
        statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.SUCCESS]
        runs = {status: instance.create_run_for_job(tiny, status=status)
                for status in statuses}
        failed = fail_orphaned_runs(instance)
        after = {s: instance.get_run_by_id(r.run_id).status for s, r in runs.items()}
    assert sorted(failed) == sorted(runs[s].run_id for s in statuses[:3])
    assert after == {dg.DagsterRunStatus.STARTED: dg.DagsterRunStatus.FAILURE,
                     dg.DagsterRunStatus.STARTING: dg.DagsterRunStatus.FAILURE,
                     dg.DagsterRunStatus.CANCELING: dg.DagsterRunStatus.CANCELED,
                     dg.DagsterRunStatus.SUCCESS: dg.DagsterRunStatus.SUCCESS}
