"""Alembic environment: runs on the connection ``streamflow.db.migrate`` hands over."""

from alembic import context

from streamflow.db.migrate import VERSION_OPTS

connection = context.config.attributes["connection"]
context.configure(connection=connection, **VERSION_OPTS)
with context.begin_transaction():
    context.run_migrations()
