"""Which runs in progress `streamflow dagster prepare` fails: only those whose process is known
gone (tests/integration/test_orphaned_runs.py does it with real run workers)."""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from streamflow.supervisor import RUN_START_TIMEOUT_S
from streamflow_defs.prepare_instance import fail_orphaned_runs
from streamflow_defs.run_workers import Liveness, RunWorker, _started_here, liveness

S = dg.DagsterRunStatus
NOW = datetime.now(UTC)


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny() -> None:
    noop()


def _gone_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process
    return child.pid


def test_a_started_run_on_this_machine_is_gone_when_its_worker_is():
    here = RunWorker(os.getpid(), time.time(), on_this_machine=True)
    assert liveness(S.STARTED, NOW, here, NOW) == Liveness.ALIVE
    assert liveness(S.CANCELING, NOW, here, NOW) == Liveness.ALIVE
    gone = RunWorker(_gone_pid(), time.time(), on_this_machine=True)
    assert liveness(S.STARTED, NOW, gone, NOW) == Liveness.GONE
    assert liveness(S.CANCELING, NOW, gone, NOW) == Liveness.GONE
    # Our pid, recorded before this process existed: a reused pid, not the worker.
    reused = RunWorker(os.getpid(), time.time() - 10 * 365 * 86400, on_this_machine=True)
    assert liveness(S.STARTED, NOW, reused, NOW) == Liveness.GONE


@pytest.mark.parametrize("status", [S.QUEUED, S.STARTING, S.STARTED, S.CANCELING])
def test_what_cannot_be_checked_from_here_is_left_to_run_monitoring(status):
    elsewhere = RunWorker(_gone_pid(), time.time(), on_this_machine=False)  # compose's
    assert liveness(status, NOW, elsewhere, NOW) == Liveness.UNKNOWN
    not_started_yet = RunWorker(None, None, on_this_machine=True)
    old = NOW - timedelta(days=1)
    assert liveness(status, old, not_started_yet, NOW) == Liveness.UNKNOWN


def test_a_run_never_launched_is_gone_after_the_start_timeout():
    unlaunched = RunWorker(None, None, on_this_machine=False)
    limit = timedelta(seconds=RUN_START_TIMEOUT_S)
    assert liveness(S.NOT_STARTED, NOW - limit / 2, unlaunched, NOW) == Liveness.UNKNOWN
    assert liveness(S.NOT_STARTED, NOW - limit * 2, unlaunched, NOW) == Liveness.GONE


@pytest.mark.parametrize(("info", "here"), [
    ({"host": "127.0.0.1", "port": 4000}, True), ({"host": "localhost", "port": 4000}, True),
    ({"host": "::1", "port": 4000}, True), ({"socket": "/tmp/dagster.sock"}, True),
    ({"host": "dagster-code-server", "port": 4000}, False),
    ({"host": "10.0.0.7", "port": 4000}, False), (None, False)])
def test_a_worker_is_on_this_machine_when_its_code_server_is_on_loopback(info, here):
    assert _started_here(json.dumps(info) if info else None) is here


def test_runs_without_a_recorded_worker_are_left_alone_and_finished_ones_kept():
    """The old rule failed every run in progress, live ones included."""
    with dg.instance_for_test() as instance:
        statuses = [S.STARTED, S.STARTING, S.CANCELING, S.NOT_STARTED, S.SUCCESS]
        runs = {status: instance.create_run_for_job(tiny, status=status)
                for status in statuses}
        failed, left = fail_orphaned_runs(instance)
        after = {s: instance.get_run_by_id(r.run_id).status for s, r in runs.items()}
    assert failed == []
    assert sorted(left) == sorted(runs[s].run_id for s in statuses[:4])
    assert after == {status: status for status in statuses}
