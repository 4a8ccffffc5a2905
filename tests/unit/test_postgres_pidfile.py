"""A stale postmaster.pid never makes StreamFlow signal a process that is not its postgres."""

import os
import subprocess
import sys

from streamflow.infra.postgres_server import postmaster_of


def test_a_pid_file_naming_another_process_is_ignored(tmp_path):
    # A live process that is not postgres (as after a reboot reused the pid).
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "postmaster.pid").write_text(f"{other.pid}\n{tmp_path}\n")
        assert postmaster_of(tmp_path) is None
        assert other.poll() is None  # untouched
    finally:
        other.kill()


def test_no_pid_file_or_a_dead_pid_means_not_running(tmp_path):
    assert postmaster_of(tmp_path) is None
    (tmp_path / "postmaster.pid").write_text("999999999\n")
    assert postmaster_of(tmp_path) is None


def test_our_own_pid_is_not_postgres_either(tmp_path):
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n")
    assert postmaster_of(tmp_path) is None
