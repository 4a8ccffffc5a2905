"""DuckDB over the archive, in process: a connection that can read the archive's URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from streamflow.archive.layout import Location


@contextmanager
def connect(location: Location) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    try:
        if not location.local:
            # DuckDB reads any fsspec filesystem it is given (s3fs for s3:// ...).
            con.register_filesystem(location.fs)
        yield con
    finally:
        con.close()

