"""Where the dbt project lives, when its manifest is stale, and the process that runs dbt.

Dependency-free at import (setup.py loads this file by path in the wheel build, where only
setuptools is installed): sqlalchemy is imported where a URL is parsed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# No internet here, and no telemetry wanted anywhere.
QUIET_ENV = {"DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}

# Historical tables can wait; window latency cannot. dbt runs at this niceness so that the
# micro-batch runs keep the CPU (measured: a dbt build costs ~20 s of CPU on 2 cores and
# delayed window visibility p95 while it ran at the same priority).
DBT_NICENESS = 10

# Relationship tests point upstream, so each hangs off a model and what it is built from. When
# a run builds some models only, dbt's default (eager) would also run the tests of the models
# downstream that point at them, on tables maybe not built yet; buildable runs a test when its
# model is built and its other parents are upstream of it. dagster-dbt sets its own value
# ("empty") when it selects asset checks: that one wins.
INDIRECT_SELECTION = "buildable"

# What `dbt parse` reads: a manifest older than any of these is stale.
_PROJECT_SOURCES = ("models", "macros", "tests", "seeds", "snapshots", "analyses")
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml", "dependencies.yml")
# Generated or per-run: never shipped in a wheel (target/ only for its manifest.json).
_NOT_SHIPPED = ("logs", "dbt_packages", "__pycache__")
WRAPPER = "streamflow-dbt"  # [project.scripts]: run_dbt below

# DATABASE_URL's TLS and authentication settings -> the variable libpq reads each from when a
# connection is not given it. dbt-postgres's profile passes host, port, user, password and
# dbname (DBT_PG_* below) and four TLS fields at most, so dbt's libpq gets all of these through
# its own variables: one path for every setting, which libpq documents and dbt cannot drop.
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE", "sslnegotiation": "PGSSLNEGOTIATION",
    "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE", "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR", "sslsni": "PGSSLSNI", "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "channel_binding": "PGCHANNELBINDING", "require_auth": "PGREQUIREAUTH",
    "gssencmode": "PGGSSENCMODE", "krbsrvname": "PGKRBSRVNAME", "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
}
# libpq reads these from no variable and dbt-postgres has no field for them: dbt could not
# open an encrypted client key, so it is refused with a reason rather than failing in libpq.
_NO_PATH_TO_DBT = ("sslpassword",)


def dbt_project_dir(here: Path = Path(__file__).resolve().parent) -> Path:
    """The dbt project: inside the package in an installed wheel (setup.py copies it to
    ``streamflow/dbt_project``), beside the package in a source checkout (``here`` is the
    package's folder)."""
    packaged = here / "dbt_project"
    return packaged if (packaged / "dbt_project.yml").exists() else here.parent / "dbt_project"


DBT_PROJECT_DIR = dbt_project_dir()
# An installed wheel's project: prepared by the build, never parsed again (file times from a
# wheel say nothing about staleness).
PACKAGED = DBT_PROJECT_DIR.parent == Path(__file__).resolve().parent


def manifest_path(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    return project_dir / "target" / "manifest.json"


def _sources(project_dir: Path) -> Iterator[Path]:
    for name in _PROJECT_FILES:
        if (project_dir / name).exists():
            yield project_dir / name
    for folder in _PROJECT_SOURCES:
        yield from (p for p in (project_dir / folder).rglob("*") if p.is_file())


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR) -> bool:
    """True when the manifest is missing or older than a file `dbt parse` reads."""
    manifest = manifest_path(project_dir)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _sources(project_dir))


def prepare_manifest(project_dir: Path = DBT_PROJECT_DIR, *, force: bool = False) -> bool:
    """`dbt parse` (no database needed, ~5 s) when the manifest is stale; True if it ran.

    The explicit preparation step (`streamflow dbt prepare`, `make install`, `streamflow up`,
    the wheel build): importing the Dagster definitions never parses, outside `dagster dev`.
    """
    packaged = PACKAGED and project_dir == DBT_PROJECT_DIR
    if not force and (not manifest_is_stale(project_dir)
                      or packaged and manifest_path(project_dir).exists()):
        return False
    env = {"PATH": os.defpath, **QUIET_ENV, "HOME": str(Path.home())}
    result = subprocess.run(  # noqa: S603 - fixed command
        [real_dbt(), "parse", "--quiet", "--project-dir", str(project_dir),
         "--profiles-dir", str(project_dir), "--target-path", str(project_dir / "target")],
        env=env, capture_output=True, text=True, timeout=300)
    manifest = manifest_path(project_dir)
    if result.returncode != 0 or not manifest.exists():
        from streamflow.errors import DbtParseFailed

        raise DbtParseFailed(f"dbt parse failed: {(result.stdout + result.stderr)[-1500:]}")
    manifest.touch()  # partial parsing may leave it untouched when nothing changed
    return True


def not_shipped(folder: str, names: Sequence[str]) -> list[str]:
    """shutil.copytree's ``ignore`` for the wheel: no logs or per-run targets."""
    skip = [n for n in names if n in _NOT_SHIPPED]
    if Path(folder).name == "target":
        skip += [n for n in names if n != "manifest.json"]
    return skip


def dbt_env(database_url: str) -> dict[str, str]:
    """DBT_PG_* variables for ``dbt_project/profiles.yml`` (dbt-postgres has no URL field),
    and libpq's own variable for each TLS and authentication setting of the URL (LIBPQ_ENV).

    A unix-socket URL (``?host=/dir``, as the embedded server gives) becomes host=/dir:
    dbt-postgres hands it to libpq, which treats a directory as a socket path.
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    host = url.query.get("host") or url.host or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    unpassable = [name for name in _NO_PATH_TO_DBT if name in url.query]
    if unpassable:
        from streamflow.errors import DbtSettingUnsupported

        raise DbtSettingUnsupported(
            f"DATABASE_URL sets {', '.join(unpassable)}, which dbt-postgres cannot pass on: "
            "give dbt a client key without a passphrase")
    libpq = {}
    for name, variable in LIBPQ_ENV.items():
        if name in url.query:  # a repeated parameter: libpq keeps the last
            value = url.query[name]
            libpq[variable] = value[-1] if isinstance(value, tuple) else value
    return {
        **QUIET_ENV,
        "DBT_PG_HOST": host,
        "DBT_PG_PORT": str(url.port or 5432),
        "DBT_PG_USER": url.username or "postgres",
        "DBT_PG_PASSWORD": url.password or "",
        "DBT_PG_DBNAME": url.database or "postgres",
        **libpq,
    }


def dbt_process_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment dbt runs with: the caller's, the profile's DBT_PG_* derived from its
    DATABASE_URL (the variable the Dagster `postgres` resource reads too), quiet telemetry and
    StreamFlow's indirect selection unless the caller chose one."""
    env = dict(environ)
    if env.get("DATABASE_URL"):
        env.update(dbt_env(env["DATABASE_URL"]))
    env.update(QUIET_ENV)
    env.setdefault("DBT_INDIRECT_SELECTION", INDIRECT_SELECTION)
    return env


def real_dbt() -> str:
    """The dbt installed next to this Python (a venv is often not on PATH)."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else "dbt"


def dbt_executable() -> str:
    """What DbtCliResource runs: ``streamflow-dbt`` (run_dbt) next to this Python."""
    wrapper = Path(sys.executable).parent / WRAPPER
    if not wrapper.exists():
        from streamflow.errors import DbtNotInstalled

        raise DbtNotInstalled(f"{wrapper} is missing: install StreamFlow (`make install`)")
    return str(wrapper)


def run_dbt() -> None:
    """Console script ``streamflow-dbt``: dbt at DBT_NICENESS with dbt_process_env.

    Replaces itself with dbt (same pid), so dagster-dbt's signals and exit code reach dbt.
    """
    os.nice(max(0, DBT_NICENESS - os.nice(0)))  # to the level, not by it: nice() adds up
    dbt = real_dbt()
    from streamflow.errors import StreamFlowError

    try:
        env = dbt_process_env(os.environ)
    except StreamFlowError as exc:
        raise SystemExit(f"{WRAPPER}: {exc}") from None
    os.execve(dbt if os.path.isabs(dbt) else _which(dbt), [dbt, *sys.argv[1:]], env)


def _which(name: str) -> str:
    import shutil

    found = shutil.which(name)
    if not found:
        from streamflow.errors import DbtNotInstalled

        raise DbtNotInstalled(f"no {name} beside {sys.executable} or on PATH")
    return found
