"""`make bench`: every benchmark in one run on one isolated stack; results as JSON.

    python -m benchmarks.run            # full: 1M-event backlog
    python -m benchmarks.run --quick    # CI-sized: 100k events
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks import backbone, live, pipeline
from benchmarks.harness import environment, isolated_stack, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--only", choices=["backbone", "windows", "live"],
                        help="one group only")
    args = parser.parse_args(argv)
    events = 100_000 if args.quick else 1_000_000
    document: dict = {"quick": args.quick}
    if args.only in (None, "backbone"):
        with isolated_stack() as st:
            document["environment"] = environment(st)
            print("producer ...", file=sys.stderr)
            document["producer"] = backbone.bench_producer(st, events)
            print("sink ...", file=sys.stderr)
            document["sink"] = backbone.bench_sink(st, events, compare_sync_commit=events // 5)
    if args.only in (None, "live"):
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            print("live view ...", file=sys.stderr)
            document["live"] = live.bench_live(st)
    if args.only in (None, "windows"):
        # A fresh stack: a throughput backlog is not the steady stream this measures.
        with isolated_stack() as st:
            document.setdefault("environment", environment(st))
            print("window visibility (full stack with Dagster) ...", file=sys.stderr)
            document["windows"] = pipeline.bench_window_visibility(
                st, 60 if args.quick else 180)
    path = write_results(args.only or "all", document)
    print(json.dumps(document, indent=2))
    print(f"results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
