"""dbt's connection settings derived from DATABASE_URL (dbt-postgres has no URL field)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def dbt_executable() -> str:
    """The dbt installed next to this Python (a venv is often not on PATH)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def ensure_manifest(target_dir: Path | None = None) -> Path:
    """`dbt parse` once when the manifest is missing (no database needed); returns its path."""
    target = target_dir or DBT_PROJECT_DIR / "target"
    manifest = target / "manifest.json"
    if not manifest.exists():
        env = {"PATH": os.defpath, **QUIET_ENV, "HOME": str(Path.home())}
        result = subprocess.run(  # noqa: S603 - fixed command
            [dbt_executable(), "parse", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
             "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(target)],
            env=env, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 or not manifest.exists():
            raise RuntimeError(f"dbt parse failed: {(result.stdout + result.stderr)[-1500:]}")
    return manifest
