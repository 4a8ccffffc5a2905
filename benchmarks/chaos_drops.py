"""Partitions dropped while chaos runs (`make chaos`): a thread runs the lifecycle pass over
raw.events and raw.dead_letters every few seconds with no hot retention, so each minute's
partition (the chaos stack runs STREAMFLOW_PARTITION_INTERVAL=1m) is archived, verified and
dropped as soon as it closes, under the sink's landings and the faults. Before the ledger is
drawn, everything archived is restored (`streamflow archive restore`'s code, idempotent), so
the ledger accounts every offset as before: archived + hot = landed, exactly once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from streamflow import lifecycle
from streamflow.archive import list_archive, restore
from streamflow.db.engine import connect_admin
from streamflow.db.partitions import DEAD_LETTERS, EVENTS, Period
from streamflow.microbatch import batch, notifications

INTERVAL = "1m"
TABLES = (EVENTS, DEAD_LETTERS)
PASS_EVERY_S = 10.0


@dataclass
class Drops:
    """The lifecycle passes of a chaos run: what they dropped, and what failed."""

    database_url: str
    archive_url: str
    interval: timedelta
    dropped: list[str] = field(default_factory=list)    # "schema.table period (rows)"
    failed: list[str] = field(default_factory=list)     # a step that failed (a problem)
    # A pass that could not run (PostgreSQL restarted by chaos): tried again at the next.
    errors: list[str] = field(default_factory=list)
    passes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaos-drops", daemon=True)
        self._thread.start()

    def stop(self, *, after_a_drop_s: float = 150.0) -> None:
        """Stop the passes, once one has dropped a partition (a short run may end before
        its first minute closes: waited for, ``after_a_drop_s`` at most)."""
        deadline = time.monotonic() + after_a_drop_s
        while not self.dropped and time.monotonic() < deadline and not self._stop.wait(1.0):
            pass
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(PASS_EVERY_S):
            try:
                self._read_as_the_micro_batch_would()
                report = lifecycle.run_pass(self.database_url, self.archive_url, self.interval,
                                            lambda spec: timedelta(0), tables=TABLES)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL restarts under chaos
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            self.passes += 1
            self.dropped += [f"{s.table} {s.period} ({s.rows})" for s in report.steps
                             if s.action == "dropped"]
            self.failed += [str(s) for s in report.failures]

    def _read_as_the_micro_batch_would(self) -> None:
        """No micro-batch runs under chaos, and the lifecycle keeps raw rows its contract step
        has not read: its watermark is moved to what has landed, as the step would."""
        with connect_admin(self.database_url, "chaos-drops") as conn, conn.transaction():
            batch.advance(conn, notifications.STEP, batch.landed_max_seq(conn))

    def restore_all(self) -> int:
        """Every archived period of both tables back into PostgreSQL; rows inserted."""
        inserted = 0
        for spec in TABLES:
            keys = [a.period for a in list_archive(self.archive_url, spec.name)]
            if not keys:
                continue
            start = Period.from_key(keys[0], self.interval).start
            end = Period.from_key(keys[-1], self.interval).end
            inserted += restore(self.database_url, spec, start, end, self.archive_url,
                                self.interval).inserted
        return inserted

    def record(self) -> dict:
        return {"passes": self.passes, "dropped": len(self.dropped),
                "dropped_periods": self.dropped, "failed": self.failed,
                "passes_that_could_not_run": self.errors,
                "at": datetime.now(UTC).isoformat()}
