"""PostgreSQL for Dagster: a SQLAlchemy engine built by streamflow's own engine factory."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from streamflow.db.engine import make_engine


class PostgresResource(dg.ConfigurableResource):
    """``database_url`` comes from ``DATABASE_URL`` (set by ``streamflow up`` for Dagster)."""

    database_url: str
    _engine: Engine | None = PrivateAttr(default=None)

    def engine(self) -> Engine:
        # Connect lazily: loading the Definitions must not need a database.
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
