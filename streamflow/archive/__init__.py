"""The archive: time partitions as Parquet files under STREAMFLOW_ARCHIVE_URL, verified
against PostgreSQL before a drop, read back by DuckDB or restored (docs/ARCHITECTURE.md,
"The archive").

The public names are imported on first use: importing a submodule (the CLI's
``streamflow.archive.commands``) must not load pyarrow and DuckDB for every command.
"""

from __future__ import annotations

from importlib import import_module

_HOMES = {
    "Checksum": "checksum", "archive_checksum": "checksum", "db_checksum": "checksum",
    "id_hash": "checksum",
    "Archived": "export", "archive_period": "export",
    "ARCHIVED_TABLES": "layout", "open_location": "layout",
    "list_archive": "listing",
    "QueryResult": "querying", "query": "querying",
    "PeriodRestored": "restoring", "Restored": "restoring", "restore": "restoring",
    "Verified": "verification", "verify": "verification",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
