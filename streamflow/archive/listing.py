"""What the archive holds: per table and period, rows (from the Parquet footer) and bytes."""

from __future__ import annotations

import pyarrow.parquet as pq

from streamflow.archive.export import Archived
from streamflow.archive.layout import open_location


def list_archive(url: str, table: str | None = None) -> list[Archived]:
    """Every archived period (of ``table``, schema.table, when given), by table then period.
    Reads only each file's footer."""
    location = open_location(url)
    found = []
    for name in location.tables():
        if table is not None and name != table:
            continue
        for key in location.period_keys(name):
            path = location.data_path(name, key)
            with location.fs.open(path, "rb") as file:
                rows = pq.ParquetFile(file).metadata.num_rows
            found.append(Archived(name, key, rows, location.fs.size(path), path))
    return found
