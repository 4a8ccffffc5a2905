"""Whether the process a Dagster run executes in is still there, from what Dagster records.

`streamflow dagster prepare` fails only runs whose process is gone (docs/ARCHITECTURE.md,
Processes). The run worker writes the run's RUN_START event, which carries its pid; the
default run launcher tags the run with the code server it handed the run to (the code server
starts the worker). A code server on loopback starts its workers on this machine, so there the
pid (and its start time, against a reused pid) tells whether the worker lives. Nothing else can
be checked from here: a run handed to a code server in another container (docker-compose's
`dagster-code-server`), one executed in a process of its own, one not started yet. Those are
left alone, to Dagster's run monitoring (its start timeout; the micro-batch job's max runtime)
and to the code server, which fails a run whose worker died while the server runs.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import dagster as dg
from dagster._core.storage.tags import GRPC_INFO_TAG  # tests/unit/test_private_internals.py

from streamflow.infra.processes import is_running
from streamflow.supervisor import RUN_START_TIMEOUT_S

S = dg.DagsterRunStatus
IN_PROGRESS = [S.QUEUED, S.NOT_STARTED, S.STARTING, S.STARTED, S.CANCELING]


class Liveness(StrEnum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # not checkable from here: left to run monitoring


@dataclass(frozen=True)
class RunWorker:
    """Where a run's worker process runs, as Dagster recorded it."""

    pid: int | None  # of the RUN_START event: None before the worker started the run
    started_at: float | None  # that event's time (epoch seconds)
    on_this_machine: bool  # started by a code server on loopback


def run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunWorker:
    starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
    latest = starts[-1] if starts else None
    pid = latest.dagster_event.pid if latest and latest.dagster_event else None
    return RunWorker(pid, latest.timestamp if latest else None,
                     _started_here(run.tags.get(GRPC_INFO_TAG)))


def _started_here(grpc_info: str | None) -> bool:
    """Whether the code server the run was handed to (the launcher's tag) is on loopback."""
    if not grpc_info:
        return False  # executed in a process of its own, on a machine not recorded
    server = json.loads(grpc_info)
    if server.get("socket"):
        return True  # a unix socket is on this machine
    host = str(server.get("host", ""))
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: another container or machine


def liveness(status: dg.DagsterRunStatus, created: datetime, worker: RunWorker,
             now: datetime) -> Liveness:
    """Whether a run in progress still has a process that will finish it."""
    if status in (S.STARTED, S.CANCELING) and worker.pid is not None and worker.on_this_machine:
        alive = is_running(worker.pid, worker.started_at or 0.0)
        return Liveness.ALIVE if alive else Liveness.GONE
    if status == S.NOT_STARTED and (now - created).total_seconds() > RUN_START_TIMEOUT_S:
        # Created, never handed to a launcher: one launches within seconds, and run
        # monitoring watches only runs that started launching.
        return Liveness.GONE
    return Liveness.UNKNOWN
