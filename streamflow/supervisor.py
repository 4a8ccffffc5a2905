"""`streamflow supervise`: keeps the local stack's workers running.

`streamflow up` starts one supervisor in the background. It starts each worker as a child
process (output in STREAMFLOW_HOME/logs/<worker>.log), restarts a worker that dies with
backoff, logging the restart, rotates the logs under STREAMFLOW_HOME/logs past
STREAMFLOW_LOG_MAX_MB (see ``infra.log_rotation``), and on SIGTERM stops the workers
(SIGTERM, wait) and exits.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from streamflow import logs
from streamflow.errors import WorkersFailed
from streamflow.infra import log_rotation, processes
from streamflow.settings import Settings
from streamflow.workers.runtime import Backoff, StopFlag

log = logging.getLogger("streamflow.supervisor")

COMPONENT = "supervisor"
# Demo stream of the local stack (its rate: STREAMFLOW_DEMO_RATE, 50 events/s by default).
DEMO_LATE_RATE = 0.05
DEMO_INVALID_RATE = 0.01
# The Dagster code location: the module the code server loads, and its name in the UI.
DAGSTER_LOCATION = "streamflow_defs.definitions"
# Dagster's storage class for STREAMFLOW_DAGSTER_STORAGE=postgres: (module, class).
POSTGRES_STORAGE = ("streamflow_defs.postgres_storage", "PostgresStorage")
# A worker that ran this long before dying gets a fresh backoff: it was healthy.
HEALTHY_AFTER_S = 60.0
STOP_TIMEOUT_S = 30.0
# Seconds between two log size checks (one stat per log file). A log can outgrow
# STREAMFLOW_LOG_MAX_MB by what is written to it in this time, so it would only reach twice
# the default limit at 20 MiB / 30 s = 0.7 MB/s of log lines; a stat of each log is cheap, but
# checking every loop turn (0.5 s) would buy nothing for line-rate logs.
LOG_ROTATION_INTERVAL_S = 30.0
# Seconds a Dagster run may take to start before run monitoring fails it (the micro-batch
# sensor counts a run not started yet as in progress for as long).
RUN_START_TIMEOUT_S = 180
SINK = "sink"  # the kind of every sink worker, and the first one's name


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    command: list[str]
    address: str = ""  # what `status` shows, and where it reads a worker's live rate
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = ""  # appended to ``address`` for `status`
    kind: str = ""  # SINK for each sink of the group (status lists their partitions)


def _port(preferred: int, taken: set[int]) -> int:
    port = preferred
    while port in taken or not processes.port_is_free(port):
        port = processes.free_port()
    taken.add(port)
    return port


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamflow.cli", *args]


def _tool(name: str) -> str:
    """A console script installed next to this Python (the venv need not be on PATH)."""
    return str(Path(sys.executable).parent / name)


def _metrics_worker(name: str, args: list[str], port: int, kind: str = "") -> WorkerSpec:
    return WorkerSpec(name, _cli(*args, "--metrics-port", str(port)),
                      f"http://127.0.0.1:{port}/metrics", kind=kind)


def sink_name(index: int) -> str:
    """The worker name of sink ``index`` (from 1): the first keeps the name a single sink has
    (its log, run state and the live view's health panel), the others are sink-2, sink-3 ..."""
    return SINK if index == 1 else f"{SINK}-{index}"


def _sinks(settings: Settings, taken: set[int]) -> list[WorkerSpec]:
    """STREAMFLOW_SINK_PROCESSES sinks in the db-sink group, each with its own static member id
    (a restarted sink takes its partitions back at once) and metrics port."""
    host = socket.gethostname()
    return [_metrics_worker(sink_name(i), [SINK, "--instance-id", f"sink-{host}-{i}"],
                            _port(settings.metrics_port + i, taken), kind=SINK)
            for i in range(1, settings.sink_processes + 1)]


def worker_specs(settings: Settings) -> list[WorkerSpec]:
    taken: set[int] = set()
    dagster_env = {"DAGSTER_HOME": str(settings.dagster_home_dir)}
    workspace = ["-w", str(settings.dagster_home_dir / "workspace.yaml")]
    return [
        _metrics_worker("producer", ["produce", "--rate", str(settings.demo_rate), "--late-rate",
                                     str(DEMO_LATE_RATE), "--invalid-rate",
                                     str(DEMO_INVALID_RATE)],
                        _port(settings.metrics_port, taken)),
        *_sinks(settings, taken),
        WorkerSpec("dagster-code-server",
                   [sys.executable, "-m", "streamflow_defs.code_server", "-h", "127.0.0.1",
                    "-p", str(settings.dagster_code_port), "-m", DAGSTER_LOCATION,
                    "--location-name", DAGSTER_LOCATION],
                   f"grpc://127.0.0.1:{settings.dagster_code_port}", env=dagster_env),
        WorkerSpec("dagster-webserver",
                   [_tool("dagster-webserver"), "-h", "127.0.0.1", "-p",
                    str(settings.dagster_port), *workspace],
                   f"http://127.0.0.1:{settings.dagster_port}", env=dagster_env,
                   health_path="/server_info"),
        WorkerSpec("dagster-daemon", [_tool("dagster-daemon"), "run", *workspace],
                   env=dagster_env),
        WorkerSpec("live", _cli("live", "--port", str(settings.live_port)),
                   f"http://127.0.0.1:{settings.live_port}", health_path="/health"),
    ]


def write_dagster_yaml(settings: Settings, *, code_host: str = "127.0.0.1") -> Path:
    """The Dagster instance of the local stack and of docker-compose (`streamflow dagster
    prepare`): SQLite storage unless STREAMFLOW_DAGSTER_STORAGE=postgres; and the workspace:
    the one code server that `dagster-code-server` runs on ``code_host``."""
    home = settings.dagster_home_dir
    home.mkdir(parents=True, exist_ok=True)
    (home / "workspace.yaml").write_text(
        "# Written by `streamflow up` / `streamflow dagster prepare`; edits are replaced.\n"
        f"load_from:\n  - grpc_server:\n      host: {code_host}\n"
        f"      port: {settings.dagster_code_port}\n      location_name: {DAGSTER_LOCATION}\n")
    lines = ["# Written by `streamflow up` / `streamflow dagster prepare`"
             " (STREAMFLOW_DAGSTER_STORAGE); edits are replaced.",
             "telemetry:", "  enabled: false",
             # A fresh UI opens on its own pages, not on Dagster's newsletter sign-up form.
             "nux:", "  enabled: false",
             # Launch at once from the sensor: the run queue added seconds to every
             # micro-batch, and runs here are already limited by the sensor itself.
             "run_coordinator:", "  module: dagster.core.run_coordinator",
             "  class: DefaultRunCoordinator",
             # Runs that do not start within the timeout, or outrun their dagster/max_runtime
             # tag, are failed (a stop's orphans: streamflow_defs/prepare_instance.py).
             "run_monitoring:", "  enabled: true",
             f"  start_timeout_seconds: {RUN_START_TIMEOUT_S}",
             "  max_resume_run_attempts: 0",
             # Lets the micro-batch job's `dagster/max_retries` tag retry a failed run at
             # once (a range that still fails is retried by the sensor with a backoff).
             "run_retries:", "  enabled: true", "  max_retries: 0",
             # Ticks (~0.9 KB each; the watermark sensor ticks every 3 s): skipped ones kept
             # a day, the rest a week. Old runs: the `dagster_retention` job.
             "retention:",
             "  schedule:", "    purge_after_days: {skipped: 1, success: 7, failure: 7}",
             "  sensor:", "    purge_after_days: {skipped: 1, success: 7, failure: 7}"]
    if settings.dagster_storage == "postgres":
        # dagster-postgres on psycopg2 (streamflow_defs/postgres_storage.py says why).
        lines += ["storage:", "  custom:", f"    module: {POSTGRES_STORAGE[0]}",
                  f"    class: {POSTGRES_STORAGE[1]}", "    config:", "      postgres_url:",
                  "        env: DATABASE_URL"]
    path = home / "dagster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def prepare_dagster_instance(settings: Settings, database_url: str, *, echo=print,
                             code_host: str = "127.0.0.1") -> None:
    """Write the instance files and create its storage once, before any Dagster process
    (`streamflow up`, and compose's `migrate` service through `streamflow dagster prepare`).

    The code server, webserver and daemon each create missing storage on start; started
    together they can race and stamp the SQLite schema twice ("more than one head"), after
    which the webserver never starts again.
    """
    write_dagster_yaml(settings, code_host=code_host)
    env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home_dir),
           "DATABASE_URL": database_url}
    # One process (streamflow_defs/prepare_instance.py): migrate, then fail the runs a stop
    # left "in progress" whose worker is gone, which would otherwise hold a micro-batch sensor
    # slot until run monitoring's max runtime (live ones finish by themselves).
    result = subprocess.run([sys.executable, "-m", "streamflow_defs.prepare_instance"],
                            capture_output=True, text=True, timeout=300, env=env)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise WorkersFailed(f"could not prepare the Dagster instance in "
                            f"{settings.dagster_home_dir}: {' '.join(tail)}")
    if result.stdout.strip():
        echo(result.stdout.strip())


class Supervisor:
    def __init__(self, settings: Settings, specs: list[WorkerSpec], stop: StopFlag) -> None:
        self.settings = settings
        self.specs = specs
        self.stop = stop
        self.children: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.backoff = {spec.name: Backoff(first_s=1.0) for spec in specs}
        self.restart_at: dict[str, float] = {}
        self.restarts = dict.fromkeys((spec.name for spec in specs), 0)
        self.rotate_at = 0.0  # monotonic time of the next log check: the first loop turn

    def _start(self, spec: WorkerSpec) -> None:
        state, child = processes.spawn(
            spec.name, spec.command, run_dir=self.settings.run_dir,
            log_path=self.settings.logs_dir / f"{spec.name}.log", address=spec.address,
            env={**os.environ, **spec.env})
        self.children[spec.name] = child
        self.started_at[spec.name] = time.monotonic()
        log.info("started %s (pid %d)", spec.name, state.pid)

    def run(self) -> None:
        for spec in self.specs:
            self._start(spec)
        while not self.stop:
            time.sleep(0.5)
            for spec in self.specs:
                self._check(spec)
            self._rotate_logs_if_due(time.monotonic())
        self.shutdown()

    def _rotate_logs_if_due(self, now: float) -> None:
        if now < self.rotate_at:
            return
        self.rotate_at = now + LOG_ROTATION_INTERVAL_S
        try:
            rotated = log_rotation.rotate_logs(self.settings.logs_dir,
                                               max_bytes=self.settings.log_max_bytes,
                                               backups=self.settings.log_backups)
        except OSError as exc:  # a full disk, say: the workers must keep running regardless
            log.warning("log rotation in %s failed, retried in %.0fs: %s",
                        self.settings.logs_dir, LOG_ROTATION_INTERVAL_S, exc)
            return
        for rotation in rotated:
            log.info("rotated %s at %d bytes (STREAMFLOW_LOG_MAX_MB=%d, keeping %d)",
                     rotation.path, rotation.size, self.settings.log_max_mb,
                     self.settings.log_backups)

    def _check(self, spec: WorkerSpec) -> None:
        child = self.children.get(spec.name)
        now = time.monotonic()
        if child is not None:
            code = child.poll()
            if code is None:
                return
            del self.children[spec.name]
            if now - self.started_at[spec.name] > HEALTHY_AFTER_S:
                self.backoff[spec.name].reset()
            delay = self.backoff[spec.name].next()
            self.restarts[spec.name] += 1
            self.restart_at[spec.name] = now + delay
            log.warning("%s exited with code %s; restart #%d in %.0fs (see %s)", spec.name,
                        code, self.restarts[spec.name], delay,
                        self.settings.logs_dir / f"{spec.name}.log")
        elif now >= self.restart_at.get(spec.name, 0):
            self._start(spec)

    def shutdown(self) -> None:
        # All at once: one slow child must not use up the others' time to stop.
        with ThreadPoolExecutor(max(len(self.children), 1)) as pool:
            outcomes = pool.map(
                lambda child: processes.terminate(child.pid, timeout_s=STOP_TIMEOUT_S),
                self.children.values())
            for name, outcome in zip(self.children, outcomes, strict=True):
                processes.clear_state(self.settings.run_dir, name)
                log.info("%s: %s", name, outcome)


def run_supervisor(settings: Settings) -> None:
    logs.setup(settings)
    stop = StopFlag().install()
    Supervisor(settings, worker_specs(settings), stop).run()
