"""CPU seconds of every process on the machine over an interval, by its role in the stack
(the broker, PostgreSQL, each worker, Dagster's processes and its runs): where two cores went
while the whole pipeline ran. Processes come and go (a micro-batch run lives seconds), so
each one's CPU time is sampled twice a second and its last sample counts."""

from __future__ import annotations

import contextlib
import os
import threading

import psutil

# (role, words that all appear in the command line), first match wins.
ROLES: list[tuple[str, tuple[str, ...]]] = [
    ("kafka", ("java", "kafka")),
    ("postgresql", ("postgres",)),
    ("dagster runs", ("forkserver",)),
    ("dagster daemon", ("dagster", "daemon")),
    ("dagster webserver", ("dagster", "webserver")),
    ("dagster code server", ("code_server",)),
    ("producer", ("streamflow", "produce")),
    ("sink", ("streamflow", "sink")),
    ("live view", ("streamflow", "live")),
    ("supervisor", ("streamflow", "supervise")),
]


def role(cmdline: list[str], name: str) -> str:
    """The role of a process from its command line (its name when it has none)."""
    words = " ".join(cmdline) or name
    for what, needed in ROLES:
        if all(word in words for word in needed):
            return what
    return f"other ({name})"


class CpuByRole:
    """Start sampling at construction; ``stop()`` returns CPU seconds by role (the benchmark's
    own process is "bench", the rest of the machine "other (its process name)")."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._sample(first=True)
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._thread.start()

    def _sample(self, *, first: bool = False) -> None:
        me = os.getpid()
        for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            info = proc.info
            times = info["cpu_times"]
            if times is None:
                continue
            used = times.user + times.system
            pid = info["pid"]
            known = self._last.get(pid)
            # Its role as first seen: a process that exited and waits to be reaped (a
            # zombie) has no command line left.
            what = known[0] if known else (
                "bench" if pid == me else role(info["cmdline"] or [], info["name"]))
            if first:
                self._first[pid] = used
            self._last[pid] = (what, used)

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            with contextlib.suppress(psutil.Error):
                self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        totals: dict[str, float] = {}
        for pid, (what, used) in self._last.items():
            totals[what] = totals.get(what, 0.0) + used - self._first.get(pid, 0.0)
        return {what: round(seconds, 1) for what, seconds in
                sorted(totals.items(), key=lambda item: -item[1]) if seconds >= 0.05}
