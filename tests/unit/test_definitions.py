import subprocess
import sys

import dagster as dg

from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_env


def test_definitions_load_with_every_asset():
    from streamflow_defs.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == {
        "kafka/user_events", "kafka/analytics", "kafka/notifications", "kafka/dead_letter_topic",
        "raw/events", "raw/dead_letters", "notifications", "event_windows", "dlq_report",
        "dbt/stg_events", "dbt/stg_notifications", "dbt/stg_dead_letters",
        "dbt/stg_event_windows", "dbt/fct_events", "dbt/agg_events_hourly",
        "dbt/agg_events_daily", "dbt/dim_users", "dbt/fct_dead_letters_daily",
        "archive/events", "archive/dead_letters", "archive/notifications",
        "archive/fct_events", "streamflow/dropped_periods"}
    assert isinstance(defs, dg.Definitions)
    defs.resolve_job_def("microbatch")
    assert {job.name for job in defs.resolve_all_job_defs()} == {
        "__ASSET_JOB", "microbatch", "checks", "dlq_replay", "dagster_retention",
        "reprocess", "dbt_full_refresh", "archive_periods", "lifecycle", "lifecycle_checks"}
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"checks_schedule", "dagster_retention_schedule",
                              "archive_periods_schedule", "lifecycle_schedule",
                              "lifecycle_checks_schedule"}
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    sensors = {s.name: s for s in defs.sensors}
    assert {"new_events_sensor", "kafka_topics_sensor", "landing_sensor",
            "dbt_refresh_after_reprocess", "dbt_automation"} <= set(sensors)
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())


def test_dbt_env_from_a_unix_socket_url():
    env = dbt_env("postgresql://postgres:@/streamflow?host=/tmp/sock")
    assert env["DBT_PG_HOST"] == "/tmp/sock"
    assert env["DBT_PG_DBNAME"] == "streamflow"
    assert env["DBT_PG_USER"] == "postgres"


def test_dbt_env_from_a_tcp_url():
    env = dbt_env("postgresql://u:secret@db.example:6543/warehouse")
    assert (env["DBT_PG_HOST"], env["DBT_PG_PORT"], env["DBT_PG_PASSWORD"]) == (
        "db.example", "6543", "secret")


def test_dbt_parse_accepts_the_project(tmp_path):
    env = dbt_env("postgresql://postgres:@/streamflow?host=/tmp/nowhere")
    result = subprocess.run(
        [sys.executable, "-m", "dbt.cli.main", "parse", "--no-version-check",
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "manifest.json").exists()
