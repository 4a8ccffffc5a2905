"""Where each µs per event goes: the sink draining a backlog of N demo events, then the two
micro-batch steps on what it landed, each sampled with py-spy (nothing added to the hot loops)
while the CPU time of every process of the stack is counted over the same interval.

    python -m benchmarks.profile [N]      # default 100,000 events (1 % invalid, 5 % late)

Writes benchmarks/results/<stamp>-profile.json (µs of CPU per event: per process, per source
line of the sampled Python, and inclusive per StreamFlow function) with py-spy's raw stacks in
benchmarks/results/<stamp>-profile/; docs/BENCHMARKS.md ("Where each µs goes") reads from it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from benchmarks.backbone import consumed
from benchmarks.harness import (
    RESULTS,
    Stack,
    environment,
    isolated_stack,
    poll_until,
    produce_demo_events,
    write_results,
)
from resources import KafkaResource
from streamflow import topics
from streamflow.db.engine import connect_admin, libpq_url
from streamflow.infra import kafka_server, postgres_server
from streamflow.microbatch import notifications, windows

SAMPLES_PER_S = 250
TOP_LINES = 25
# py-spy's raw format: one line per distinct stack, "frame;frame;... count", each frame
# "function (path:line)", the leaf last.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):(?P<line>\d+)\)$")


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU time of ``proc`` and of its children, living and exited (PostgreSQL's backends,
    the JVM's threads count in the JVM)."""
    try:
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in proc.children(recursive=True):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    except psutil.Error:
        return 0.0
    return total


class CpuMeter:
    """CPU seconds of the stack's servers and of one worker over an interval."""

    def __init__(self, st: Stack, worker: psutil.Process | None = None) -> None:
        self.processes = {"postgresql": postgres_server.postmaster_of(
            st.settings.postgres_dir / "data")}
        for node, state in kafka_server.node_states(st.settings):
            if state is not None:
                self.processes[f"kafka {node.node_id}"] = psutil.Process(state.pid)
        if worker is not None:
            self.processes["worker"] = worker
        self.started = {name: cpu_seconds(p) for name, p in self.processes.items() if p}
        self.wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        used = {name: cpu_seconds(p) - self.started[name]
                for name, p in self.processes.items() if p}
        return used | {"wall": time.monotonic() - self.wall}


@contextmanager
def sampled(pid: int, out: Path) -> Iterator[None]:
    """py-spy sampling ``pid`` into ``out``: the thread holding the GIL (Python's CPU; C code
    that releases the GIL, such as librdkafka's or libpq's waits, is not in it)."""
    spy = subprocess.Popen(  # noqa: S603
        [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid), "--rate",
         str(SAMPLES_PER_S), "--format", "raw", "--gil", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # attached
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        _, err = spy.communicate(timeout=120)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")


def stacks(path: Path) -> Iterator[tuple[list[tuple[str, str, int]], int]]:
    """(frames root first as (function, path, line), samples) per line of a raw profile."""
    for text in path.read_text().splitlines():
        trace, _, count = text.rpartition(" ")
        frames = []
        for frame in trace.split(";"):
            if match := _FRAME.match(frame):
                frames.append((match["function"], match["path"], int(match["line"])))
        if frames and count.isdigit():
            yield frames, int(count)


def summarise(path: Path, events: int, *, ours: Callable[[str], bool]) -> dict:
    """µs of sampled CPU per event: each leaf source line (self time; a C call shows as the
    Python line that made it), and each of our functions inclusive of what it calls."""
    per_event = 1e6 / SAMPLES_PER_S / events
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(path):
        total += count
        function, file, line = frames[-1]
        leaves[f"{function} ({_short(file)}:{line})"] += count
        for name in {f"{fn} ({_short(fp)})" for fn, fp, _ in frames if ours(fp)}:
            inclusive[name] += count
    return {
        "sampled_us_per_event": round(total * per_event, 2),
        "top_lines_us_per_event": {k: round(v * per_event, 2)
                                   for k, v in leaves.most_common(TOP_LINES)},
        "functions_us_per_event": {k: round(v * per_event, 2)
                                   for k, v in inclusive.most_common(TOP_LINES)}}


def _short(path: str) -> str:
    """A frame's file as py-spy names it, without the directories before its package."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    for package in ("streamflow/", "benchmarks/", "resources/"):
        if path.startswith(package):
            return path
        if f"/{package}" in path:
            return package + path.split(f"/{package}", 1)[1]
    return Path(path).name


def _ours(path: str) -> bool:
    """StreamFlow's own code (py-spy names a file relative to sys.path when it can)."""
    return "site-packages" not in _short(path) and _short(path).startswith("streamflow/")


def _per_event(cpu: dict[str, float], events: int) -> dict[str, float]:
    return {name: round(seconds * 1e6 / events, 2) if name != "wall" else round(seconds, 2)
            for name, seconds in cpu.items()}


def profile_sink(st: Stack, topic: str, events: int, out: Path) -> dict:
    """`streamflow sink` draining the backlog, sampled from its first landing to its last
    (its start-up and idle exit left out)."""
    proc = st.start("sink", "--topic", topic, "--group", topic, "--metrics-port", "0",
                    "--stop-when-idle", "2")
    with psycopg.connect(libpq_url(st.database_url), autocommit=True) as conn:
        first = poll_until(lambda: consumed(conn, topic, topic), 120, "the sink's first landing")
        meter = CpuMeter(st, psutil.Process(proc.pid))
        with sampled(proc.pid, out):
            poll_until(lambda: consumed(conn, topic, topic) >= events, 600,
                       "the sink's last landing", interval_s=0.05)
            cpu = meter.stop()
    proc.wait(60)
    measured = events - first
    return {"events_measured": measured, "cpu_us_per_event": _per_event(cpu, measured),
            **summarise(out, measured, ours=_ours)}


def profile_steps(st: Stack, events: int, out: Path) -> dict:
    """The contract step, then the windows step, in this process, sampled by py-spy."""
    kafka = KafkaResource(bootstrap_servers=st.bootstrap)
    kafka.producer()
    time.sleep(1)  # connected, as a run's resource is by the time its step publishes
    found = {}
    with connect_admin(st.database_url) as conn:
        for name, step in (
                ("contract", lambda: notifications.run(
                    conn, 2**62, lambda m: kafka.publish(topics.NOTIFICATIONS, m),
                    kafka.publish_dead_letters)),
                ("windows", lambda: windows.run(
                    conn, 2**62, lambda m: kafka.publish(topics.ANALYTICS, m)))):
            path = out.with_name(f"{out.stem}-{name}.txt")
            meter = CpuMeter(st, psutil.Process(os.getpid()))
            with sampled(os.getpid(), path):
                started = time.perf_counter()
                result = step()
                seconds = time.perf_counter() - started
                cpu = meter.stop()
            found[name] = {"seconds": round(seconds, 3),
                           "cpu_us_per_event": _per_event(cpu, events),
                           **summarise(path, events, ours=_ours)}
            if phases := getattr(result, "phases", None):
                found[name]["seconds_by_phase"] = phases.rounded()
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    events = int(args[0]) if args else 100_000
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = RESULTS / f"{stamp}-profile"
    folder.mkdir(parents=True, exist_ok=True)
    with isolated_stack() as st:
        topic = topics.create_topic(st.kafka, "bench-profile")
        produce_demo_events(st, topic, events)
        document = {"environment": environment(st), "events": events,
                    "samples_per_s": SAMPLES_PER_S,
                    "sink": profile_sink(st, topic, events, folder / "sink.txt"),
                    "steps": profile_steps(st, events, folder / "step.txt"),
                    "note": "µs of CPU per event: cpu_us_per_event from the kernel's count "
                            "for each process over the interval (the worker, PostgreSQL "
                            "with its backends, the broker; the sink from its first landing "
                            "to its last, per event landed in between); the rest from py-spy "
                            "samples of the thread holding the GIL (a C call counts at the "
                            "Python line that made it)."}
    path = write_results("profile", document, stamp)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
