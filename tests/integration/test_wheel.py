"""The built wheel works without the checkout: installed into a fresh venv with the dependencies
it declares (pinned by requirements.lock, taken from uv's cache), it migrates a fresh database
and loads the Dagster definitions from a working directory outside the repository."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from streamflow import dbt_env

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], **kwargs) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{cmd}: {(result.stdout + result.stderr)[-3000:]}"
    return result.stdout


def test_the_wheel_migrates_and_loads_the_definitions(tmp_path, fresh_database):
    dbt_env.prepare_manifest()  # the build step the wheel needs (`make wheel` runs it too)
    run(["uv", "build", "--quiet", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)])
    (wheel,) = (tmp_path / "dist").glob("streamflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"streamflow/dbt_project/dbt_project.yml", "streamflow/dbt_project/target/manifest.json",
            "streamflow/db/migrations/script.py.mako", "streamflow/db/migrations/env.py",
            "streamflow/infra/pom.xml"} <= names
    assert not any(n.startswith("streamflow/dbt_project/logs/") for n in names)

    venv = tmp_path / "venv"
    run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)])
    # The wheel's declared dependencies (so a missing one fails here), at the locked versions.
    run(["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "--constraint", str(ROOT / "requirements.lock"), str(wheel)])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {"PATH": f"{venv / 'bin'}:{os.defpath}", "HOME": str(tmp_path),
           "DATABASE_URL": fresh_database, "STREAMFLOW_HOME": str(tmp_path / "home"),
           "DO_NOT_TRACK": "1"}
    migrated = run([str(venv / "bin" / "streamflow"), "db", "migrate"], cwd=outside, env=env)
    assert "schema at revision" in migrated

    check = """
import assets, streamflow
from streamflow.dbt_env import DBT_PROJECT_DIR
from streamflow_defs.definitions import defs
keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
print(streamflow.__file__, assets.__file__, DBT_PROJECT_DIR, "dbt/fct_events" in keys, len(keys))
"""
    loaded = run([str(venv / "bin" / "python"), "-c", check], cwd=outside, env=env).split()
    site = str(venv)
    assert all(path.startswith(site) for path in loaded[:3]), loaded  # nothing from the checkout
    assert loaded[3] == "True" and int(loaded[4]) >= 18, loaded
    assert "dbt" in run([str(venv / "bin" / "streamflow-dbt"), "--version"], cwd=outside, env=env)
