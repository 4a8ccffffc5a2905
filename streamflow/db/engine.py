"""Connections to PostgreSQL: SQLAlchemy engines for the app, psycopg for admin work."""

from __future__ import annotations

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from streamflow.errors import DatabaseUnavailable


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg://`` (psycopg 3, not the psycopg2 default)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The plain libpq form of ``url`` (psycopg and dbt do not know SQLAlchemy driver names)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, **kwargs) -> Engine:
    # pool_pre_ping: a Postgres restart must not leave dead connections in the pool.
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, **kwargs)


def connect_admin(url: str, application_name: str = "streamflow") -> psycopg.Connection:
    """An autocommit connection (``conn.transaction()`` blocks are the transactions)."""
    try:
        return psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5,
                               application_name=application_name)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"PostgreSQL did not accept a connection: {exc}") from exc


def server_version(url: str) -> str:
    with connect_admin(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]
