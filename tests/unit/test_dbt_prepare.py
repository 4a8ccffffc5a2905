"""The dbt manifest is prepared by an explicit step, again when the project changed; dbt runs in
a process of its own priority and environment (streamflow/dbt_env.py)."""

import os
import shutil
import subprocess
import sys
import time

from streamflow import dbt_env
from streamflow.dbt_env import DBT_NICENESS, DBT_PROJECT_DIR


def _project_copy(tmp_path):
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    return copy


def test_the_manifest_is_parsed_again_once_a_model_changes(tmp_path):
    project = _project_copy(tmp_path)
    assert dbt_env.manifest_is_stale(project)
    assert dbt_env.prepare_manifest(project) is True
    assert dbt_env.prepare_manifest(project) is False  # fresh: no dbt parse
    earlier = time.time() - 60  # the manifest of a parse before the model was edited
    os.utime(dbt_env.manifest_path(project), (earlier, earlier))
    next((project / "models").rglob("*.sql")).touch()
    assert dbt_env.manifest_is_stale(project)
    assert dbt_env.prepare_manifest(project) is True
    assert not dbt_env.manifest_is_stale(project)


def test_the_project_is_found_in_a_checkout_and_in_a_wheel(tmp_path):
    checkout = tmp_path / "checkout"
    (checkout / "streamflow").mkdir(parents=True)
    (checkout / "dbt_project").mkdir()
    assert dbt_env.dbt_project_dir(checkout / "streamflow") == checkout / "dbt_project"
    installed = tmp_path / "site-packages" / "streamflow"
    (installed / "dbt_project").mkdir(parents=True)
    (installed / "dbt_project" / "dbt_project.yml").write_text("name: streamflow\n")
    assert dbt_env.dbt_project_dir(installed) == installed / "dbt_project"


def test_the_wheel_ships_the_manifest_but_no_logs_or_run_targets(tmp_path):
    source = tmp_path / "src"
    for path in ("models/a.sql", "logs/dbt.log", "target/manifest.json",
                 "target/partial_parse.msgpack", "target/abc123/run_results.json"):
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text("x")
    shutil.copytree(source, tmp_path / "out", ignore=dbt_env.not_shipped)
    shipped = {p.relative_to(tmp_path / "out").as_posix()
               for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert shipped == {"models/a.sql", "target/manifest.json"}


def test_dbt_env_comes_from_database_url_and_keeps_a_chosen_selection():
    env = dbt_env.dbt_process_env({"DATABASE_URL": "postgresql://u:pw@db:6000/wh", "X": "1"})
    assert (env["DBT_PG_HOST"], env["DBT_PG_PORT"], env["DBT_PG_DBNAME"], env["X"]) == (
        "db", "6000", "wh", "1")
    assert env["DBT_INDIRECT_SELECTION"] == "buildable"
    assert env["DO_NOT_TRACK"] == "1"
    chosen = dbt_env.dbt_process_env({"DBT_INDIRECT_SELECTION": "empty"})
    assert chosen["DBT_INDIRECT_SELECTION"] == "empty"


def test_streamflow_dbt_runs_dbt_niced_with_its_environment(tmp_path):
    fake = tmp_path / "dbt"
    fake.write_text('#!/bin/sh\necho "$(nice) $DBT_PG_HOST $DBT_INDIRECT_SELECTION $*"\n')
    fake.chmod(0o755)
    code = ("import sys; from streamflow import dbt_env; "
            f"dbt_env.real_dbt = lambda: {str(fake)!r}; "
            "sys.argv = ['streamflow-dbt', 'build', '--quiet']; dbt_env.run_dbt()")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"PATH": os.defpath, "DATABASE_URL": "postgresql://postgres:@/s?host=/tmp/sock"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(DBT_NICENESS), "/tmp/sock", "buildable", "build",
                                     "--quiet"]


def test_the_dbt_asset_leaves_priority_and_environment_to_the_dbt_process():
    from assets import dbt as dbt_assets_module

    source = open(dbt_assets_module.__file__).read()
    assert "os.nice" not in source and "os.environ" not in source
