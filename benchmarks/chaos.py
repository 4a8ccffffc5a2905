"""`make chaos`: events flow while the sink is SIGKILLed, PostgreSQL and the broker are
restarted; then every Kafka offset is accounted for.

    python -m benchmarks.chaos            # 1M events, 5 sink kills, 1 Postgres + 1 broker restart
    python -m benchmarks.chaos --quick    # 50k events, 2 kills, 1 Postgres restart

Accounting: every message of the chaos topic has one (partition, offset). It must end as
exactly one row in raw.events or one ingest dead letter. ``lost`` = offsets with neither;
``duplicates`` = rows + dead letters beyond one per offset. Both must be 0, and rows + dead
letters must equal ``produced``: the events the broker acknowledged, as the producer's
delivery reports counted them (not the planned count). The producer sends
1 % invalid events so the dead-letter path is under fault too. The reduced plan runs inside
`make test` (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from benchmarks.harness import create_topic, isolated_stack, worker_env, write_results
from streamflow import topics
from streamflow.db.engine import libpq_url
from streamflow.infra import kafka_server, postgres_server
from streamflow.settings import Settings


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 1_000_000
    rate: float = 20_000.0  # producer events/s: faults land while events still flow
    sink_kills: int = 5
    postgres_restarts: int = 1
    broker_restarts: int = 1
    invalid_rate: float = 0.01
    settle_timeout_s: float = 600.0

    def faults(self) -> list[str]:
        """Kills spread around the restarts: kill, postgres, kill, broker, kill, ..."""
        restarts = ["postgres"] * self.postgres_restarts + ["broker"] * self.broker_restarts
        order: list[str] = []
        kills = self.sink_kills
        for restart in restarts:
            if kills:
                order.append("sink_kill")
                kills -= 1
            order.append(restart)
        return order + ["sink_kill"] * kills


QUICK = ChaosPlan(events=50_000, rate=5_000.0, sink_kills=2, postgres_restarts=1,
                  broker_restarts=0, settle_timeout_s=300.0)

_COVERED = """
    SELECT count(*) FROM (
        SELECT kafka_partition, kafka_offset FROM raw.events WHERE kafka_topic = %(t)s
        UNION
        SELECT source_partition, source_offset FROM raw.dead_letters
        WHERE source_topic = %(t)s AND stage = 'ingest') AS offsets
"""
_ROWS = "SELECT count(*) FROM raw.events WHERE kafka_topic = %(t)s"
_LETTERS = ("SELECT count(*) FROM raw.dead_letters WHERE source_topic = %(t)s "
            "AND stage = 'ingest'")


class Worker:
    """A `streamflow` CLI worker process that can be killed and started again."""

    def __init__(self, args: list[str], env: dict[str, str], log_path) -> None:
        self.args, self.env, self.log_path = args, env, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "streamflow.cli", *self.args],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class ChaosProducer(Worker):
    """`streamflow produce` of the plan, leaving its delivery counts in a stats file."""

    def __init__(self, topic: str, plan: ChaosPlan, env: dict[str, str], logs_dir: Path) -> None:
        self.stats_file = logs_dir / f"{topic}-producer.json"
        super().__init__(["produce", "--topic", topic, "--count", str(plan.events), "--rate",
                          str(plan.rate), "--invalid-rate", str(plan.invalid_rate),
                          "--metrics-port", "0", "--stats-file", str(self.stats_file)],
                         env, logs_dir / "chaos-producer.log")

    def acknowledged(self) -> int | None:
        """Events the broker acknowledged; None when the producer wrote no counts (killed)."""
        try:
            return json.loads(self.stats_file.read_text())["delivered"]
        except FileNotFoundError:
            return None


def _count(database_url: str, topic: str) -> tuple[int, int, int]:
    """(covered offsets, rows, ingest dead letters); (-1, -1, -1) while PostgreSQL is down."""
    try:
        with psycopg.connect(libpq_url(database_url), autocommit=True,
                             connect_timeout=3) as conn:
            return tuple(conn.execute(q, {"t": topic}).fetchone()[0]
                         for q in (_COVERED, _ROWS, _LETTERS))
    except psycopg.OperationalError:
        return -1, -1, -1


def run_chaos(settings: Settings, bootstrap: str, database_url: str, plan: ChaosPlan,
              echo=print) -> dict:

    tag = uuid.uuid4().hex[:8]
    topic, dlq_topic = f"chaos-{tag}", f"chaos-dlq-{tag}"
    for name in (topic, dlq_topic):
        create_topic(bootstrap, name)
    env = worker_env(settings, bootstrap, database_url, STREAMFLOW_LOG_LEVEL="WARNING")
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    producer = ChaosProducer(topic, plan, env, settings.logs_dir)
    sink = Worker(["sink", "--topic", topic, "--group", f"chaos-{tag}", "--dlq-topic",
                   dlq_topic, "--instance-id", f"chaos-sink-{tag}", "--metrics-port", "0"],
                  env, settings.logs_dir / "chaos-sink.log")
    faults = plan.faults()
    spacing = plan.events / plan.rate / (len(faults) + 1)
    echo(f"chaos: {plan.events:,} events at {plan.rate:,.0f}/s to {topic}; faults every "
         f"~{spacing:.1f} s: {', '.join(faults)}")
    started = time.monotonic()
    producer.start()
    sink.start()
    injected = []
    for i, fault in enumerate(faults, 1):
        time.sleep(max(0.0, started + i * spacing - time.monotonic()))
        at = time.monotonic()
        if fault == "sink_kill":
            sink.kill()
            sink.start()  # as the supervisor would
        elif fault == "postgres":
            postgres_server.stop(settings)
            time.sleep(2.0)
            postgres_server.start(settings, echo=lambda _m: None)
        else:
            kafka_server.stop(settings)
            time.sleep(2.0)
            kafka_server.start(settings, echo=lambda _m: None)
        covered = _count(database_url, topic)[0]
        injected.append({"fault": fault, "at_s": round(at - started, 1),
                         "took_s": round(time.monotonic() - at, 1), "covered_after": covered})
        echo(f"  {fault} at {at - started:5.1f} s ({covered:,} offsets accounted for)")
    producer_rc = producer.proc.wait(plan.settle_timeout_s)
    deadline = time.monotonic() + plan.settle_timeout_s
    while True:
        kafka_messages = topics.message_count(bootstrap, topic)
        covered, rows, letters = _count(database_url, topic)
        if covered >= kafka_messages or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    time.sleep(2.0)  # anything still in flight (a duplicate would show now)
    covered, rows, letters = _count(database_url, topic)
    sink_rc = sink.stop()
    result = {
        "plan": asdict(plan),
        "faults": injected,
        "produced": producer.acknowledged(),
        "producer_exit_code": producer_rc,
        "kafka_messages": kafka_messages,
        "landed": rows,
        "dead_lettered": letters,
        "duplicates": rows + letters - covered,
        "lost": kafka_messages - covered,
        "sink_exit_code_on_sigterm": sink_rc,
        "seconds": round(time.monotonic() - started, 1),
    }
    echo(f"chaos: produced {result['produced'] or 0:,} (acknowledged), landed {rows:,}, "
         f"dead-lettered {letters:,}, duplicates {result['duplicates']}, "
         f"lost {result['lost']} in {result['seconds']} s")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced plan of make test")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else ChaosPlan()
    with isolated_stack() as st:
        result = run_chaos(st.settings, st.bootstrap, st.database_url, plan,
                           echo=lambda m: print(m, file=sys.stderr))
    path = write_results("chaos", {"quick": args.quick, "chaos": result})
    from benchmarks import report

    report.refresh_reliability(result)
    print(json.dumps(result, indent=2))
    print(f"results: {path}", file=sys.stderr)
    ok = (result["lost"] == 0 and result["duplicates"] == 0 and result["producer_exit_code"] == 0
          and result["produced"] == result["landed"] + result["dead_lettered"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
