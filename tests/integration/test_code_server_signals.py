"""The Dagster code server stops on SIGTERM even when it was started with SIGINT ignored (a
shell's background job, some container inits): Dagster maps SIGTERM to whatever SIGINT does,
so it used to ignore SIGTERM too and waited to be killed."""

from __future__ import annotations

import signal
import subprocess
import sys

from streamflow.infra.processes import free_port, port_is_free
from tests.conftest import wait_for


def test_the_code_server_stops_on_sigterm_when_started_with_sigint_ignored(tmp_path):
    port = free_port()
    log = tmp_path / "code-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow_defs.code_server", "-h", "127.0.0.1", "-p",
             str(port), "-m", "streamflow_defs.definitions", "--location-name", "signals"],
            stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_for(lambda: proc.poll() is not None or not port_is_free(port), timeout_s=120,
                 message="the code server listening")
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
        assert code is not None, "the code server ignored SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
