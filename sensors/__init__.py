"""Dagster sensors (watermark polling only: a sensor never consumes Kafka)."""

__all__: list[str] = []
