"""`streamflow --version`: the package's version (pyproject.toml, through the installed
metadata) and the Kafka the embedded broker runs (pom.xml)."""

import tomllib

from typer.testing import CliRunner

from streamflow.cli import app
from streamflow.infra import kafka_server
from tests.conftest import ROOT


def test_version_names_streamflow_and_kafka():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"streamflow {version} (Apache Kafka {kafka_server.kafka_version()})\n"


def test_version_needs_no_command_and_no_settings():
    # Eager: answered before settings are read, so a broken environment still tells it.
    result = CliRunner().invoke(app, ["--version"], env={"STREAMFLOW_KAFKA_PORT": "ninety"})
    assert result.exit_code == 0 and result.output.startswith("streamflow ")
