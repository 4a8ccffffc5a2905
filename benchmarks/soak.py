"""`make soak`: the full local stack (producer, sink, Dagster, live view) at a sustained rate
for a set time, to show that what it uses stays flat.

    python -m benchmarks.soak                  # 30 minutes at 2,000 events/s
    python -m benchmarks.soak --quick          # 4 minutes at 2,000 events/s (docs untouched)
    python -m benchmarks.soak --rate 5000 --minutes 60
    python -m benchmarks.soak --lifecycle      # 60 minutes with the storage lifecycle
                                               # (benchmarks/soak_lifecycle.py)

The stack is `streamflow up` on an isolated home, its demo producer at --rate
(STREAMFLOW_DEMO_RATE). Once the first window is out and a warm-up has passed, each sample
records the RSS and PSS of every process of the stack (a process summed with its children:
PostgreSQL's backends, the Dagster code server's run workers), the disk each store uses, the
sink's lag behind Kafka, the micro-batch backlog behind the sink, the micro-batch runs that
finished and the windows that became visible (pipeline.WindowWatch, polled every 0.5 s).
Each series is then reduced to its first-third mean, last-third mean and least-squares slope
per hour (``trend``): flat means the last third sits where the first one did.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from benchmarks import plots, report
from benchmarks.harness import (
    RESULTS,
    Stack,
    environment,
    isolated_stack,
    percentile,
    write_results,
)
from benchmarks.pipeline import WARM_UP_S, WindowWatch
from benchmarks.stack_probe import Sample, StackProbe, WindowPoint
from streamflow import stack

# Window visibility is timed to this resolution (as in `make bench`); resources are sampled
# at the plan's slower interval, since reading them costs the 2 shared cores more.
WINDOW_POLL_S = 0.5
# Memory counts as flat when the total PSS's last-third mean is within 10 % of its first-third
# mean. PSS, not RSS: RSS counts a shared page once per process that touched it, so summed
# over PostgreSQL's backends it counts the shared buffers many times over, and it climbs as
# each backend touches more of them (30-minute soak: PostgreSQL RSS 1,055 -> 2,453 MB while
# its PSS sat at ~645 MB from minute 10 on). A judgement, not a law: the broker still grows
# into its fixed heap in the first minutes, so tighter would flag that; each series' slope
# per hour is reported beside the verdict.
FLAT_TOLERANCE = 0.10
# The sink keeps up when it has landed this share of what was produced: a healthy sink lags
# by what arrived during its last batch or two, a fraction of a percent even over 4 minutes.
KEPT_UP_RATIO = 0.95


@dataclass(frozen=True)
class SoakPlan:
    rate: float = 2_000.0  # events/s from the demo producer: 40x the `streamflow up` default
    minutes: float = 30.0
    sample_s: float = 10.0

    @property
    def seconds(self) -> float:
        return self.minutes * 60


FULL = SoakPlan()
QUICK = SoakPlan(minutes=4.0, sample_s=5.0)



# -- the summary (pure) ----------------------------------------------------------------------

class Point(NamedTuple):
    t_s: float
    value: float


@dataclass(frozen=True)
class Trend:
    points: int
    first_third_mean: float | None
    last_third_mean: float | None
    slope_per_hour: float | None  # least squares, in the series' unit per hour

    @property
    def change(self) -> float | None:
        """last-third mean / first-third mean - 1 (None when the first is 0 or unknown)."""
        if not self.first_third_mean or self.last_third_mean is None:
            return None
        return self.last_third_mean / self.first_third_mean - 1


def trend(points: Sequence[Point]) -> Trend:
    """First-third mean, last-third mean (by sample order: samples are evenly spaced, runs
    and windows nearly so) and the least-squares slope per hour of a series."""
    n = len(points)
    if n < 3:
        return Trend(n, None, None, None)
    third = n // 3
    values = [p.value for p in points]
    t_mean, v_mean = statistics.fmean(p.t_s for p in points), statistics.fmean(values)
    spread = sum((p.t_s - t_mean) ** 2 for p in points)
    slope = (sum((p.t_s - t_mean) * (p.value - v_mean) for p in points) / spread
             if spread else 0.0)
    return Trend(n, statistics.fmean(values[:third]), statistics.fmean(values[-third:]),
                 slope * 3600)


def _rounded(t: Trend) -> dict:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {"points": t.points, "first_third_mean": r(t.first_third_mean),
            "last_third_mean": r(t.last_third_mean), "slope_per_hour": r(t.slope_per_hour),
            "change": r(t.change)}


def _quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "p50": round(statistics.median(ordered), 2),
            "p95": round(percentile(ordered, 0.95), 2), "max": round(ordered[-1], 2)}


def series(samples: Sequence[Sample]) -> dict[str, list[Point]]:
    """Every series of a soak, by name (unit in the name)."""
    names = sorted({name for s in samples for name in s.processes})
    out: dict[str, list[Point]] = {
        f"rss_mb.{name}": [Point(s.t_s, s.processes[name].rss_mb)
                           for s in samples if name in s.processes] for name in names}
    out["rss_mb.total"] = [Point(s.t_s, s.total_rss_mb) for s in samples]
    out["pss_mb.total"] = [Point(s.t_s, s.total_pss_mb) for s in samples]
    for store in sorted({name for s in samples for name in s.disk_mb}):
        out[f"disk_mb.{store}"] = [Point(s.t_s, s.disk_mb[store]) for s in samples
                                   if store in s.disk_mb]
    out["sink_lag_events"] = [Point(s.t_s, s.sink_lag) for s in samples]
    out["microbatch_backlog_rows"] = [Point(s.t_s, s.backlog) for s in samples]
    out["run_seconds"] = [Point(r.ended_s, r.seconds) for s in samples for r in s.runs]
    out["window_latency_s"] = [Point(w.visible_s, w.latency_s)
                               for s in samples for w in s.windows]
    return out


def summarize(samples: Sequence[Sample]) -> dict:
    """Trends of every series, quantiles of run duration and window latency, restarts,
    whether the sink kept up (KEPT_UP_RATIO) and whether memory stayed flat (FLAT_TOLERANCE)."""
    all_series = series(samples)
    trends = {name: trend(points) for name, points in all_series.items()}
    runs = [r for s in samples for r in s.runs]
    pids: dict[str, set[int]] = {}
    for s in samples:
        for name, mem in s.processes.items():
            pids.setdefault(name, set()).add(mem.pid)
    seconds = samples[-1].t_s - samples[0].t_s if len(samples) > 1 else 0.0
    pss = trends["pss_mb.total"]
    produced = samples[-1].produced if samples else 0
    landed = samples[-1].landed if samples else 0
    return {
        "seconds": seconds,
        "events_produced": produced,
        "events_landed": landed,
        "events_per_s": round(landed / seconds) if seconds else None,
        "sink_kept_up": produced > 0 and landed >= KEPT_UP_RATIO * produced,
        "kept_up_ratio": KEPT_UP_RATIO,
        "trends": {name: _rounded(t) for name, t in trends.items()},
        "run_seconds": _quantiles([p.value for p in all_series["run_seconds"]]),
        "window_latency_s": _quantiles([p.value for p in all_series["window_latency_s"]]),
        "failed_runs": sum(r.status != "SUCCESS" for r in runs),
        "restarts": {name: len(found) - 1 for name, found in sorted(pids.items())},
        "memory_flat": pss.change is not None and abs(pss.change) <= FLAT_TOLERANCE,
        "flat_tolerance": FLAT_TOLERANCE,
    }


# -- the run -------------------------------------------------------------------------------

def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(s: Sample, before: Sample | None, plan: SoakPlan) -> str:
    rate = s.landed / s.t_s if s.t_s else 0.0
    stalled = before is not None and s.landed == before.landed and s.sink_lag > 0
    return (f"soak {s.t_s:5.0f}/{plan.seconds:.0f} s  landed {s.landed:,} ({rate:,.0f}/s)  "
            f"lag {s.sink_lag:,}  backlog {s.backlog:,}  RSS {s.total_rss_mb:,.0f} MB  "
            f"runs +{len(s.runs)}  windows +{len(s.windows)}"
            + ("  SINK STALLED (see logs/sink.log)" if stalled else ""))


def run_soak(st: Stack, plan: SoakPlan, echo=_log, keep_logs: Path | None = None) -> dict:
    """Start the workers, wait for the first window and a warm-up, then sample for
    ``plan.minutes``. Ctrl-C ends the sampling early and keeps what was sampled. The stack's
    logs are copied to ``keep_logs`` (its home is a temporary directory)."""
    stack.start_workers(st.settings, st.database_url, echo=echo)
    samples: list[Sample] = []
    interrupted = False
    probe = StackProbe(st).setup()
    try:
        first_window_s, started = probe.warm_up(echo)
        watch = WindowWatch(datetime.fromtimestamp(started, tz=UTC))
        pending: list[WindowPoint] = []
        next_sample = started
        try:
            while True:
                pending += [WindowPoint(round(w.visible_at - started, 1), round(max(
                    w.latency_s, 0.0), 2)) for w in watch.poll(probe.conn)]
                now = time.time()
                if now >= next_sample:
                    samples.append(probe.sample(now, pending))
                    pending = []
                    echo(_progress(samples[-1], samples[-2] if len(samples) > 1 else None,
                                   plan))
                    if now - started >= plan.seconds:
                        break
                    next_sample += plan.sample_s
                time.sleep(WINDOW_POLL_S)
        except KeyboardInterrupt:
            interrupted = True
            echo("interrupted: summing up what was sampled")
    finally:
        probe.close()
        stack.stop_workers(st.settings)
        if keep_logs is not None:
            shutil.copytree(st.settings.logs_dir, keep_logs, dirs_exist_ok=True)
    return {
        "plan": asdict(plan),
        "first_window_after_start_s": round(first_window_s, 1),
        "warm_up_s": WARM_UP_S,
        "interrupted": interrupted,
        "late_event_amendments": watch.amended_groups,
        "summary": summarize(samples),
        "samples": [asdict(s) for s in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.minutes:.0f} minutes, a sample every {QUICK.sample_s:.0f} s")
    parser.add_argument("--rate", type=float, help=f"events/s (default {FULL.rate:,.0f})")
    parser.add_argument("--minutes", type=float, help="how long to sample, after the warm-up")
    parser.add_argument("--lifecycle", action="store_true",
                        help="partitions of 5 m kept 15 m (--quick: 5 m, 12 minutes), archived "
                             "and dropped by Dagster's schedules: storage flat, every event "
                             "accounted for (benchmarks/soak_lifecycle.py)")
    args = parser.parse_args(argv)
    if args.lifecycle:
        return _lifecycle(args)
    plan = QUICK if args.quick else FULL
    plan = replace(plan, rate=args.rate or plan.rate, minutes=args.minutes or plan.minutes)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _log(f"soak: {plan.minutes:g} minutes at {plan.rate:,.0f} events/s "
         f"(ends about {datetime.now() + timedelta(seconds=plan.seconds + 180):%H:%M})")
    logs = RESULTS / f"{stamp}-soak" / "logs"  # git ignores logs/
    with isolated_stack(STREAMFLOW_DEMO_RATE=plan.rate) as st:
        document = {"quick": args.quick, "stamp": stamp, "environment": environment(st),
                    **run_soak(st, plan, keep_logs=logs)}
    path = write_results("soak", document, stamp)
    png = plots.soak(document, RESULTS / f"{stamp}-soak.png")
    print(report.soak_table(document))
    if not args.quick and not document["interrupted"]:
        report.refresh_soak(document)
        shutil.copy(png, report.DOCS / "img" / "soak.png")  # the docs show the latest full run
        _log("docs/BENCHMARKS.md refreshed")
    _log(f"results: {path}\n         {png}\n         {logs}/ (the stack's logs)")
    return 0


def _lifecycle(args: argparse.Namespace) -> int:
    from benchmarks import soak_lifecycle

    plan = soak_lifecycle.QUICK if args.quick else soak_lifecycle.FULL
    plan = replace(plan, rate=args.rate or plan.rate, minutes=args.minutes or plan.minutes)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _log(f"lifecycle soak: {plan.minutes:g} minutes at {plan.rate:,.0f} events/s, periods of "
         f"{plan.interval} kept {plan.retention} (ends about "
         f"{datetime.now() + timedelta(seconds=plan.seconds + 300):%H:%M})")
    document = soak_lifecycle.main(plan, args.quick, stamp, _log)
    path = write_results("soak-lifecycle", document, stamp)
    print(soak_lifecycle.table(document))
    _log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
