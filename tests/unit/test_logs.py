"""Logging: JSON lines, repeats of one librdkafka message held back, librdkafka's lines in
Python logging, progress lines as records when the logs are JSON."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

import pytest

from streamflow import kafka_clients, logs
from streamflow.infra.processes import free_port
from streamflow.settings import load_settings
from streamflow.workers.runtime import Progress

KEYS = {"time", "level", "logger", "message"}


def _record(message: str, *args, level: int = logging.ERROR, exc_info=None,
            name: str = "streamflow.test") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, args, exc_info)


def test_a_json_line_has_time_level_logger_and_message():
    line = logs.JsonFormatter().format(_record("landed %d rows\nin one batch", 3))
    assert "\n" not in line  # one object per line, whatever the message holds
    document = json.loads(line)
    assert document.keys() == KEYS
    assert document["message"] == "landed 3 rows\nin one batch"
    assert (document["level"], document["logger"]) == ("ERROR", "streamflow.test")
    assert document["time"].endswith("+00:00") and "T" in document["time"]


def test_a_json_line_carries_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed", exc_info=sys.exc_info())
    document = json.loads(logs.JsonFormatter().format(record))
    assert document.keys() == KEYS | {"exception"}
    assert "Traceback" in document["exception"] and "ValueError: boom" in document["exception"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REFUSED = ("FAIL", "rdkafka#consumer-1",
           "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused "
           "(after {}ms in state CONNECT{})")


def _refused(after_ms: int, suppressed: int = 0) -> logging.LogRecord:
    fac, name, text = REFUSED
    note = f", {suppressed} identical error(s) suppressed" if suppressed else ""
    return _record("%s [%s] %s", fac, name, text.format(after_ms, note),
                   name="streamflow.librdkafka")


def test_repeats_are_held_back_for_a_window_then_counted():
    clock = Clock()
    repeats = logs.RepeatFilter(window_s=60, clock=clock)
    assert repeats.filter(_refused(0))
    # librdkafka retries every ~50 ms; the timing in the text differs between repeats, and
    # now and then it notes repeats it held back itself.
    held = [repeats.filter(_refused(ms, suppressed)) for ms, suppressed in
            ((0, 0), (2, 0), (0, 1), (1, 3))]
    assert held == [False] * 4
    other = _record("%s [%s] %s", "FAIL", "rdkafka#producer-1", "another broker is down")
    assert repeats.filter(other)  # a different message is not held back
    clock.now += 61
    again = _refused(0)
    assert repeats.filter(again)
    assert again.getMessage().endswith("(4 more like it in the last 60s)")
    assert not repeats.filter(_refused(3))  # a new window starts


def test_the_memory_of_messages_is_bounded():
    clock = Clock()
    repeats = logs.RepeatFilter(window_s=60, clock=clock, max_keys=10)
    for n in range(25):
        assert repeats.filter(_record(f"message {n}"))
    assert len(repeats._seen) <= 10


def test_an_occasional_event_is_due_once_per_interval_with_its_count():
    clock = Clock()
    occasional = logs.Occasional(10, clock=clock)
    assert occasional.count() == 1  # the first is logged at once
    assert [occasional.count() for _ in range(5)] == [0] * 5
    clock.now += 10
    assert occasional.count() == 6  # the five held back, and this one
    assert occasional.count() == 0


def test_librdkafka_lines_arrive_in_python_logging(caplog):
    """A consumer of a closed port: librdkafka's "Connection refused" comes through the
    ``streamflow.librdkafka`` logger when the client is polled (stderr: the integration
    test in tests/integration/test_logs.py)."""
    closed = load_settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    consumer = kafka_clients.consumer(closed.kafka, "log-test")
    caplog.set_level(logging.INFO, logger=logs.LIBRDKAFKA_LOGGER)
    try:
        deadline = time.monotonic() + 20
        while not caplog.records and time.monotonic() < deadline:
            consumer.poll(0.2)
    finally:
        consumer.close()
    [record] = [r for r in caplog.records if r.name == logs.LIBRDKAFKA_LOGGER][:1]
    assert record.levelno == logging.ERROR
    assert "rdkafka#consumer" in record.getMessage()
    assert "Connection refused" in record.getMessage()


@pytest.fixture
def json_root_handler():
    """The root handler ``logs.setup`` installs for STREAMFLOW_LOG_FORMAT=json (pytest's
    own handlers keep ``logs.configure`` from adding it here)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_progress_lines_become_json_records(json_root_handler):
    plain = io.StringIO()
    progress = Progress("sink", stream=plain)
    progress.finish(1234)
    assert plain.getvalue() == ""  # not a plain line between the JSON ones
    [document] = [json.loads(line) for line in json_root_handler.getvalue().splitlines()]
    assert document["logger"] == "streamflow.sink"
    assert document["message"].startswith("sink: done, 1,234 events in ")


def test_progress_lines_stay_plain_in_text_mode():
    plain = io.StringIO()
    Progress("sink", stream=plain).finish(5)
    assert plain.getvalue().startswith("sink: done, 5 events in ")


def test_an_uncaught_exception_is_a_json_record_too():
    script = ("import logging, warnings; from streamflow import logs; "
              "logs.configure('INFO', 'json'); logging.getLogger('streamflow.x').info('hi'); "
              "warnings.warn('careful'); raise ValueError('boom')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    hello, warning, crash = [json.loads(line) for line in result.stderr.splitlines()]
    assert hello["message"] == "hi" and hello["logger"] == "streamflow.x"
    assert warning["logger"] == "py.warnings" and "careful" in warning["message"]
    assert crash["level"] == "CRITICAL" and "ValueError: boom" in crash["exception"]
