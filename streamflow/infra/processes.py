"""Detached background processes tracked by small JSON state files under STREAMFLOW_HOME/run.

A state file records what ``streamflow status`` needs (pid, address, command line); a process
counts as running only if its pid is alive *and* still runs the recorded command, so a stale
file left by a crash or a reboot never makes ``up`` skip a start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from streamflow.errors import PortInUse


@dataclass(frozen=True)
class ProcessState:
    component: str
    pid: int
    address: str
    cmdline: list[str]
    log: str
    started_at: float

    def is_alive(self) -> bool:
        return is_running(self.pid, self.started_at)


def is_running(pid: int, known_at: float) -> bool:
    """Whether ``pid`` runs and is the process that had it at ``known_at`` (epoch seconds).

    A pid reused after a crash or reboot belongs to a process created after ours was recorded
    (1 s of slack for the kernel's clock-tick start times); one of another user is not ours
    either. (Comparing command lines would race with a fresh child's exec.)"""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= known_at + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def state_path(run_dir: Path, component: str) -> Path:
    return run_dir / f"{component}.json"


def read_state(run_dir: Path, component: str) -> ProcessState | None:
    path = state_path(run_dir, component)
    try:
        return ProcessState(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def write_state(run_dir: Path, state: ProcessState) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_path(run_dir, state.component).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state)))
    tmp.replace(state_path(run_dir, state.component))  # atomic: readers never see half a file


def clear_state(run_dir: Path, component: str) -> None:
    state_path(run_dir, component).unlink(missing_ok=True)


def spawn(
    component: str,
    cmd: list[str],
    *,
    run_dir: Path,
    log_path: Path,
    address: str = "",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[ProcessState, subprocess.Popen]:
    """Start ``cmd`` in its own session (it outlives the CLI), output appended to ``log_path``.

    Returns the recorded state and the handle (keep it to reap the child: a dropped Popen
    is reaped by the subprocess module behind the caller's back)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - the command is built by StreamFlow, not from input
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    state = ProcessState(component, proc.pid, address, cmd, str(log_path), time.time())
    write_state(run_dir, state)
    return state, proc


def terminate(pid: int, *, timeout_s: float = 30.0) -> str:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns how the process ended.

    A process started by ``spawn`` leads its own process group: the whole group is signalled,
    so helpers it started (Dagster's code servers, say) stop with it."""
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return "not running"
    group = _own_group(pid)
    try:
        _signal(pid, group, signal.SIGTERM)
        proc.wait(timeout_s)
        outcome = "stopped"
    except psutil.NoSuchProcess:
        outcome = "stopped"
    except psutil.TimeoutExpired:
        _signal(pid, group, signal.SIGKILL)
        proc.wait(5)
        outcome = f"killed after {timeout_s:.0f}s"
    if group:  # stragglers of the group get a last SIGKILL
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return outcome


def _own_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(pid: int, group: bool, signum: int) -> None:
    if group:
        os.killpg(pid, signum)
    else:
        os.kill(pid, signum)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def require_free_port(port: int, what: str, setting: str, alternative: str) -> None:
    if not port_is_free(port):
        raise PortInUse(
            f"port {port} needed by {what} is in use by another process: stop it, "
            f"set {setting} to a free port, or {alternative}"
        )


def free_port() -> int:
    """An ephemeral port that is free right now (for tests and examples)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_run(count: int, *, attempts: int = 100) -> int:
    """The first of ``count`` consecutive ports that are all free right now (an embedded
    Kafka cluster's nodes take consecutive ports: settings.kafka_node_ports)."""
    for _ in range(attempts):
        first = free_port()
        if first + count <= 65536 and all(port_is_free(p) for p in range(first, first + count)):
            return first
    raise OSError(f"no {count} consecutive free ports found in {attempts} tries")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(predicate, *, timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())

