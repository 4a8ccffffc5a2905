"""`up` stops what it started when a later step fails; orphaned workers are found by their
state files and stopped, a reused pid never is. (The same against the real services:
tests/integration/test_cli_lifecycle.py.)"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types

import pytest

from streamflow import stack, supervisor
from streamflow.errors import DatabaseRefused
from streamflow.infra import processes
from streamflow.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    return load_settings(STREAMFLOW_HOME=str(tmp_path / "home"), KAFKA_BOOTSTRAP_SERVERS=None,
                         DATABASE_URL="postgresql://app:pw@db/streamflow")


def _fake_embedded_kafka(monkeypatch, calls: list[str], *, running: bool) -> None:
    monkeypatch.setattr(stack.kafka_server, "fetch", lambda *_a, **_k: None)
    node = types.SimpleNamespace(node_id=1)
    monkeypatch.setattr(stack.kafka_server, "node_states",
                        lambda _s: [(node, object() if running else None)])
    monkeypatch.setattr(stack.kafka_server, "start", lambda *_a, **_k: calls.append("start"))
    monkeypatch.setattr(stack.kafka_server, "stop",
                        lambda _s, **_k: calls.append("stop") or "stopped")


def _refuse(_url, **_kw):
    raise DatabaseRefused("PostgreSQL at postgresql://app:***@db/streamflow refused")


def test_up_stops_the_broker_it_started_when_the_database_refuses(monkeypatch, settings):
    calls: list[str] = []
    _fake_embedded_kafka(monkeypatch, calls, running=False)
    monkeypatch.setattr(stack.migrate, "upgrade", _refuse)
    lines: list[str] = []
    with pytest.raises(DatabaseRefused):
        stack.up(settings, echo=lines.append)
    assert calls == ["start", "stop"]
    assert "kafka: stopped (`up` did not finish)" in lines


def test_up_leaves_a_broker_that_ran_before_it_alone(monkeypatch, settings):
    calls: list[str] = []
    _fake_embedded_kafka(monkeypatch, calls, running=True)
    monkeypatch.setattr(stack.migrate, "upgrade", _refuse)
    with pytest.raises(DatabaseRefused):
        stack.up(settings, echo=lambda _line: None)
    assert calls == ["start"]


def test_up_makes_the_partitions_of_its_own_settings(monkeypatch, tmp_path):
    # The benchmarks pass STREAMFLOW_PARTITION_INTERVAL in the settings, not the environment:
    # the migration made day partitions, and the lifecycle soak's 5 m periods never existed.
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path / "home"),
                             KAFKA_BOOTSTRAP_SERVERS=None, STREAMFLOW_PARTITION_INTERVAL="5m",
                             DATABASE_URL="postgresql://app:pw@db/streamflow")
    _fake_embedded_kafka(monkeypatch, [], running=True)
    asked: list = []

    def upgrade(url, **kw):
        asked.append(kw.get("partition_interval"))
        _refuse(url)

    monkeypatch.setattr(stack.migrate, "upgrade", upgrade)
    with pytest.raises(DatabaseRefused):
        stack.up(settings, echo=lambda _line: None)
    assert asked == [settings.partition_period]
    assert settings.partition_period.total_seconds() == 300


_children: list = []  # reaped after each test


@pytest.fixture(autouse=True)
def _reap():
    yield
    while _children:
        child = _children.pop()
        if child.poll() is None:
            child.kill()
        child.wait()


def _worker(settings, name: str, *, started_at: float | None = None) -> processes.ProcessState:
    state, child = processes.spawn(
        name, [sys.executable, "-c", "import time; time.sleep(60)"],
        run_dir=settings.run_dir, log_path=settings.logs_dir / f"{name}.log")
    if started_at is not None:
        state = dataclasses.replace(state, started_at=started_at)
        processes.write_state(settings.run_dir, state)
    _children.append(child)
    return state


def test_orphaned_workers_are_stopped_before_a_new_generation(settings, monkeypatch):
    sink = _worker(settings, "sink")
    live = _worker(settings, "live")
    spawned: list[list[str]] = []
    monkeypatch.setattr(stack.supervisor, "prepare_dagster_instance", lambda *_a, **_k: None)
    monkeypatch.setattr(stack.pii, "generate_local_key", lambda _s: None)

    def spawn(component, cmd, **_kwargs):  # the new supervisor: recorded, not run
        spawned.append(cmd)
        raise RuntimeError("stop here")

    monkeypatch.setattr(stack.processes, "spawn", spawn)
    lines: list[str] = []
    with pytest.raises(RuntimeError):
        stack.start_workers(settings, "postgresql://app@db/streamflow", echo=lines.append)
    assert not sink.is_alive() and not live.is_alive()
    assert "sink: stopped (left running by a supervisor that was killed)" in lines
    assert spawned, "the new supervisor starts after the orphans are gone"
    assert all(processes.read_state(settings.run_dir, s.name) is None
               for s in supervisor.worker_specs(settings))


def test_a_reused_pid_is_never_signalled(settings):
    # The state file names a live process created after the recorded start: not ours.
    stranger = _worker(settings, "sink", started_at=time.time() - 3600)
    report = stack.stop_workers(settings)
    assert "sink" not in report
    os.kill(stranger.pid, 0)  # still running
    assert processes.read_state(settings.run_dir, "sink") is None
