"""Dagster assets: the Kafka topics as external assets, micro-batch assets and dbt models."""

from assets.topics import topic_assets

__all__ = ["topic_assets"]
