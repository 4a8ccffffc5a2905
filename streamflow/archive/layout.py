"""Where an archived period lives (docs/ARCHITECTURE.md, "The archive"):

    <archive url>/<schema.table>/period=<Period.key>/data.parquet

one folder per table, Hive-style by period inside it, one file per period. The URL is any
fsspec URL (a local path, ``file://``, ``s3://`` with s3fs installed ...).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import fsspec
from fsspec.core import url_to_fs

from streamflow.db.partitions import TABLES

DATA_FILE = "data.parquet"
PERIOD_PREFIX = "period="
# Every archived table: its short name (a DuckDB view, `streamflow archive --table`) and
# its folder, schema.table.
ARCHIVED_TABLES: dict[str, str] = {spec.short: spec.name for spec in TABLES}


@dataclass(frozen=True)
class Location:
    """An archive URL opened: the filesystem and the root path within it."""

    fs: fsspec.AbstractFileSystem
    root: str

    @property
    def local(self) -> bool:
        return "file" in _protocols(self.fs)

    def table_folder(self, table: str) -> str:
        return f"{self.root}/{table}"

    def period_folder(self, table: str, period_key: str) -> str:
        return f"{self.table_folder(table)}/{PERIOD_PREFIX}{period_key}"

    def data_path(self, table: str, period_key: str) -> str:
        return f"{self.period_folder(table, period_key)}/{DATA_FILE}"

    def temp_path(self, table: str, period_key: str) -> str:
        """A hidden name beside ``data_path``: written there, then moved over it (a local
        rename is atomic; on an object store the final object is put whole). DuckDB's
        ``*.parquet`` glob never matches it."""
        return f"{self.period_folder(table, period_key)}/.{DATA_FILE}.{uuid.uuid4().hex}.tmp"

    def url(self, path: str) -> str:
        """``path`` as DuckDB is given it: a plain path when local, else with its protocol
        (the fsspec filesystem registered with DuckDB then serves it)."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def period_keys(self, table: str) -> list[str]:
        """The periods of ``table`` holding a data file, oldest first (keys sort by time)."""
        folder = self.table_folder(table)
        if not self.fs.isdir(folder):
            return []
        keys = []
        for entry in self.fs.ls(folder, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(PERIOD_PREFIX) and self.fs.exists(f"{entry}/{DATA_FILE}"):
                keys.append(name.removeprefix(PERIOD_PREFIX))
        return sorted(keys)

    def tables(self) -> list[str]:
        """The table folders present, in ARCHIVED_TABLES' order."""
        return [name for name in ARCHIVED_TABLES.values()
                if self.fs.isdir(self.table_folder(name))]


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def open_location(url: str) -> Location:
    fs, root = url_to_fs(url)
    return Location(fs, root.rstrip("/") or "/")
