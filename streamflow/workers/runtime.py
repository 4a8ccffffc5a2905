"""What every worker loop needs: a stop flag set by SIGTERM/SIGINT, a progress line, backoff."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections import deque

from streamflow import logs, metrics


class StopFlag:
    """SIGTERM/SIGINT only flip a flag; the loop finishes its batch, flushes, and exits 0."""

    def __init__(self) -> None:
        self._set = False

    def install(self) -> StopFlag:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self._set = True

    def __bool__(self) -> bool:
        return self._set


class Progress:
    """A live progress line: carriage-return updates on a terminal, plain lines in a log
    (records of the ``streamflow.<worker>`` logger when the logs are JSON lines)."""

    def __init__(self, worker: str, *, interval_s: float = 1.0, log_interval_s: float = 10.0,
                 stream=sys.stderr) -> None:
        self.worker = worker
        self.stream = stream
        self.tty = stream.isatty()
        self.interval_s = interval_s if self.tty else log_interval_s
        self.started = time.monotonic()
        self._last = self.started
        # (time, count) samples over the last ~10 s give a rate that reacts within seconds.
        self._samples: deque[tuple[float, int]] = deque(maxlen=11)
        self._samples.append((self.started, 0))

    def rate(self) -> float:
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, count: int, detail: str = "") -> None:
        now = time.monotonic()
        if now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, count))
            metrics.RATE.labels(self.worker).set(self.rate())
        if now - self._last < self.interval_s:
            return
        self._last = now
        line = f"{self.worker}: {count:,} events, {self.rate():,.0f}/s {detail}".rstrip()
        self._write(("\r" + line + "\x1b[K") if self.tty else line + "\n")

    def finish(self, count: int, detail: str = "") -> None:
        elapsed = time.monotonic() - self.started
        average = count / elapsed if elapsed > 0 else 0.0
        if self.tty:
            self.stream.write("\n")
        self._write(f"{self.worker}: done, {count:,} events in {elapsed:.1f}s "
                    f"({average:,.0f}/s) {detail}".rstrip() + "\n")

    def _write(self, text: str) -> None:
        if not self.tty and logs.structured():
            logging.getLogger(f"streamflow.{self.worker}").info(text.strip())
            return
        self.stream.write(text)
        self.stream.flush()


class Backoff:
    """Exponential backoff: 0.5 s, 1 s, 2 s ... capped at 30 s; reset after a success."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.next_s = first_s

    def next(self) -> float:
        delay, self.next_s = self.next_s, min(self.next_s * 2, self.cap_s)
        return delay

    def reset(self) -> None:
        self.next_s = self.first_s
