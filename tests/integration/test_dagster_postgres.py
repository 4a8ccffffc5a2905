"""Dagster on PostgreSQL storage (STREAMFLOW_DAGSTER_STORAGE=postgres), as users run it.

In-process, the instance `streamflow up` prepares with that setting, in the data database (the
compose layout), serves the micro-batch sensor and records the run it asks for. Then
`streamflow up` with the setting: the daemon ticks the sensor and launches a run, both recorded
in PostgreSQL, never in SQLite files. (The lineage as the webserver shows it, on both storages:
test_dagster_webserver.py; compose's own commands, migrate among them, from the image:
test_compose_image.py.)
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import text

from assets import MICROBATCH_ASSETS, microbatch_job
from assets.event_retention import purge_events
from sensors.microbatch import new_events_sensor
from streamflow import supervisor
from streamflow.infra.processes import free_port
from streamflow.settings import load_settings
from streamflow_defs.postgres_storage import DRIVER
from tests.conftest import (
    create_topic,
    isolated_settings,
    scalar,
    wait_for,
    worker_env,
)
from tests.helpers.dagster_events import check_history, materialized, observed, seed
from tests.integration.microbatch_helpers import Scenario, evaluate_sensor, land

S = dg.DagsterRunStatus


@pytest.fixture(scope="module")
def postgres_instance(platform, tmp_path_factory):
    """The instance `streamflow up` prepares with STREAMFLOW_DAGSTER_STORAGE=postgres, its
    storage in the data database beside raw.events, as in docker-compose."""
    home = tmp_path_factory.mktemp("pg-dagster")
    settings = isolated_settings(home, DAGSTER_HOME=str(home / "dagster"),
                                 STREAMFLOW_DAGSTER_STORAGE="postgres")
    supervisor.prepare_dagster_instance(settings, platform.database_url)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", platform.database_url)  # dagster.yaml reads it
        with dg.DagsterInstance.from_config(str(settings.dagster_home_dir)) as instance:
            assert type(instance.run_storage).__module__.startswith("dagster_postgres")
            assert instance.event_log_storage.postgres_url.startswith(f"{DRIVER}:")
            yield instance


def test_the_sensor_reads_active_and_failed_runs_from_postgres(platform, resources, unique_name,
                                                               postgres_instance):
    """The sensor's run queries (status and tag filters) against dagster-postgres."""
    s = Scenario()
    land(platform, create_topic(platform, unique_name), [s.event("signup", 1, s.w0)])
    first = evaluate_sensor(postgres_instance, resources)
    assert isinstance(first, dg.RunRequest)
    added = [dg.DagsterRun(job_name=microbatch_job.name, status=S.FAILURE,
                           tags={**first.tags, "dagster/run_key": first.run_key})]
    try:
        postgres_instance.add_run(added[0])
        waiting = evaluate_sensor(postgres_instance, resources)
        assert isinstance(waiting, dg.SkipReason)
        assert "1 micro-batch run(s) from ingest_seq" in waiting.skip_message
        assert "next attempt in" in waiting.skip_message
        for _ in range(2):
            added.append(postgres_instance.add_run(
                dg.DagsterRun(job_name=microbatch_job.name, status=S.STARTED)))
        busy = evaluate_sensor(postgres_instance, resources)
        assert isinstance(busy, dg.SkipReason)
        assert busy.skip_message.startswith("2 micro-batch runs in progress")
    finally:
        for run in added:
            postgres_instance.delete_run(run.run_id)


def test_a_sensor_request_runs_the_microbatch_job_on_postgres_storage(
        platform, resources, engine, unique_name, postgres_instance):
    s = Scenario()
    land(platform, create_topic(platform, unique_name),
         [s.event("login", 1, s.w0, success=True), s.event("purchase", 2, s.w0,
                                                           amount_cents=700)])
    request = evaluate_sensor(postgres_instance, resources)
    assert isinstance(request, dg.RunRequest)
    job = dg.Definitions(assets=MICROBATCH_ASSETS, jobs=[microbatch_job],
                         resources=resources).resolve_job_def(microbatch_job.name)
    result = job.execute_in_process(run_config=request.run_config, instance=postgres_instance,
                                    tags={**request.tags, "dagster/run_key": request.run_key})
    assert result.success

    with engine.connect() as conn:  # Dagster's own tables, in the data database
        status = conn.execute(text("SELECT status FROM public.runs WHERE run_id = :id"),
                              {"id": result.run_id}).scalar_one()
        notified = conn.execute(text("SELECT count(*) FROM streamflow.notifications "
                                     "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
                                {"ids": s.ids}).scalar_one()
    assert (status, notified) == ("SUCCESS", 2)
    for asset in MICROBATCH_ASSETS:
        latest = postgres_instance.get_latest_materialization_event(asset.key)
        assert latest is not None and latest.run_id == result.run_id, asset.key
    [record] = postgres_instance.get_run_records(dg.RunsFilter(
        job_name=microbatch_job.name, tags={"dagster/run_key": request.run_key}))
    assert record.dagster_run.run_id == result.run_id
    after = evaluate_sensor(postgres_instance, resources)
    assert isinstance(after, dg.SkipReason) and "no new events" in after.skip_message


# -- `STREAMFLOW_DAGSTER_STORAGE=postgres streamflow up` --------------------------------------

def _streamflow(*args: str, env: dict[str, str], timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "streamflow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_up_with_postgres_storage_ticks_and_runs_in_postgres(platform, fresh_database,
                                                             tmp_path):
    """The whole worker set on the session's Kafka and a database of its own: the daemon's
    sensor ticks and the micro-batch run it launches are rows in PostgreSQL."""
    home = tmp_path / "home"
    env = worker_env(platform, STREAMFLOW_HOME=str(home), DATABASE_URL=fresh_database,
                     STREAMFLOW_DAGSTER_STORAGE="postgres", STREAMFLOW_DEMO_RATE="5",
                     **{name: str(free_port()) for name in (
                         "STREAMFLOW_DAGSTER_PORT", "STREAMFLOW_DAGSTER_CODE_PORT",
                         "STREAMFLOW_LIVE_PORT", "STREAMFLOW_METRICS_PORT")})
    logs = home / "logs"
    try:
        up = _streamflow("up", env=env)
        assert up.returncode == 0, up.stderr + up.stdout
        assert f"Dagster UI: http://127.0.0.1:{env['STREAMFLOW_DAGSTER_PORT']}" in up.stdout, (
            up.stdout)

        wait_for(lambda: scalar(
            fresh_database, "SELECT count(*) FROM public.job_ticks WHERE type = 'SENSOR' "
            "AND tick_body LIKE :name", name=f'%"{new_events_sensor.name}"%'), timeout_s=120,
            message=f"a tick of the micro-batch sensor in PostgreSQL (see {logs})")
        wait_for(lambda: scalar(
            fresh_database, "SELECT count(*) FROM public.runs WHERE pipeline_name = :job "
            "AND status = 'SUCCESS'", job=microbatch_job.name), timeout_s=180,
            message=f"a successful micro-batch run in PostgreSQL (see {logs})")
        dagster_home = load_settings(STREAMFLOW_HOME=str(home), DAGSTER_HOME=None
                                     ).dagster_home_dir
        assert not list(dagster_home.rglob("*.db"))  # no SQLite storage beside it

        down = _streamflow("down", env=env)
        assert down.returncode == 0, down.stderr
        assert "supervisor: stopped" in down.stdout, down.stdout
    finally:
        _streamflow("down", env=env)


def test_event_retention_on_postgres_storage(postgres_instance, unique_name):
    """assets/event_retention.py on dagster-postgres (one database, no shard files): the same
    account as on SQLite (tests/unit/test_event_retention.py), on events a year old so the
    shared instance's own events are never in reach."""
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    seeded = seed(postgres_instance, now, prefix=unique_name)
    result = purge_events(postgres_instance, now, timedelta(minutes=90))
    for key in seeded.topics:
        assert observed(postgres_instance, key) == [999, 970, 940]
    assert materialized(postgres_instance, seeded.landed) == [200]
    assert check_history(postgres_instance, seeded.check) == ["SUCCEEDED"] * 3
    assert result.check_executions == 4 and result.total_events >= 8 + 1 + 4
