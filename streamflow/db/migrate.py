"""Versioned schema migrations (Alembic), applied programmatically and idempotently."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from streamflow.db import partitions
from streamflow.db.engine import connect, make_engine
from streamflow.settings import load_settings

MIGRATIONS = Path(__file__).with_name("migrations")
# Two processes starting at once (e.g. `up` and a worker) must not both run a migration.
_LOCK_KEY = 0x5F5F_0001
# StreamFlow's own Alembic version table. Alembic's default, public.alembic_version, is also
# where dagster-postgres keeps its schema version when Dagster's storage shares the database:
# each then found the other's revision there ("Can't locate revision identified by '0004'").
VERSION_TABLE = "streamflow_alembic_version"
VERSION_OPTS = {"version_table": VERSION_TABLE, "version_table_schema": "public"}


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
            return MigrationContext.configure(conn, opts=VERSION_OPTS).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head", *,
            partition_interval: timedelta | None = None) -> tuple[str | None, str]:
    """Bring the database to ``revision``; returns (before, after). A no-op when current.
    At head, the time partitions are made ahead (STREAMFLOW_PARTITION_INTERVAL unless
    ``partition_interval``; streamflow.db.partitions)."""
    engine = make_engine(url)
    try:
        with connect(engine, url) as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            _adopt_legacy_version(conn)
            before = MigrationContext.configure(conn, opts=VERSION_OPTS).get_current_revision()
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        after = current_revision(url) or ""
        if revision == "head":
            if partition_interval is None:
                partition_interval = load_settings().partition_period
            partitions.ensure_all(url, partition_interval)
        return before, after
    finally:
        engine.dispose()


def _adopt_legacy_version(conn) -> None:
    """A database migrated before VERSION_TABLE existed has StreamFlow's revision in
    public.alembic_version: move it to VERSION_TABLE (leaving that table to Dagster)."""
    present = conn.execute(text(
        "SELECT to_regclass('public.alembic_version') IS NOT NULL, "
        "to_regclass(:ours) IS NOT NULL"), {"ours": f"public.{VERSION_TABLE}"}).one()
    if not present[0] or present[1]:
        return
    scripts = ScriptDirectory.from_config(_config())
    ours = {rev.revision for rev in scripts.walk_revisions()}
    legacy = [v for (v,) in conn.execute(text("SELECT version_num FROM public.alembic_version"))
              if v in ours]
    if not legacy:
        return  # Dagster's (or nobody's): not ours to move
    MigrationContext.configure(conn, opts=VERSION_OPTS).stamp(scripts, legacy[0])
    conn.execute(text("DELETE FROM public.alembic_version WHERE version_num = :v"),
                 {"v": legacy[0]})
    if not conn.execute(text("SELECT count(*) FROM public.alembic_version")).scalar_one():
        conn.execute(text("DROP TABLE public.alembic_version"))
