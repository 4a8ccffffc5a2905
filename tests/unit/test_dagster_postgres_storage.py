"""Dagster's PostgreSQL storage on psycopg2 (streamflow_defs/postgres_storage.py), without a
database: the URL it is given, the dagster.yaml that names it, the internals it leans on."""

import importlib

import pytest
from dagster_postgres import DagsterPostgresStorage
from sqlalchemy.engine import make_url

from streamflow.supervisor import POSTGRES_STORAGE, write_dagster_yaml
from streamflow_defs.postgres_storage import psycopg2_url
from tests.conftest import isolated_settings


@pytest.mark.parametrize("url", [
    "postgresql://u:p%40ss@db:5432/streamflow",
    "postgresql+psycopg://u:p@db/streamflow",
    "postgresql://postgres:@/streamflow?host=/tmp/pg/data",  # the embedded server's socket
])
def test_the_storage_url_names_psycopg2_and_keeps_the_rest(url):
    given, used = make_url(url), make_url(psycopg2_url(url))
    assert used.drivername == "postgresql+psycopg2"
    assert used.set(drivername=given.drivername) == given  # password and query included


def test_the_postgres_instance_config_names_the_storage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    home = tmp_path / "dagster"
    write_dagster_yaml(isolated_settings(tmp_path, DAGSTER_HOME=str(home),
                                         STREAMFLOW_DAGSTER_STORAGE="postgres"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/streamflow")
    from dagster._core.instance.ref import InstanceRef  # private: the parsed dagster.yaml

    ref = InstanceRef.from_dir(str(home))
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == POSTGRES_STORAGE
    storage = getattr(importlib.import_module(POSTGRES_STORAGE[0]), POSTGRES_STORAGE[1])
    assert issubclass(storage, DagsterPostgresStorage)


def test_the_dagster_postgres_internals_it_uses_are_there():
    """An ImportError or a failure here: dagster-postgres moved what postgres_storage.py uses."""
    from dagster_postgres.utils import pg_url_from_config

    assert pg_url_from_config({"postgres_url": "postgresql://db/x"}) == "postgresql://db/x"
    assert "postgres_url" in DagsterPostgresStorage.config_type()
