"""The dbt manifest is prepared by an explicit step, again when the project changed; dbt runs in
a process of its own priority and environment (streamflow/dbt_env.py)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from streamflow import dbt_env
from streamflow.dbt_env import DBT_NICENESS, DBT_PROJECT_DIR
from streamflow.errors import DbtSettingUnsupported


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


def test_dbt_gets_every_tls_and_authentication_setting_of_database_url():
    url = ("postgresql://u:pw@db.example:6000/wh?sslmode=verify-full&sslrootcert=/ca.pem"
           "&sslcert=/c.pem&sslkey=/k.pem&sslcrl=/crl.pem&sslcrldir=/crl&sslsni=1"
           "&ssl_min_protocol_version=TLSv1.3&channel_binding=require"
           "&require_auth=scram-sha-256&gssencmode=disable&application_name=x")
    env = dbt_env.dbt_process_env({"DATABASE_URL": url, "PGSSLMODE": "disable"})
    assert {k: v for k, v in env.items() if k.startswith("PG")} == {
        "PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/ca.pem", "PGSSLCERT": "/c.pem",
        "PGSSLKEY": "/k.pem", "PGSSLCRL": "/crl.pem", "PGSSLCRLDIR": "/crl", "PGSSLSNI": "1",
        "PGSSLMINPROTOCOLVERSION": "TLSv1.3", "PGCHANNELBINDING": "require",
        "PGREQUIREAUTH": "scram-sha-256", "PGGSSENCMODE": "disable"}
    assert (env["DBT_PG_HOST"], env["DBT_PG_PORT"]) == ("db.example", "6000")
    # A URL without them leaves libpq's own variables of the caller as they are, as for
    # every other StreamFlow process.
    plain = dbt_env.dbt_process_env({"DATABASE_URL": "postgresql://u@db/wh",
                                     "PGSSLMODE": "require"})
    assert plain["PGSSLMODE"] == "require"


def test_each_variable_is_the_one_libpq_reads_for_its_setting():
    from psycopg import pq

    libpq = {o.keyword.decode(): (o.envvar or b"").decode() for o in pq.Conninfo.get_defaults()}
    assert {name: libpq.get(name) for name in dbt_env.LIBPQ_ENV} == dbt_env.LIBPQ_ENV
    # Every TLS setting libpq has reaches dbt, or is refused (sslpassword has no variable).
    tls = {name for name in libpq if name.startswith("ssl") and name != "sslkeylogfile"}
    assert tls <= set(dbt_env.LIBPQ_ENV) | {"sslpassword"}


def test_a_setting_dbt_cannot_be_given_is_refused_in_one_line(tmp_path):
    with pytest.raises(DbtSettingUnsupported, match="sslpassword"):
        dbt_env.dbt_env("postgresql://u@db/wh?sslkey=/k.pem&sslpassword=s3cret")
    result = subprocess.run(
        [sys.executable, "-c", "from streamflow import dbt_env; dbt_env.run_dbt()"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.defpath, "DATABASE_URL": "postgresql://u@db/wh?sslpassword=s3cret"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "streamflow-dbt: DATABASE_URL sets sslpassword, which dbt-postgres cannot pass on: "
        "give dbt a client key without a passphrase"]


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
