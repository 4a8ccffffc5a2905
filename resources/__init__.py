"""Dagster resources wrapping StreamFlow's Kafka and PostgreSQL access."""

from resources.kafka import KafkaResource
from resources.postgres import PostgresResource

__all__ = ["KafkaResource", "PostgresResource", "resource_defs"]


def resource_defs() -> dict:
    """Resources wired to the same environment variables the workers read."""
    import dagster as dg
    from dagster_dbt import DbtCliResource

    from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_executable
    from streamflow.settings import load_settings

    return {
        "postgres": PostgresResource(database_url=dg.EnvVar("DATABASE_URL")),
        "kafka": KafkaResource.from_settings(load_settings()),
        "dbt": DbtCliResource(project_dir=str(DBT_PROJECT_DIR),
                              profiles_dir=str(DBT_PROJECT_DIR),
                              dbt_executable=dbt_executable()),
    }
