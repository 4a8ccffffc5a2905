"""Run retention (assets/retention.py) on a real SQLite Dagster instance in a temp directory, and
the tick retention in the instance config that `streamflow up` and docker-compose use."""

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.retention import (
    AUTOMATION_TAG,
    JOB_NAME,
    RetentionPolicy,
    cron_for,
    purge_old_events,
    purge_old_runs,
    purge_runs,
    retention_job,
    retention_schedule_for,
)
from streamflow.settings import load_settings
from streamflow.supervisor import write_dagster_yaml

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = dg.DagsterRunStatus
IN_PROGRESS = [S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED, S.CANCELING]
POLICY = RetentionPolicy(jobs=("microbatch", "checks"), success_age=timedelta(hours=24),
                         failure_age=timedelta(days=7))


def _private(module: str, name: str):
    """A Dagster internal this code or test leans on; fails by name when an upgrade moves it."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"dagster {dg.__version__} moved {module}.{name}: update the code that "
                    f"uses it ({exc})")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:  # SQLite storage in a temp directory
        yield instance


def add_run(instance, status, age: timedelta, job: str = "microbatch",
            tags: dict[str, str] | None = None) -> str:
    """A run created ``age`` before NOW (`add_historical_run` sets the creation time)."""
    run_id = str(uuid.uuid4())
    instance.run_storage.add_historical_run(
        dg.DagsterRun(job_name=job, run_id=run_id, status=status, tags=tags or {},
                      remote_job_origin=_origin(job)), NOW - age)
    return run_id


def _origin(job: str):
    """Where a launched run came from (Dagster requires one for a QUEUED run)."""
    remote = "dagster._core.remote_origin"
    location = _private(remote, "GrpcServerCodeLocationOrigin")(
        host="127.0.0.1", port=4000, location_name="streamflow_defs.definitions")
    repository = _private(remote, "RemoteRepositoryOrigin")(location, "__repository__")
    return _private(remote, "RemoteJobOrigin")(repository, job)


def run_ids(instance) -> set[str]:
    return {record.dagster_run.run_id for record in instance.get_run_records()}


def test_old_automation_runs_go_by_their_tag_and_a_hand_launched_one_stays(instance):
    """The dbt automation's runs (Dagster's implicit asset job, tagged by the automation) go
    by age like the micro-batch's, the newest success kept; a materialization launched by
    hand in the same job has no such tag and stays."""
    automation = dict([AUTOMATION_TAG])
    old = [add_run(instance, S.SUCCESS, timedelta(hours=h), job="__ASSET_JOB", tags=automation)
           for h in (30, 40)]
    newest = add_run(instance, S.SUCCESS, timedelta(hours=26), job="__ASSET_JOB",
                     tags=automation)
    by_hand = add_run(instance, S.SUCCESS, timedelta(hours=50), job="__ASSET_JOB")

    result = purge_runs(instance, NOW, POLICY)

    assert not set(old) & run_ids(instance)
    assert {newest, by_hand} <= run_ids(instance)
    assert result.deleted == {("__ASSET_JOB", S.SUCCESS): 2}


def test_old_successful_runs_are_deleted_recent_ones_kept(instance):
    old = [add_run(instance, S.SUCCESS, timedelta(hours=h)) for h in (25, 48, 24 * 30)]
    recent = [add_run(instance, S.SUCCESS, timedelta(hours=h)) for h in (1, 23)]
    old_check = add_run(instance, S.SUCCESS, timedelta(hours=30), job="checks")
    recent_check = add_run(instance, S.SUCCESS, timedelta(minutes=1), job="checks")

    result = purge_runs(instance, NOW, POLICY)

    assert run_ids(instance) == {*recent, recent_check}
    assert old_check not in run_ids(instance) and not set(old) & run_ids(instance)
    assert result.deleted == {("microbatch", S.SUCCESS): 3, ("checks", S.SUCCESS): 1}
    assert result.total == 4 and not result.capped


def test_failed_and_canceled_runs_are_kept_until_their_longer_age(instance):
    add_run(instance, S.SUCCESS, timedelta(minutes=5))  # the newest success: kept anyway
    kept = [add_run(instance, S.FAILURE, timedelta(days=2)),
            add_run(instance, S.CANCELED, timedelta(days=6, hours=23))]
    gone = [add_run(instance, S.FAILURE, timedelta(days=8)),
            add_run(instance, S.CANCELED, timedelta(days=7, minutes=1))]

    result = purge_runs(instance, NOW, POLICY)

    assert set(kept) <= run_ids(instance) and not set(gone) & run_ids(instance)
    assert result.deleted == {("microbatch", S.FAILURE): 1, ("microbatch", S.CANCELED): 1}


@pytest.mark.parametrize("status", IN_PROGRESS)
def test_a_run_in_progress_is_never_deleted_however_old(instance, status):
    in_progress = add_run(instance, status, timedelta(days=400))
    add_run(instance, S.SUCCESS, timedelta(days=300))
    add_run(instance, S.SUCCESS, timedelta(hours=1))

    result = purge_runs(instance, NOW, POLICY)

    assert in_progress in run_ids(instance)
    assert instance.get_run_by_id(in_progress).status == status
    assert result.total == 1


def test_runs_of_other_jobs_are_untouched(instance):
    others = [add_run(instance, S.SUCCESS, timedelta(days=30), job="dlq_replay"),
              add_run(instance, S.FAILURE, timedelta(days=30), job="__ASSET_JOB")]
    add_run(instance, S.SUCCESS, timedelta(hours=1))

    assert purge_runs(instance, NOW, POLICY).total == 0
    assert set(others) <= run_ids(instance)


def test_each_jobs_newest_successful_run_is_kept_whatever_its_age(instance):
    # The stack was down for three days: every run is past its age.
    older = add_run(instance, S.SUCCESS, timedelta(days=4))
    newest = add_run(instance, S.SUCCESS, timedelta(days=3))
    failed_after = add_run(instance, S.FAILURE, timedelta(days=3) - timedelta(hours=1))

    purge_runs(instance, NOW, POLICY)

    assert run_ids(instance) == {newest, failed_after}
    assert older not in run_ids(instance)


def test_paging_deletes_everything_in_several_pages(instance):
    for i in range(10):
        add_run(instance, S.SUCCESS, timedelta(days=2, minutes=i))
    for i in range(4):
        add_run(instance, S.FAILURE, timedelta(days=10, minutes=i), job="checks")
    keep = add_run(instance, S.SUCCESS, timedelta(hours=1))

    result = purge_runs(instance, NOW, POLICY, page_size=3)

    assert run_ids(instance) == {keep}
    assert result.total == 14 and not result.capped
    assert result.pages == 4 + 2  # 3+3+3+1 micro-batch runs, 3+1 failed checks runs


def test_one_call_stops_at_max_runs_and_the_next_call_goes_on(instance):
    for i in range(7):
        add_run(instance, S.SUCCESS, timedelta(days=2, minutes=i))
    add_run(instance, S.SUCCESS, timedelta(hours=1))
    capped = RetentionPolicy(jobs=POLICY.jobs, max_runs=5)

    first = purge_runs(instance, NOW, capped, page_size=2)
    assert first.total == 5 and first.capped
    assert len(run_ids(instance)) == 3

    second = purge_runs(instance, NOW, capped, page_size=2)
    assert second.total == 2 and not second.capped
    assert len(run_ids(instance)) == 1


def test_oldest_runs_go_first_when_capped(instance):
    oldest = add_run(instance, S.SUCCESS, timedelta(days=9))
    newer = add_run(instance, S.SUCCESS, timedelta(days=2))
    add_run(instance, S.SUCCESS, timedelta(hours=1))

    purge_runs(instance, NOW, RetentionPolicy(jobs=POLICY.jobs, max_runs=1))

    assert oldest not in run_ids(instance) and newer in run_ids(instance)


def test_now_without_a_timezone_is_refused(instance):
    with pytest.raises(ValueError, match="timezone"):
        purge_runs(instance, datetime(2026, 3, 1, 12, 0), POLICY)


@dg.op
def _say_hello(context):
    print("hello")  # captured as compute logs, as a micro-batch step's output is
    context.log.info("hello")


@dg.job(name="microbatch", executor_def=dg.in_process_executor)
def _fake_microbatch():
    _say_hello()


def test_a_deleted_run_leaves_no_event_log_file_and_no_compute_logs(instance):
    """delete_run alone leaves both behind on SQLite, ~180 KB a run."""
    sqlite_events = _private("dagster._core.storage.event_log.sqlite.sqlite_event_log",
                             "SqliteEventLogStorage")
    assert isinstance(instance.event_log_storage, sqlite_events)
    assert hasattr(sqlite_events, "path_for_shard"), (
        f"dagster {dg.__version__} moved SqliteEventLogStorage.path_for_shard, which "
        "assets/retention.py calls to remove a deleted run's event-log file")
    first = _fake_microbatch.execute_in_process(instance=instance).run_id
    second = _fake_microbatch.execute_in_process(instance=instance).run_id
    storage = instance.event_log_storage
    shard = Path(storage.path_for_shard(first))
    logs = Path(instance.root_directory) / "storage" / first
    assert storage.is_run_sharded and shard.exists() and (logs / "compute_logs").is_dir()

    result = purge_runs(instance, datetime.now(UTC) + timedelta(days=2), POLICY)

    assert result.deleted == {("microbatch", S.SUCCESS): 1}
    assert run_ids(instance) == {second}  # the newest success stays
    assert not shard.exists() and not logs.exists()
    assert Path(storage.path_for_shard(second)).exists()


def test_the_retention_job_deletes_with_its_launchpad_config(instance):
    now = datetime.now(UTC)
    old = [instance.run_storage.add_historical_run(
        dg.DagsterRun(job_name="microbatch", run_id=str(uuid.uuid4()), status=S.SUCCESS),
        now - timedelta(hours=3)).run_id for _ in range(3)]
    recent = instance.run_storage.add_historical_run(
        dg.DagsterRun(job_name="microbatch", run_id=str(uuid.uuid4()), status=S.SUCCESS),
        now - timedelta(minutes=30)).run_id

    result = retention_job.execute_in_process(instance=instance, run_config={
        "ops": {purge_old_runs.name: {"config": {"success_hours": 2.0}}}})

    assert result.success
    assert not set(old) & run_ids(instance) and recent in run_ids(instance)
    outputs = {event.step_key: event.event_specific_data.metadata
               for event in result.all_events if event.event_type_value == "STEP_OUTPUT"}
    metadata = outputs[purge_old_runs.name]
    assert (metadata["deleted"].value, metadata["capped"].value) == (3, False)
    assert outputs[purge_old_events.name]["runless events"].value == 0  # none reported here
    assert JOB_NAME in RetentionPolicy().jobs  # its own hourly runs are purged too


def test_the_schedule_purges_by_the_settings_ages_and_often_enough_for_them(monkeypatch):
    """Hourly at the defaults; the lifecycle soak's 15-minute ages are purged every 5 minutes,
    or its storage would grow for the hour (docs/BENCHMARKS.md, lifecycle soak)."""
    monkeypatch.chdir(Path(__file__).parent)  # no .env from the checkout
    default = retention_schedule_for(load_settings())
    short = retention_schedule_for(load_settings(STREAMFLOW_DAGSTER_RUN_RETENTION="15m",
                                                 STREAMFLOW_DAGSTER_EVENT_RETENTION="30m"))

    assert default.cron_schedule == "7 * * * *"
    assert short.cron_schedule == "2-59/5 * * * *"
    ops = short.evaluate_tick(dg.build_schedule_context()).run_requests[0].run_config["ops"]
    assert ops[purge_old_runs.name]["config"]["success_hours"] == 0.25
    assert ops[purge_old_events.name]["config"]["event_days"] == pytest.approx(30 / 1440)
    assert [cron_for(timedelta(hours=h)) for h in (1, 2, 4, 6)] == [
        "2-59/15 * * * *", "2-59/30 * * * *", "7 * * * *", "7 * * * *"]


# Tick retention in the instance config that `streamflow up` and compose's `migrate` write
# (the same function: tests/unit/test_docker_compose.py).
TICKS = {"purge_after_days": {"skipped": 1, "success": 7, "failure": 7}}
RETENTION = {"schedule": TICKS, "sensor": TICKS}


def _written_yaml(tmp_path, monkeypatch, storage: str) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), DAGSTER_HOME=str(tmp_path / "dh"),
                             STREAMFLOW_DAGSTER_STORAGE=storage)
    return write_dagster_yaml(settings)


@pytest.mark.parametrize("storage", ["sqlite", "postgres"])
def test_the_local_dagster_yaml_purges_ticks(tmp_path, monkeypatch, storage):
    path = _written_yaml(tmp_path, monkeypatch, storage)
    assert yaml.safe_load(path.read_text())["retention"] == RETENTION
    # Dagster's own schema accepts it (validation only: no database is opened).
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/streamflow")
    instance_config = _private("dagster._core.instance.config", "dagster_instance_config")
    config, _ = instance_config(str(path.parent))
    assert config["retention"] == RETENTION


def test_the_local_instance_applies_the_tick_retention(tmp_path, monkeypatch):
    home = _written_yaml(tmp_path, monkeypatch, "sqlite").parent
    instigator = _private("dagster._core.definitions.run_request", "InstigatorType")
    tick = _private("dagster._core.scheduler.instigation", "TickStatus")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for kind in (instigator.SENSOR, instigator.SCHEDULE):
            assert instance.get_tick_retention_settings(kind) == {
                tick.SKIPPED: 1, tick.SUCCESS: 7, tick.FAILURE: 7,
                tick.STARTED: -1}  # an unfinished tick is never purged
