"""The live view as a real `streamflow live` process, for the integration and browser tests;
or as a server in a thread of the test's own process, for configurations the CLI does not
make (a run directory, a closed Kafka port) and for tests that reach into it."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import uvicorn

from streamflow.infra.processes import free_port
from streamflow.live.server import Live, LiveConfig, WebSocketProtocol
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


@contextlib.contextmanager
def live_in_process(config: LiveConfig) -> Iterator[tuple[Live, int]]:
    """The live server on a free port in a thread of this process; stopped on exit."""
    live, port = Live(config), free_port()
    server = uvicorn.Server(uvicorn.Config(live.app(), host="127.0.0.1", port=port,
                                           log_level="warning", ws=WebSocketProtocol))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout_s=30,
                 message="the live server listening")
        assert thread.is_alive(), "the live server did not start"
        yield live, port
    finally:
        server.should_exit = True
        thread.join(30)
