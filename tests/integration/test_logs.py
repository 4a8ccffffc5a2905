"""librdkafka's log lines go through Python logging, once per minute per message, never
straight to stderr; STREAMFLOW_LOG_FORMAT=json makes a process's stderr JSON lines only.

Both against a port nothing listens on: the broker-down case that used to flood stderr
(measured before: ~20 "Connection refused" lines a second per client).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from streamflow import logs
from streamflow.infra.processes import free_port
from streamflow.settings import env_var_names
from tests.conftest import wait_for

# A consumer polled for POLL_S against a closed port: librdkafka retries every ~50 ms.
POLL_S = 3.0
CONSUMER = textwrap.dedent(f"""
    import logging, sys, time
    from streamflow import kafka_clients
    from streamflow.settings import load_settings

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(name)s %(levelname)s %(message)s")
    consumer = kafka_clients.consumer(
        load_settings(KAFKA_BOOTSTRAP_SERVERS=sys.argv[1]).kafka, "log-test")
    consumer.subscribe(["user-events"])
    deadline = time.monotonic() + {POLL_S}
    while time.monotonic() < deadline:
        consumer.poll(0.2)
    consumer.close()
""")


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in env_var_names()}
    return {**env, "STREAMFLOW_HOME": str(tmp_path / "home"), **extra}


def test_a_broker_that_is_down_is_logged_once_not_flooded_on_stderr(tmp_path):
    closed = f"127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-c", CONSUMER, closed], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # was one "%3|...|FAIL|rdkafka#consumer-1| ..." per retry
    refused = [line for line in result.stdout.splitlines()
               if line.startswith(f"{logs.LIBRDKAFKA_LOGGER} ERROR FAIL [rdkafka#consumer-1]")
               and "Connection refused" in line]
    assert len(refused) == 1, result.stdout  # the repeats are held back for a minute
    assert closed in refused[0]


def test_json_logs_are_json_lines_only(tmp_path):
    """`streamflow live` with Kafka down: its banner and librdkafka's complaint, each a JSON
    object on a line of its own."""
    port = free_port()
    stderr_path = tmp_path / "live.err"
    env = _env(tmp_path, STREAMFLOW_LOG_FORMAT="json",
               KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    with stderr_path.open("wb") as stderr:
        live = subprocess.Popen([sys.executable, "-m", "streamflow.cli", "live", "--port",
                                 str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for(lambda: live.poll() is not None or logs.LIBRDKAFKA_LOGGER.encode()
                 in stderr_path.read_bytes(), timeout_s=60,
                 message="librdkafka's connection error in the live view's log")
    finally:
        live.terminate()
        live.wait(30)
    lines = stderr_path.read_text().splitlines()
    documents = [json.loads(line) for line in lines]  # every line, not only some
    for document in documents:
        assert {"time", "level", "logger", "message"} <= document.keys(), document
    messages = {d["logger"]: d["message"] for d in documents}
    assert messages["streamflow.cli"] == f"live view on http://127.0.0.1:{port}/"
    assert "Connection refused" in messages[logs.LIBRDKAFKA_LOGGER]
