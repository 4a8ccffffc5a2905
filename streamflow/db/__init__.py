"""PostgreSQL access: engines, table definitions, schema migrations and writers."""
