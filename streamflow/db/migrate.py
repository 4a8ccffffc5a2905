"""Versioned schema migrations (Alembic), applied programmatically and idempotently."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from streamflow.db.engine import connect, make_engine

MIGRATIONS = Path(__file__).with_name("migrations")
# Two processes starting at once (e.g. `up` and a worker) must not both run a migration.
_LOCK_KEY = 0x5F5F_0001


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with connect(engine, url) as conn:
            return MigrationContext.configure(
                conn, opts={"version_table_schema": "public"}
            ).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str]:
    """Bring the database to ``revision``; returns (before, after). A no-op when current."""
    engine = make_engine(url)
    try:
        with connect(engine, url) as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            before = MigrationContext.configure(
                conn, opts={"version_table_schema": "public"}
            ).get_current_revision()
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return before, current_revision(url) or ""
    finally:
        engine.dispose()
