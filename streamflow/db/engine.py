"""Connections to PostgreSQL: SQLAlchemy engines for the app, psycopg for admin work."""

from __future__ import annotations

import re

import psycopg
import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import make_url

from streamflow.errors import DatabaseRefused, DatabaseUnavailable

# libpq's words for a server that answered and said no: retrying cannot help. (A restart's
# "the database system is starting up" is also a FATAL answer, but goes away by itself.)
# Connection errors carry no SQLSTATE in psycopg, so the text is all there is; a server
# answering in another language is treated as unavailable, which only means waiting longer.
_REFUSALS = ("password authentication failed", "no password supplied", "does not exist",
             "no pg_hba.conf entry", "authentication failed", "permission denied")
# ``//user:password@``: found this way in a URL SQLAlchemy cannot parse, to hide it all the same.
_USERINFO = re.compile(r"(//[^:/@]*:)([^/]*)@")


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


def _password(url: str) -> str | None:
    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - a Kafka address, or a URL SQLAlchemy cannot parse
        match = _USERINFO.search(url)
        return match.group(2) if match else None


def redacted(url: str) -> str:
    """``url`` with its password shown as ``***``: how a database URL is ever printed."""
    if not _password(url):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - the password was found without SQLAlchemy
        return _USERINFO.sub(r"\1***@", url)


def connection_error(exc: Exception, url: str) -> DatabaseUnavailable:
    """One line for a failed connection: which server, refused or unreachable, and why,
    with the password never in it (libpq does not print it; the scrub is a second guard)."""
    reason = " ".join(str(exc).split())
    if password := _password(url):
        reason = reason.replace(password, "***")
    if any(words in reason for words in _REFUSALS):
        return DatabaseRefused(f"PostgreSQL at {redacted(url)} refused the connection: {reason}")
    return DatabaseUnavailable(f"PostgreSQL at {redacted(url)} did not accept a connection: "
                               f"{reason}")


def make_engine(url: str, **kwargs) -> Engine:
    # pool_pre_ping: a Postgres restart must not leave dead connections in the pool.
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, **kwargs)


def connect_admin(url: str, application_name: str = "streamflow") -> psycopg.Connection:
    """An autocommit connection (``conn.transaction()`` blocks are the transactions)."""
    try:
        return psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=5,
                               application_name=application_name)
    except psycopg.OperationalError as exc:
        raise connection_error(exc, url) from exc


def connect(engine: Engine, url: str) -> Connection:
    """``engine.connect()``; a failed connection is ``DatabaseUnavailable`` (one line), while
    errors after connecting stay what they are."""
    try:
        return engine.connect()
    except sqlalchemy.exc.OperationalError as exc:
        raise connection_error(exc.orig, url) from exc


def server_version(url: str) -> str:
    with connect_admin(url) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def require_credentials(url: str) -> None:
    """Raise ``DatabaseRefused`` when the server refuses ``url`` (wrong password, no such role
    or database). A server that does not answer yet is no error here: a long-running worker
    waits for it (docs/RELIABILITY.md)."""
    try:
        connect_admin(url).close()
    except DatabaseRefused:
        raise
    except DatabaseUnavailable:
        pass
