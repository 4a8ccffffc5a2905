"""Dagster's own storage under the retention job, on SQLite and on PostgreSQL storage (README
"Dagster's own storage"; docs/BENCHMARKS.md "Dagster's own storage under its retention").

Each storage is the instance `streamflow up` prepares (`prepare_dagster_instance`: SQLite files
in DAGSTER_HOME, or dagster-postgres in a database of its own). The workload is cycles of an
hour's intake scaled down: stand-in micro-batch runs (three assets with the micro-batch's kind
of metadata, executed in process: the real one needs Kafka and the sinks), the Kafka-topics
sensor's runless observations, runless check evaluations and the landing sensor's reported
materializations. After each cycle the retention purges what is older than the cycle before
it (`purge_runs` and `purge_events`, what the `dagster_retention` job runs), so one cycle stays
in storage, as one retention age of runs does in a deployment. The storage must level off:
the last cycle's size within 10 % of the second's (the first fills empty pages).

    python -m benchmarks.run --only dagster
"""

# No `from __future__ import annotations`: Dagster reads the assets' context type hints.

import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg

from assets.event_retention import purge_events
from assets.retention import RetentionPolicy, purge_runs
from benchmarks.harness import Stack
from benchmarks.storage import fresh_database
from streamflow.db.engine import libpq_url
from streamflow.settings import load_settings
from streamflow.supervisor import prepare_dagster_instance

# The bar (as the lifecycle soak's): the last cycle within 10 % of the second.
FLAT_WITHIN = 0.10
TOPICS = ("user-events", "analytics", "notifications", "dead-letter-topic")


@dataclass(frozen=True)
class Plan:
    cycles: int = 5
    runs: int = 120       # micro-batch runs a cycle
    # The sensors' runless reports a cycle, each one observation per topic, a check evaluation
    # and the landing sensor's materialization (the daemon's own ticks are not made here).
    ticks: int = 80


FULL = Plan()
QUICK = Plan(cycles=3, runs=25, ticks=15)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dg.asset(key=["bench", "windows"])
def _windows(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("windows step")
    return dg.MaterializeResult(metadata={"rows": 1_000, "from_seq": 1, "to_seq": 5_000,
                                          "seconds": 0.4, "lag": dg.MetadataValue.int(0)})


@dg.asset(key=["bench", "notifications"], deps=[_windows])
def _notifications(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("contract step")
    return dg.MaterializeResult(metadata={"valid": 4_750, "invalid": 250, "seconds": 0.9,
                                          "reasons": dg.MetadataValue.md("| a | b |\n|---|---|")})


@dg.asset(key=["bench", "dlq_report"], deps=[_notifications])
def _dlq_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    context.log.info("dlq report")
    return dg.MaterializeResult(metadata={"rows": 12})


# Named as the real job, so the retention's policy selects its runs by the same name.
_JOB = dg.define_asset_job("microbatch", selection=[_windows, _notifications, _dlq_report])
_DEFS = dg.Definitions(assets=[_windows, _notifications, _dlq_report], jobs=[_JOB])


# The console logger at WARNING: the runs' events are stored all the same.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _cycle(instance: dg.DagsterInstance, plan: Plan, cycle: int) -> None:
    job = _DEFS.resolve_job_def("microbatch")
    for _ in range(plan.runs):
        if not job.execute_in_process(instance=instance, run_config=_QUIET).success:
            raise RuntimeError("a stand-in micro-batch run failed")
    for tick in range(plan.ticks):
        for topic in TOPICS:
            instance.report_runless_asset_event(dg.AssetObservation(
                asset_key=dg.AssetKey(["kafka", topic]), metadata={"messages": tick},
                tags={"dagster/data_version": f"{cycle}-{tick}"}))
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(["kafka", TOPICS[0]]), check_name="replicated",
            passed=tick % 10 != 0))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset_key=dg.AssetKey(["raw", "events"]), metadata={"rows": tick}))


def _bytes(home: Path, database_url: str | None) -> int:
    if database_url is None:
        return sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def _measure(storage: str, plan: Plan, database_url: str | None) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"streamflow-dagster-{storage}-"))
    try:
        settings = load_settings(STREAMFLOW_HOME=str(home), DAGSTER_HOME=str(home / "dagster"),
                                 STREAMFLOW_DAGSTER_STORAGE=storage)
        url = database_url or "postgresql://unused/unused"  # SQLite storage never reads it
        prepare_dagster_instance(settings, url, echo=lambda _: None)
        with _database_url_env(url), dg.DagsterInstance.from_config(
                str(settings.dagster_home_dir)) as instance:
            return _cycles(instance, plan, home, database_url)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def _database_url_env(url: str):
    """dagster.yaml's PostgreSQL storage reads DATABASE_URL from the environment, as the
    stack's Dagster processes have it."""
    before = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = before


def _cycles(instance: dg.DagsterInstance, plan: Plan, home: Path,
            database_url: str | None) -> dict:
    policy = RetentionPolicy(jobs=("microbatch",))
    empty = _bytes(home, database_url)
    cycles, previous_start = [], None
    for cycle in range(plan.cycles):
        start = datetime.now(UTC)
        began = time.perf_counter()
        _cycle(instance, plan, cycle)
        grown = _bytes(home, database_url)
        purge = {"runs": 0, "events": 0, "check_executions": 0, "seconds": 0.0}
        if previous_start is not None:  # keep the last cycle: everything before it goes
            now = datetime.now(UTC)
            t0 = time.perf_counter()
            runs = purge_runs(instance, now, RetentionPolicy(
                jobs=policy.jobs, success_age=now - start, max_runs=10 * plan.runs))
            events = purge_events(instance, now, now - start)
            purge = {"runs": runs.total, "events": events.total_events,
                     "check_executions": events.check_executions,
                     "seconds": round(time.perf_counter() - t0, 2)}
        after = _bytes(home, database_url)
        cycles.append({"cycle": cycle + 1, "seconds": round(time.perf_counter() - began, 1),
                       "bytes_after_intake": grown, "bytes_after_purge": after,
                       "purged": purge})
        _log(f"  cycle {cycle + 1}: {grown / 2**20:,.1f} MB after {plan.runs} runs and "
             f"{plan.ticks} sensor reports, {after / 2**20:,.1f} MB after the purge "
             f"({purge['runs']} runs, {purge['events']} events in {purge['seconds']} s)")
        previous_start = start
    first_cycle = cycles[0]["bytes_after_intake"] - empty
    second, last = cycles[1]["bytes_after_purge"], cycles[-1]["bytes_after_purge"]
    growth = last / second - 1
    return {"empty_bytes": empty, "cycles": cycles,
            "bytes_per_run_first_cycle": round(first_cycle / plan.runs),
            "last_vs_second": round(growth, 4), "flat": growth <= FLAT_WITHIN}


def bench_dagster_storage(st: Stack, plan: Plan) -> dict:
    """Both storages, one after the other: the same plan, sizes after each cycle."""
    out: dict = {"plan": {"cycles": plan.cycles, "runs_per_cycle": plan.runs,
                          "ticks_per_cycle": plan.ticks, "topics": len(TOPICS)},
                 "flat_within": FLAT_WITHIN}
    for storage in ("sqlite", "postgres"):
        _log(f"dagster storage on {storage}: {plan.cycles} cycles of {plan.runs} runs ...")
        url = fresh_database(st, "dagster") if storage == "postgres" else None
        out[storage] = _measure(storage, plan, url)
    return out


def table(document: dict) -> str:
    rows = ["| storage | per run with its share of reports (first cycle) | after each purge, MB "
            "| last vs second |",
            "|---|---:|---|---:|"]
    for storage in ("sqlite", "postgres"):
        r = document[storage]
        sizes = " → ".join(f"{c['bytes_after_purge'] / 2**20:,.1f}" for c in r["cycles"])
        rows.append(f"| {storage} | {r['bytes_per_run_first_cycle'] / 1024:,.0f} KiB | {sizes} "
                    f"| {r['last_vs_second']:+.1%} ({'flat' if r['flat'] else 'grows'}) |")
    return "\n".join(rows)
