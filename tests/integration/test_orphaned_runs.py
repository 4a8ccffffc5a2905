"""`streamflow dagster prepare` fails a run whose worker process is gone and leaves a live one
alone, with runs launched as the local stack launches them: the instance `streamflow up`
writes, the default run launcher, a code server on loopback that starts each run's worker.
The code server is then killed outright (as with a supervisor killed without `down`): one
worker is killed too, the other keeps running and must finish its run after the preparation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from streamflow.infra.processes import free_port, is_running
from streamflow.supervisor import write_dagster_yaml
from tests.conftest import isolated_settings, wait_for

S = dg.DagsterRunStatus
LOCATION = "held"
JOB = '''
import time
from pathlib import Path

import dagster as dg


@dg.op(config_schema={"release": str})
def hold(context) -> None:
    """Runs until the test creates the release file."""
    while not Path(context.op_config["release"]).exists():
        time.sleep(0.1)


@dg.job
def held() -> None:
    hold()
'''


def _dagster(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "dagster"), *args]


@pytest.fixture
def code_server(tmp_path):
    """DAGSTER_HOME with the local stack's instance and a workspace naming one code server on
    loopback that serves the ``held`` job; the server's process group is killed at the end."""
    home = tmp_path / "dagster"
    port = free_port()
    write_dagster_yaml(isolated_settings(tmp_path, DAGSTER_HOME=str(home)))
    (home / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {port}\n"
        f"      location_name: {LOCATION}\n")
    (tmp_path / "held.py").write_text(JOB)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    with (tmp_path / "code-server.log").open("ab") as log:
        server = subprocess.Popen(
            _dagster("api", "grpc", "-h", "127.0.0.1", "-p", str(port), "-f",
                     str(tmp_path / "held.py"), "--location-name", LOCATION),
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def serving() -> bool:
        assert server.poll() is None, (tmp_path / "code-server.log").read_text()[-3000:]
        return subprocess.run(_dagster("api", "grpc-health-check", "-p", str(port)),
                              capture_output=True, timeout=60).returncode == 0

    wait_for(serving, timeout_s=120, interval_s=1, message="the code server")
    try:
        yield home, env, server
    finally:
        with contextlib.suppress(ProcessLookupError):  # the server's group: its run workers
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _launch(home: Path, env: dict[str, str], release: Path) -> None:
    config = {"ops": {"hold": {"config": {"release": str(release)}}}}
    done = subprocess.run(
        _dagster("job", "launch", "-w", str(home / "workspace.yaml"), "-j", "held",
                 "--config-json", json.dumps(config), "--tags", json.dumps(
                     {"release": str(release)})),
        env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid on the run's RUN_START event, written by its worker."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    return starts[-1].dagster_event.pid if starts else None


def test_prepare_fails_a_run_whose_worker_is_gone_and_leaves_a_live_one(code_server, tmp_path,
                                                                        monkeypatch):
    home, env, server = code_server
    releases = {name: tmp_path / f"release-{name}" for name in ("live", "killed")}
    for release in releases.values():
        _launch(home, env, release)

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        runs = {name: instance.get_runs(dg.RunsFilter(tags={"release": str(path)}))[0].run_id
                for name, path in releases.items()}
        pids = wait_for(lambda: (found := {name: _worker_pid(instance, run_id)
                                           for name, run_id in runs.items()})
                        and None not in found.values() and found,
                        timeout_s=180, message="both run workers started")
        assert {instance.get_run_by_id(r).status for r in runs.values()} == {S.STARTED}

        # A stop without `down`: the code server dies, one run's worker with it.
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        os.kill(pids["killed"], signal.SIGKILL)
        wait_for(lambda: not is_running(pids["killed"], time.time()), timeout_s=30,
                 message="the killed worker gone")

        prepared = subprocess.run([sys.executable, "-m", "streamflow_defs.prepare_instance"],
                                  env=env, capture_output=True, text=True, timeout=300)
        assert prepared.returncode == 0, prepared.stderr
        status = {name: instance.get_run_by_id(run_id).status for name, run_id in runs.items()}
        assert status == {"live": S.STARTED, "killed": S.FAILURE}, prepared.stdout
        assert runs["killed"] in prepared.stdout and runs["live"] in prepared.stdout

        # The live worker was left alone: it finishes its run and records the outcome.
        releases["live"].touch()
        wait_for(lambda: instance.get_run_by_id(runs["live"]).status == S.SUCCESS,
                 timeout_s=60, message="the live run's success")

