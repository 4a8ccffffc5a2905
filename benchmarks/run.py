"""`make bench`: every benchmark in one run on this machine; results as JSON and PNG plots in
benchmarks/results/, and (full runs) the table in docs/BENCHMARKS.md.

    python -m benchmarks.run            # full: 1M-event backlog, 20 s per latency rate
    python -m benchmarks.run --quick    # CI-sized: 100k events, 5 s per rate (docs untouched)
    python -m benchmarks.run --only latency
    python -m benchmarks.run --only storage     # also: migration, lookup (Storage over time)
    python -m benchmarks.run --only dagster     # Dagster's storage under its retention
    python -m benchmarks.run --only quix        # the sink vs Quix Streams' PostgreSQLSink
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime

from benchmarks import (
    backbone,
    catchup,
    cluster,
    dagster_storage,
    history,
    latency,
    live,
    pipeline,
    plots,
    quix,
    report,
    storage,
)
from benchmarks.harness import RESULTS, environment, isolated_stack, write_results

GROUPS = ("backbone", "latency", "live", "windows", "catchup", "history", "cluster",
          "storage", "migration", "lookup", "dagster", "quix")
# Storage over time: rows of raw.events the migration moves into partitions, and per daily
# partition for the sink's look-up across them (full; quick).
MIGRATION_ROWS = (1_000_000, 50_000)
LOOKUP_ROWS_PER_DAY = (1_000_000, 100_000)
# Sustained rates (events/s) at which window visibility is measured on the full stack, after
# the demo rate; each on a fresh stack.
LOADED_RATES = (1_000, 5_000, 20_000)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--only", choices=GROUPS, help="one group only")
    parser.add_argument("--skip", choices=GROUPS, action="append", default=[],
                        help="leave a group out (its last results stay in the docs)")
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else 1_000_000
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document: dict = {"quick": args.quick, "stamp": stamp}
    wanted = [args.only] if args.only else [g for g in GROUPS if g not in args.skip]
    if "backbone" in wanted:
        with isolated_stack() as st:
            document["environment"] = environment(st)
            _log(f"producer: {events:,} events, then Kafka ProducerPerformance ...")
            document["producer"] = backbone.bench_producer(st, events)
            _log("sink: drain the backlog, raw COPY, reference design, commit modes ...")
            document["sink"] = backbone.bench_sink(st, events, compare_sync_commit=events // 5)
            _log("producer peak RSS ...")
            document["producer_rss"] = backbone.producer_peak_rss(st, events)
    if "latency" in wanted:
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            _log("latency at 1k / 5k / 20k events/s, broker end-to-end ...")
            document["latency"] = latency.bench_latency(st, seconds=5 if args.quick else 20)
    if "live" in wanted:
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            _log("live view ...")
            document["live"] = live.bench_live(st)
    if "windows" in wanted:
        # A fresh stack: a throughput backlog is not the steady stream this measures.
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            _log("window visibility (full stack with Dagster) ...")
            document["windows"] = pipeline.bench_window_visibility(
                st, 60 if args.quick else 180)
        document["windows_under_load"] = []
        for rate in LOADED_RATES:
            with isolated_stack(STREAMFLOW_DEMO_RATE=rate) as st:
                _log(f"window visibility at a sustained {rate:,} events/s ...")
                document["windows_under_load"].append(pipeline.bench_window_visibility(
                    st, 45 if args.quick else 120))
    if "catchup" in wanted:
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            _log(f"catch-up: {events:,} events at max rate into the full stack ...")
            document["catchup"] = catchup.bench_catch_up(st, events)
    if "history" in wanted:
        # Its own stack: millions of rows of history would change what the others measure.
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            levels = history.QUICK_LEVELS if args.quick else history.LEVELS
            _log(f"history: runs, checks and sensor at {', '.join(f'{n:,}' for n in levels)} "
                 "rows of history ...")
            document["history"] = history.bench_history(st, levels)
        if not args.quick:
            history.refresh_docs(document["history"] | {"environment": document["environment"]},
                                 f"{stamp}-{args.only or 'all'}.json")
    if "cluster" in wanted:
        with isolated_stack(STREAMFLOW_KAFKA_BROKERS=3) as st:
            document.setdefault("environment", environment(st))
            _log("cluster: 3 brokers; replication, 1-3 sinks, rebalance pauses, leader kill ...")
            document["cluster"] = cluster.bench_cluster(
                st, events // 2, quick=args.quick)
    storage_groups = [g for g in ("storage", "migration", "lookup", "dagster") if g in wanted]
    if storage_groups:
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            if "storage" in wanted:
                _log(f"storage: {events:,} events, bytes per event hot and archived ...")
                document["storage"] = storage.bench_storage(st, events)
            if "migration" in wanted:
                document["migration"] = storage.bench_migration(
                    st, MIGRATION_ROWS[args.quick])
            if "lookup" in wanted:
                document["lookup"] = storage.bench_lookup(st, LOOKUP_ROWS_PER_DAY[args.quick])
            if "dagster" in wanted:
                document["dagster_storage"] = dagster_storage.bench_dagster_storage(
                    st, dagster_storage.QUICK if args.quick else dagster_storage.FULL)
    if "quix" in wanted:
        # Its own stack: the backlog both sinks drain, nothing else on the broker or server.
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            _log(f"quix: {events:,} events, StreamFlow's sink vs Quix Streams' "
                 "PostgreSQLSink ...")
            document["quix"] = quix.bench_quix(st, events)
    path = write_results(args.only or "all", document, stamp)
    if storage_groups and not args.quick:
        storage.refresh_docs(document, path.name)
    if "quix" in wanted and not args.quick:
        quix.refresh_docs(document["quix"], path.name)
    drawn = plots.draw_all(document, RESULTS / f"{stamp}")
    print(report.benchmark_table(document))
    if not args.quick and not args.only:
        report.refresh_benchmarks(document)
        for png in drawn:  # the docs show the latest full run
            shutil.copy(png, report.DOCS / "img" / png.name.replace(stamp, "bench"))
        _log("docs/BENCHMARKS.md refreshed")
    _log(f"results: {path}" + "".join(f"\n         {p}" for p in drawn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
