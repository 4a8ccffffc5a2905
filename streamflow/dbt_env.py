"""dbt's connection settings derived from DATABASE_URL (dbt-postgres has no URL field)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

# No internet here, and no telemetry wanted anywhere.
QUIET_ENV = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


def dbt_env(database_url: str) -> dict[str, str]:
    """DBT_PG_* variables for ``dbt_project/profiles.yml``.

    A unix-socket URL (``?host=/dir``, as the embedded server gives) becomes host=/dir:
    dbt-postgres hands it to libpq, which treats a directory as a socket path.
    """
    url = make_url(database_url)
    host = url.query.get("host") or url.host or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    return {
        **QUIET_ENV,
        "DBT_PG_HOST": host,
        "DBT_PG_PORT": str(url.port or 5432),
        "DBT_PG_USER": url.username or "postgres",
        "DBT_PG_PASSWORD": url.password or "",
        "DBT_PG_DBNAME": url.database or "postgres",
    }
