"""A fresh machine needs only the README's two commands: `make up` / `make test` install the
system programs they need (scripts/system-packages), and CI runs the same `make test`
through .ci/run in .github/workflows/ci.yml (which cannot run here: checked statically)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "system-packages"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BASH = shutil.which("bash") or "/bin/bash"  # found before PATH is narrowed to the fakes


def _tools(tmp_path: Path, *present: str) -> Path:
    """A PATH directory holding only the named programs (and a recording apt-get)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in present:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    apt = bin_dir / "apt-get"
    apt.write_text(f'#!/bin/bash\necho "$*" >> {tmp_path / "apt.log"}\n')
    apt.chmod(0o755)
    return bin_dir


def _as_nobody() -> list[str]:
    """The prefix that runs a command as the unprivileged user nobody when this is root (none
    otherwise). setpriv (util-linux: in every Debian image) needs only root's CAP_SETUID,
    which a container keeps; a user namespace (unshare) is refused in one, and a skip there
    hid this path from CI."""
    if os.geteuid() != 0:
        return []
    nobody = pwd.getpwnam("nobody")
    return [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}", "--clear-groups"]


def _run(bin_dir: Path, *programs: str, as_user: bool = False,
         script: Path = SCRIPT) -> subprocess.CompletedProcess:
    # Only shell built-ins besides apt-get: PATH can hold just the fakes.
    command = [*(_as_nobody() if as_user else []), BASH, str(script), *programs]
    return subprocess.run(command, env={"PATH": str(bin_dir)}, capture_output=True, text=True,
                          timeout=30)


def test_nothing_happens_when_everything_is_there(tmp_path):
    result = _run(_tools(tmp_path, "java", "mvn", "chromium"), "java", "mvn", "chromium")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "apt.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the install path runs as root")
def test_root_installs_only_what_is_missing(tmp_path):
    result = _run(_tools(tmp_path, "mvn"), "java", "mvn", "chromium")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -qq", "install -y -qq openjdk-17-jre-headless chromium"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the install path runs as root")
def test_an_archive_without_java_17_gets_java_21(tmp_path):
    """Debian 13 and newer Ubuntus ship no openjdk-17: Kafka 4 runs on 21 as well."""
    bin_dir = _tools(tmp_path, "mvn", "chromium")
    (bin_dir / "apt-cache").write_text("#!/bin/sh\nexit 100\n")  # "no such package"
    (bin_dir / "apt-cache").chmod(0o755)
    result = _run(bin_dir, "java", "mvn", "chromium")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == [
        "update -qq", "install -y -qq openjdk-21-jre-headless"]


def test_without_root_it_stops_with_the_command_to_run():
    # A directory nobody can use whatever the checkout's permissions: the script, the fakes,
    # and the log a wrongly called apt-get would write.
    with tempfile.TemporaryDirectory() as shared_dir:
        shared = Path(shared_dir)
        shared.chmod(0o777)
        script = Path(shutil.copy(SCRIPT, shared / SCRIPT.name))
        result = _run(_tools(shared, "java"), "java", "mvn", "chromium", as_user=True,
                      script=script)
        assert result.returncode == 1, result.stderr
        assert "missing: mvn chromium" in result.stderr
        assert "sudo apt-get update && sudo apt-get install -y maven chromium" in result.stderr
        assert not (shared / "apt.log").exists()


def test_make_up_and_make_test_check_the_system_packages():
    """`make up` (through fetch-kafka) and `make test` call the one script first."""
    makefile = (ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        assert match, f"no {target} target"
        return match.group(1)

    assert "fetch-kafka" in makefile.split("\nup:", 1)[1].splitlines()[0]
    fetch = recipe("fetch-kafka")
    assert fetch.index("$(SYSTEM_PACKAGES) java mvn") < fetch.index("kafka fetch")
    test = recipe("test")
    assert test.index("$(SYSTEM_PACKAGES) java mvn chromium") < test.index("pytest")
    assert "SYSTEM_PACKAGES := scripts/system-packages" in makefile


def test_ci_runs_make_test_only():
    commands = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert commands[-1] == "exec make test"
    assert not any("apt-get" in line for line in commands)  # the Makefile's script does it


def test_the_workflow_runs_ci_run_on_the_supported_python():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    [job] = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs == [".ci/run"]
    # Root in a Debian image: scripts/system-packages installs with apt-get as on a new machine.
    image = job["container"]["image"]
    match = re.fullmatch(r"python:(\d+\.\d+)-(bookworm|trixie)", image)
    assert match, image
    python = match.group(1)
    minimum = re.search(r">=\s*(\d+\.\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert python == minimum, "CI runs the oldest supported Python (requires-python)"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py" + python.replace(".", "")
