"""Logging for every StreamFlow process: one setup, text or JSON lines.

``setup(settings)`` runs once at the start of each process StreamFlow configures: the CLI's
workers (``produce``, ``sink``, ``live``) and the supervisor. STREAMFLOW_LOG_FORMAT picks
the form of each line on stderr:

- ``text``: ``time LEVEL logger: message``, for people;
- ``json``: one JSON object per line, for a log collector: ``time`` (ISO 8601, UTC),
  ``level``, ``logger``, ``message``, and ``exception`` (the formatted traceback) when the
  record has one. Uncaught exceptions and warnings become such records too.

librdkafka's own log lines reach Python logging through ``librdkafka_logger()`` (every
client from ``kafka_clients`` gets it), with ``RepeatFilter`` so that a broker that is down
is reported once a minute instead of twenty times a second.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: kafka_clients imports this module
    from streamflow.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LIBRDKAFKA_LOGGER = "streamflow.librdkafka"
# Seconds during which a repeated librdkafka message is held back after it was let through
# once: a broker that is down is retried every ~50 ms (measured: ~20 identical
# "Connection refused" lines a second per client); once a minute still shows it is down.
REPEAT_WINDOW_S = 60.0
# Distinct messages remembered by one RepeatFilter: a bound on its memory (one entry per
# message kind per broker; a few dozen in practice).
REPEAT_MAX_KEYS = 1000
# What varies between repeats of one librdkafka message: timings ("after 0ms in state
# CONNECT"), counts ("1/1 brokers are down") and its own note on repeats it held back
# (", 1 identical error(s) suppressed").
_VARYING = re.compile(r"\d+ms\b|\d+/\d+ brokers")
_SUPPRESSED = re.compile(r", \d+ identical error\(s\) suppressed")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def setup(settings: Settings) -> None:
    """Configure this process's logging from STREAMFLOW_LOG_LEVEL and STREAMFLOW_LOG_FORMAT."""
    configure(settings.log_level, settings.log_format)


def configure(level: str, form: str, stream=None) -> None:
    """Root handler on ``stream`` (stderr) in ``form`` ("text" or "json"). As
    ``logging.basicConfig``, a no-op when the root logger has a handler already."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    if form == "json":
        # Without these a traceback or a warning would be lines of plain text in the stream.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def structured() -> bool:
    """Whether this process logs JSON lines (then plain progress lines go through logging)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def notice(message: str, logger: str = "streamflow") -> None:
    """A start-up line (an address to open): plain on stderr, or a record when logs are JSON."""
    if structured():
        logging.getLogger(logger).info(message)
    else:
        sys.stderr.write(message + "\n")


def _log_uncaught(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("streamflow").critical("uncaught exception",
                                             exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("streamflow").critical(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


@dataclass
class _Seen:
    since: float  # when the message was last let through (monotonic seconds)
    held: int = 0  # repeats held back since


class RepeatFilter(logging.Filter):
    """Lets a message through once per ``window_s``; the repeats in between are held back and
    counted, and the next one let through says how many there were."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic,
                 max_keys: int = REPEAT_MAX_KEYS) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[int, str], _Seen] = {}
        # librdkafka logs are served by whichever thread polls a client (the live view
        # consumes in a thread of its own).
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        key = (record.levelno, _VARYING.sub("#", _SUPPRESSED.sub("", message)))
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.since < self.window_s:
                seen.held += 1
                return False
            held = seen.held if seen is not None else 0
            self._seen[key] = _Seen(now)
            if len(self._seen) > self.max_keys:
                self._forget(now)
        if held:
            record.msg = f"{message} ({held} more like it in the last {self.window_s:g}s)"
            record.args = ()
        return True

    def _forget(self, now: float) -> None:
        """Drop the entries past their window; if all are recent, the oldest half."""
        self._seen = {k: s for k, s in self._seen.items() if now - s.since < self.window_s}
        if len(self._seen) > self.max_keys:
            recent = sorted(self._seen.items(), key=lambda item: item[1].since)
            self._seen = dict(recent[len(recent) // 2:])


@functools.cache
def librdkafka_logger() -> logging.Logger:
    """The logger every Kafka client gets (confluent-kafka's ``logger`` property).

    confluent-kafka then queues librdkafka's log lines and hands them to this logger from
    ``poll()``, ``consume()`` and ``flush()`` (never from librdkafka's own threads), as
    ``logger.log(level, "%s [%s] %s", facility, client name, text)``.
    """
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    logger.addFilter(RepeatFilter())
    return logger


class Occasional:
    """When a recurring event is due for a log line: at most once per ``interval_s``, so a
    flood of them (bad messages, a frame that keeps failing) is one line per interval with
    their count, not one line each. Thread-safe."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = float("-inf")

    def count(self) -> int:
        """Record one occurrence: how many there were since the last line (this one
        included) if a line is due now, else 0."""
        now = self.clock()
        with self._lock:
            self._unlogged += 1
            if now - self._logged_at < self.interval_s:
                return 0
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
            return count
