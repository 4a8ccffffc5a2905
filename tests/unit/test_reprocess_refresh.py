"""A reprocess that changed something asks for one full rebuild of the dbt marts."""

import dagster as dg

from assets.microbatch import event_windows, notifications
from sensors.reprocess import changed_outputs, dbt_full_refresh_job, dbt_refresh_after_reprocess


def _run(instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> dg.DagsterRun:
    @dg.op
    def reprocess_range(context: dg.OpExecutionContext) -> None:
        for key in keys:  # what the real op logs when a range changed
            context.log_event(dg.AssetMaterialization(key))

    @dg.job(name="reprocess")
    def fake_reprocess():
        reprocess_range()

    result = fake_reprocess.execute_in_process(instance=instance)
    return instance.get_run_by_id(result.run_id)


def _tick(instance: dg.DagsterInstance, run: dg.DagsterRun):
    context = dg.build_run_status_sensor_context(
        sensor_name=dbt_refresh_after_reprocess.name, dagster_instance=instance,
        dagster_run=run, dagster_event=dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name))
    return dbt_refresh_after_reprocess(context)


def test_a_reprocess_that_changed_windows_requests_a_full_refresh():
    with dg.instance_for_test() as instance:
        run = _run(instance, [event_windows.key, dg.AssetKey("unrelated")])
        assert changed_outputs(instance, run.run_id) == {event_windows.key}
        request = _tick(instance, run)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == f"after-{run.run_id}"


def test_a_reprocess_that_changed_nothing_requests_nothing():
    with dg.instance_for_test() as instance:
        run = _run(instance, [])
        assert changed_outputs(instance, run.run_id) == set()
        assert isinstance(_tick(instance, run), dg.SkipReason)


def test_the_refresh_job_rebuilds_fct_events_and_its_marts_fully():
    from streamflow_defs.definitions import defs

    job = defs.resolve_job_def(dbt_full_refresh_job.name)
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "dbt/fct_events", "dbt/agg_events_hourly", "dbt/agg_events_daily", "dbt/dim_users"}
    assert dbt_full_refresh_job.config["ops"]["streamflow_dbt"]["config"] == {
        "full_refresh": True}
    assert notifications.key not in job.asset_layer.selected_asset_keys
