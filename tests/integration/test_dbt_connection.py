"""dbt connects as DATABASE_URL says, TLS settings included: `streamflow-dbt debug` against the
session's PostgreSQL, which has no TLS, so a URL that requires TLS must fail."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from streamflow.dbt_env import DBT_PROJECT_DIR, dbt_executable


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def postgres_over_tcp(platform) -> Iterator[str]:
    """A TCP URL of the session's PostgreSQL, through a forwarder on 127.0.0.1: the embedded
    server listens on a unix socket only, where libpq ignores sslmode."""
    url = make_url(platform.database_url)
    socket_path = Path(url.query["host"]) / f".s.PGSQL.{url.port or 5432}"
    listener = socket.create_server(("127.0.0.1", 0))
    opened: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(str(socket_path))
            opened.extend((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    yield f"postgresql://{url.username}:@127.0.0.1:{port}/{url.database}"
    listener.close()
    for sock in opened:
        sock.close()


def dbt_debug(database_url: str, logs: Path) -> subprocess.CompletedProcess:
    """`dbt debug --connection` through streamflow-dbt, as a Dagster run starts dbt."""
    return subprocess.run(
        [dbt_executable(), "debug", "--connection", "--no-version-check",
         "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
         "--log-path", str(logs)],
        env={**os.environ, "DATABASE_URL": database_url}, capture_output=True, text=True,
        timeout=180)


@pytest.mark.parametrize(("setting", "refusal"), [
    ("sslmode=disable", None),
    ("sslmode=require", "server does not support SSL, but SSL was required"),
    ("require_auth=scram-sha-256", 'authentication method requirement "scram-sha-256"'),
])
def test_dbt_connects_with_the_tls_settings_of_database_url(postgres_over_tcp, tmp_path,
                                                            setting, refusal):
    result = dbt_debug(f"{postgres_over_tcp}?{setting}", tmp_path)
    output = result.stdout + result.stderr
    if refusal is None:
        assert result.returncode == 0, output[-3000:]
        assert "OK connection ok" in output
    else:  # the server cannot do what the URL demands: dbt must not connect anyway
        assert result.returncode != 0, output[-3000:]
        assert refusal in output, output[-3000:]
