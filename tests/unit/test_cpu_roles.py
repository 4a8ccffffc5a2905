"""The processes of a running stack, as the catch-up benchmark attributes their CPU."""

import pytest

from benchmarks.cpu_roles import role

PY = "/work/main/.venv/bin/python"


@pytest.mark.parametrize(("cmdline", "expected"), [
    (["java", "-Xmx1G", "-cp", "/home/kafka/libs/*", "kafka.Kafka", "server.properties"],
     "kafka"),
    (["postgres: postgres streamflow [local] COPY"], "postgresql"),
    ([PY, "-c", "from multiprocessing.forkserver import main; main(11, 12, ['x'])"],
     "dagster runs"),
    ([PY, "-m", "streamflow_defs.code_server", "-h", "127.0.0.1", "-p", "4000"],
     "dagster code server"),
    ([f"{PY[:-6]}dagster-daemon", "run", "-w", "workspace.yaml"], "dagster daemon"),
    ([f"{PY[:-6]}dagster-webserver", "-h", "127.0.0.1"], "dagster webserver"),
    ([PY, "-m", "streamflow.cli", "produce", "--max-rate"], "producer"),
    ([PY, "-m", "streamflow.cli", "sink", "--metrics-port", "0"], "sink"),
    ([PY, "-m", "streamflow.cli", "live"], "live view"),
    ([PY, "-m", "streamflow.cli", "supervise"], "supervisor"),
    (["sshd: root@pts/0"], "other (python)"),
])
def test_each_process_of_the_stack_has_its_role(cmdline, expected):
    assert role(cmdline, "python") == expected


def test_a_process_without_a_command_line_goes_by_its_name():
    assert role([], "postgres") == "postgresql"
