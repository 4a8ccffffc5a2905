"""What a `streamflow` command that refuses to run must print."""

from __future__ import annotations

import subprocess


def assert_one_error_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    """Failed with one `error: ` line on stderr (no traceback) that names every needle."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for needle in needles:
        assert needle in lines[0]
