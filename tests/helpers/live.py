"""The live view as a real `streamflow live` process, for the integration and browser tests."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from streamflow.infra.processes import free_port
from tests.conftest import wait_for, worker_env


def start_live(platform, tmp_path, port: int | None = None, host: str = "127.0.0.1", **env
               ) -> tuple[subprocess.Popen, int]:
    """`streamflow live` on the session's broker, once healthy and assigned: (process, port).
    The caller terminates it."""
    port = port or free_port()
    log = open(tmp_path / f"live-{port}.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "streamflow.cli", "live", "--port", str(port),
                             "--host", host],
                            env=worker_env(platform, **env), stdout=log,
                            stderr=subprocess.STDOUT)

    def healthy():
        assert proc.poll() is None, (tmp_path / f"live-{port}.log").read_text()
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health",
                                                     timeout=2).read())
        except OSError:
            return False
        return body["kafka_assigned"]

    wait_for(healthy, timeout_s=60, message="live view healthy and assigned")
    return proc, port
