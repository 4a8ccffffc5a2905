"""PostgreSQL for Dagster, built on streamflow's own connection code."""

from __future__ import annotations

import dagster as dg
import psycopg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from streamflow.db.engine import connect_admin, make_engine


class PostgresResource(dg.ConfigurableResource):
    """``database_url`` comes from ``DATABASE_URL`` (set by ``streamflow up`` for Dagster)."""

    database_url: str
    _engine: Engine | None = PrivateAttr(default=None)

    def engine(self) -> Engine:
        # Connect lazily: loading the Definitions must not need a database.
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def connect(self) -> psycopg.Connection:
        """An autocommit connection for the micro-batch steps (each step is its own
        ``conn.transaction()``); the caller closes it."""
        return connect_admin(self.database_url, "streamflow-dagster")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
