"""The archive: time partitions as Parquet files under STREAMFLOW_ARCHIVE_URL, verified
against PostgreSQL before a drop, read back by DuckDB or restored (docs/ARCHITECTURE.md,
"The archive")."""

from streamflow.archive.checksum import Checksum, archive_checksum, db_checksum, id_hash
from streamflow.archive.export import Archived, archive_period
from streamflow.archive.layout import ARCHIVED_TABLES, open_location

__all__ = ["ARCHIVED_TABLES", "Archived", "Checksum", "archive_checksum", "archive_period",
           "db_checksum", "id_hash", "open_location"]
