"""Dagster's storage in PostgreSQL (STREAMFLOW_DAGSTER_STORAGE=postgres): dagster-postgres, on
the driver it is written for.

SQLAlchemy 2.1 connects a plain ``postgresql://`` URL, as DATABASE_URL is, with psycopg 3. Its
server-side parameters cannot carry the payload of dagster-postgres's ``NOTIFY run_events,
:notify_id``, so every event a run wrote failed (``syntax error at or near "$1"``) and no run
could finish. dagster-postgres depends on psycopg2 and binds on the client with it: this
storage gives it DATABASE_URL with that driver named. dagster.yaml names this class
(``storage: custom:``, written by ``streamflow.supervisor.write_dagster_yaml``).
"""

from __future__ import annotations

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import pg_url_from_config
from sqlalchemy.engine import make_url

DRIVER = "postgresql+psycopg2"


def psycopg2_url(url: str) -> str:
    """``url`` with psycopg2 as its driver (whatever it named), all else kept."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        parsed = parsed.set(drivername=DRIVER)
    return parsed.render_as_string(hide_password=False)


class PostgresStorage(DagsterPostgresStorage):
    """DagsterPostgresStorage, configured as it is (postgres_url or postgres_db), on psycopg2."""

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        config = {k: v for k, v in config_value.items() if k != "postgres_db"}
        config["postgres_url"] = psycopg2_url(pg_url_from_config(config_value))
        return super().from_config_value(inst_data, config)
