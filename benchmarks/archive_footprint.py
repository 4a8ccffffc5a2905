"""Bytes per event in the archive (docs/ARCHITECTURE.md, "The archive"; target <= 80 B):
N demo events (the producer's generator, PII masked as it sends them) landed by the sink's
LandingWriter into a fresh database, then their day archived to Parquet.

    .venv/bin/python -m benchmarks.archive_footprint DATABASE_URL ARCHIVE_DIR [--events N]

The database must be empty and migrated with one-day partitions (it is migrated here).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta

from streamflow import contract
from streamflow.archive import archive_period
from streamflow.db import migrate
from streamflow.db.engine import connect_admin
from streamflow.db.landing import Landing, LandingWriter
from streamflow.db.partitions import EVENTS, Period
from streamflow.dlq import DeadLetter
from streamflow.producer.generator import EventGenerator
from streamflow.sink.decode import decode

TOPIC = "user-events"
BATCH = 10_000
# The demo stream's pace: events per second of event time (the landing time is the
# database's now(); this only spreads occurred_at as a live stream would).
RATE = 1_000


def land_demo_events(url: str, events: int, seed: int = 7, *, invalid_rate: float = 0.0,
                     first_offset: int = 0, batch: int = BATCH,
                     timed: list[float] | None = None) -> int:
    """``events`` demo events landed as the sink lands them (the spoiled share of
    ``invalid_rate`` as its ingest dead letters), in batches of ``batch`` from Kafka offset
    ``first_offset`` of partition 0; ``timed``: each landing's seconds appended. Returns the
    bytes of the messages (the events' own JSON)."""
    generator = EventGenerator(b"footprint-key-0123456789", seed=seed, invalid_rate=invalid_rate)
    writer = LandingWriter(url, "footprint")
    writer.setup()
    sent = 0
    try:
        writer.claim(TOPIC, [0])
        now_ms = int(time.time() * 1000) - events * 1000 // RATE
        offset = first_offset
        while offset < first_offset + events:
            n = min(batch, first_offset + events - offset)
            landing = Landing(next_offsets={(TOPIC, 0): offset + n})
            for i, (key, value) in enumerate(generator.batch(n, now_ms)):
                sent += len(value)
                row = decode(value, key, lambda: contract.HEADERS, TOPIC, 0, offset + i)
                (landing.dead_letters if isinstance(row, DeadLetter) else landing.rows).append(row)
            started = time.perf_counter()
            writer.land(landing, lambda letters: [])
            if timed is not None:
                timed.append(time.perf_counter() - started)
            offset += n
            now_ms += n * 1000 // RATE
    finally:
        writer.close()
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("archive")
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    migrate.upgrade(args.database_url, partition_interval=timedelta(days=1))
    started = time.monotonic()
    land_demo_events(args.database_url, args.events)
    landed = time.monotonic() - started
    period = Period.holding(datetime.now(UTC), timedelta(days=1))
    with connect_admin(args.database_url) as conn:
        started = time.monotonic()
        archived = archive_period(conn, EVENTS, period, args.archive)
        took = time.monotonic() - started
    print(f"landed {args.events} events in {landed:.1f} s; archived {archived.rows} rows "
          f"of {period.key} in {took:.1f} s ({archived.rows / took:,.0f} rows/s): "
          f"{archived.bytes:,} bytes, {archived.bytes / max(archived.rows, 1):.1f} B/event")


if __name__ == "__main__":
    main()
