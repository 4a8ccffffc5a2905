"""An archived period checked against PostgreSQL before its rows are dropped: the same row
count and id checksum (streamflow.archive.checksum) on both sides."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from streamflow.archive.checksum import Checksum, archive_checksum, db_checksum
from streamflow.db.partitions import Partitioned, Period


@dataclass(frozen=True)
class Verified:
    ok: bool
    db: Checksum
    archive: Checksum | None  # None: no archived file
    reason: str               # why not ok ("" when ok)


def verify(conn: psycopg.Connection, spec: Partitioned, period: Period, url: str,
           relation: str | None = None) -> Verified:
    """Does the archived file of ``period`` hold exactly the rows of ``relation`` (the
    period's partition table, attached or detached; default: the parent's rows of the
    period)? The archive's side is read back from the file, not from its metadata."""
    db = db_checksum(conn, spec, period, relation=relation)
    archived = archive_checksum(url, spec, period)
    if archived is None:
        reason = f"no archived file of {spec.name} {period.key}"
    elif archived.rows != db.rows:
        reason = (f"{spec.name} {period.key}: {archived.rows} rows archived, "
                  f"{db.rows} in PostgreSQL")
    elif archived.sum != db.sum:
        reason = f"{spec.name} {period.key}: the archived ids differ from PostgreSQL's"
    else:
        reason = ""
    return Verified(not reason, db, archived, reason)
