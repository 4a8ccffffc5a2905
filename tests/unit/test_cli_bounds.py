"""Numeric flags out of range stop the command with a one-line usage error, no traceback."""

import pytest
from typer.testing import CliRunner

from streamflow.cli import app


@pytest.mark.parametrize("args", [
    ["sink", "--batch-size", "2000000"],
    ["sink", "--batch-size", "0"],
    ["sink", "--metrics-port", "70000"],
    ["produce", "--users", "100000000"],
    ["produce", "--rate", "1e9"],
    ["produce", "--metrics-port", "-1"],
])
def test_out_of_range_flags_are_usage_errors(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output
    assert "Traceback" not in result.output
