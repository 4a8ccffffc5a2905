"""Log rotation of STREAMFLOW_HOME/logs: copytruncate under a writer that keeps its O_APPEND
handle, as the supervisor's children do, and the supervisor loop that calls it."""

import os

import pytest

from streamflow import supervisor
from streamflow.infra import kafka_server
from streamflow.infra.log_rotation import generations, rotate_logs
from streamflow.settings import load_settings

MAX_BYTES = 1000
CHUNK = 300  # one write of the "child"; not a divisor of MAX_BYTES, so rotations fall mid-way


def _chunk(i: int) -> bytes:
    return f"line {i:06d} ".encode().ljust(CHUNK - 1, b"x") + b"\n"


def _sizes(directory) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in directory.iterdir()}


@pytest.mark.parametrize("backups", [0, 1, 3])
def test_rotation_bounds_the_disk_and_keeps_the_newest_lines(tmp_path, backups):
    log = tmp_path / "producer.log"
    written = b""
    # Opened once before any rotation and never reopened, like a child's stdout.
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for i in range(200):
            os.write(fd, _chunk(i))
            written += _chunk(i)
            rotate_logs(tmp_path, max_bytes=MAX_BYTES, backups=backups)
            files = generations(log)
            assert len(files) <= backups + 1, _sizes(tmp_path)
            assert sum(f.stat().st_size for f in files) <= (backups + 1) * (MAX_BYTES + CHUNK)
            assert all(f.stat().st_size <= MAX_BYTES + CHUNK for f in files), _sizes(tmp_path)
    finally:
        os.close(fd)
    files = generations(log)
    assert [f.name for f in files] == ["producer.log"] + [f"producer.log.{n}"
                                                          for n in range(1, backups + 1)]
    kept = b"".join(f.read_bytes() for f in reversed(files))  # oldest copy first
    # The writer went on at offset 0 after each truncate (no hole of NULs), and, with no
    # concurrent writes here, the kept bytes are exactly the newest ones written.
    assert b"\0" not in kept
    assert written.endswith(kept)
    if backups:  # with none, the last write may just have been truncated away
        assert kept.endswith(_chunk(199))
        assert len(kept) > backups * MAX_BYTES  # each copy is a full file, not a few lines


def test_a_log_under_the_limit_is_untouched(tmp_path):
    small = tmp_path / "live.log"
    small.write_bytes(b"x" * MAX_BYTES)  # at the limit: not over it
    other = tmp_path / "notes.txt"
    other.write_bytes(b"y" * (10 * MAX_BYTES))  # not a *.log
    before = {path: path.stat().st_mtime_ns for path in (small, other)}

    assert rotate_logs(tmp_path, max_bytes=MAX_BYTES, backups=3) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.log", "notes.txt"]
    assert {path: path.stat().st_mtime_ns for path in (small, other)} == before
    assert small.read_bytes() == b"x" * MAX_BYTES


def test_copies_beyond_a_lowered_backup_count_are_dropped(tmp_path):
    log = tmp_path / "sink.log"
    for n in range(1, 6):  # left by STREAMFLOW_LOG_BACKUPS=5
        log.with_name(f"sink.log.{n}").write_bytes(f"copy {n}".encode())
    log.write_bytes(b"z" * (MAX_BYTES + 1))

    rotated = rotate_logs(tmp_path, max_bytes=MAX_BYTES, backups=2)

    assert [(r.path, r.size) for r in rotated] == [(log, MAX_BYTES + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sink.log", "sink.log.1", "sink.log.2"]
    assert log.read_bytes() == b""
    assert log.with_name("sink.log.1").read_bytes() == b"z" * (MAX_BYTES + 1)
    assert log.with_name("sink.log.2").read_bytes() == b"copy 1"


class StopAfter:
    """A stop flag that lets the supervisor loop turn ``turns`` times."""

    def __init__(self, turns: int) -> None:
        self.turns = turns

    def __bool__(self) -> bool:
        self.turns -= 1
        return self.turns < 0


def _settings(tmp_path):
    return load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_LOG_MAX_MB=1,
                         STREAMFLOW_LOG_BACKUPS=2)


def test_the_supervisor_loop_rotates_the_logs(tmp_path):
    settings = _settings(tmp_path)
    settings.logs_dir.mkdir(parents=True)
    big = settings.logs_dir / "dagster-daemon.log"
    big.write_bytes(b"d" * (settings.log_max_bytes + 1))
    small = settings.logs_dir / "supervisor.log"
    small.write_bytes(b"s" * 10)

    supervisor.Supervisor(settings, [], StopAfter(1)).run()  # one loop turn, about 0.5 s

    assert big.stat().st_size == 0
    assert (settings.logs_dir / "dagster-daemon.log.1").stat().st_size == (
        settings.log_max_bytes + 1)
    assert small.read_bytes() == b"s" * 10


def test_the_supervisor_checks_the_logs_once_per_interval(tmp_path):
    settings = _settings(tmp_path)
    settings.logs_dir.mkdir(parents=True)
    log = settings.logs_dir / "producer.log"
    sup = supervisor.Supervisor(settings, [], StopAfter(0))
    over = b"p" * (settings.log_max_bytes + 1)

    log.write_bytes(over)
    sup._rotate_logs_if_due(1000.0)
    assert log.stat().st_size == 0
    log.write_bytes(over)
    sup._rotate_logs_if_due(1000.0 + supervisor.LOG_ROTATION_INTERVAL_S - 1)
    assert log.stat().st_size == len(over)  # not due yet
    sup._rotate_logs_if_due(1000.0 + supervisor.LOG_ROTATION_INTERVAL_S)
    assert log.stat().st_size == 0
    assert sorted(p.name for p in settings.logs_dir.iterdir()) == [
        "producer.log", "producer.log.1", "producer.log.2"]


def test_a_failed_rotation_does_not_stop_the_supervisor(tmp_path, monkeypatch, caplog):
    settings = _settings(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(supervisor.log_rotation, "rotate_logs", full_disk)
    supervisor.Supervisor(settings, [], StopAfter(0))._rotate_logs_if_due(1.0)
    assert "log rotation" in caplog.text and "No space left" in caplog.text


def test_kafka_version_is_found_after_the_start_up_lines_were_rotated(tmp_path):
    settings = _settings(tmp_path)
    settings.logs_dir.mkdir(parents=True)
    log = settings.logs_dir / "kafka.log"
    log.write_text("INFO Kafka version: 4.1.1\n" + "INFO chatter\n" * 100)
    rotate_logs(settings.logs_dir, max_bytes=100, backups=2)
    log.write_text("INFO more chatter\n")
    assert kafka_server.version_from_log(settings) == "4.1.1"


@pytest.mark.parametrize(("name", "value"), [("STREAMFLOW_LOG_MAX_MB", "0"),
                                             ("STREAMFLOW_LOG_BACKUPS", "-1"),
                                             ("STREAMFLOW_LOG_BACKUPS", "1000")])
def test_rotation_settings_are_bounded(monkeypatch, name, value):
    from streamflow.errors import SettingsError

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}="):
        load_settings()
