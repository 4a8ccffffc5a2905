"""Micro-batch steps Dagster runs over what the sink landed (no Dagster imports here).

Each step keeps its own processed watermark in streamflow.watermarks and is idempotent:
running it again over the same ingest-sequence range leaves the tables as they were.
``reprocess`` recomputes a processed range on demand (the `reprocess` job).
"""
