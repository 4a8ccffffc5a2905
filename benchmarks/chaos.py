"""`make chaos`: events flow while the sink is SIGKILLed, PostgreSQL and the broker are
restarted, a message near Kafka's 1 MB limit and one under 340 KB of headers that are not
UTF-8 arrive, and offsets are deleted under the stopped sink; then the topic is deleted and
created again and more events follow. Every Kafka offset of both incarnations is accounted
for.

    python -m benchmarks.chaos            # 1M events, 5 sink kills, 1 Postgres + 1 broker restart
    python -m benchmarks.chaos --quick    # 50k events, 2 kills, 1 Postgres restart
    (both: one oversized message, one poison-header message, one offset gap, then a
    re-creation; ChaosPlan)

Accounting (benchmarks.chaos_ledger): every message of the chaos topic has one (partition,
offset). It must end as exactly one row in raw.events, one ingest dead letter, or inside the
range of exactly one ``offset_gap`` dead letter. ``lost`` = offsets with none of these;
``duplicates`` = anything beyond one per offset. Both must be 0. The messages in Kafka must be
``produced`` (the events the broker acknowledged, as the producer's delivery reports counted
them, not the planned count) plus the messages chaos sent itself; the offsets
delete_records removed unread must be exactly those the offset_gap dead letters cover; the
oversized message must be one ``too_large`` dead letter holding every byte, the poison-header
one a ``not_json`` dead letter holding every header byte. The producer
sends 1 % invalid events so the dead-letter path is under fault too.

The re-creation comes last, on purpose: the accounting compares with each partition's end
offsets in Kafka, and deleting the topic mid-run would destroy the messages it accounts with,
with whatever the sink had not read yet; a deleted topic leaves no log start to tell how
many, so ``lost = 0`` could no longer be checked exactly. So the main run is accounted first;
then the topic is deleted and created again under the running sink, ``recreated_events``
more events are produced, and the new incarnation is accounted on its own by its topic id
(the same rules, its own ``produced`` from its producer's delivery reports), while every row
and dead letter of the old incarnation must still be there. The reduced plan runs inside
`make test` (tests/integration/test_chaos.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psycopg

from benchmarks.chaos_faults import (
    POISON_HEADERS,
    DeletedRange,
    Sent,
    delete_unread,
    send_oversized,
    send_poison_headers,
)
from benchmarks.chaos_ledger import Ledger, account, covered_now, message_outcome
from benchmarks.harness import isolated_stack, worker_env, write_results
from streamflow import kafka_clients, topics
from streamflow.dlq import Reason
from streamflow.infra import kafka_server, postgres_server
from streamflow.kafka_connection import KafkaConnection
from streamflow.settings import Settings
from streamflow.sink import incarnation

PARTITIONS = 3  # of the chaos topic (and of its new incarnation)
# Seconds without a new record in PostgreSQL after which settling stops waiting: the sink is
# stuck and the verdict (lost > 0) needs no more time. Above the sink's longest retry backoff
# (30 s, workers.runtime.Backoff).
STALL_S = 60.0


@dataclass(frozen=True)
class ChaosPlan:
    events: int = 1_000_000
    rate: float = 20_000.0  # producer events/s: faults land while events still flow
    sink_kills: int = 5
    postgres_restarts: int = 1
    broker_restarts: int = 1
    oversized_messages: int = 1
    poison_header_messages: int = 1  # not JSON, under 340 KB of headers that are not UTF-8
    offset_gaps: int = 1  # each: a sink SIGKILL with delete_records before its restart
    # Offsets each gap deletes past the stopped sink's stored offset: about 0.75 s of the gap
    # partition's third of the rate, so the producer has written them by then.
    gap_messages: int = 5_000
    # Events into the topic's new incarnation (0: no re-creation). Far fewer per partition
    # than the old incarnation's end offsets: a new topic already filled past the sink's old
    # position is the race in which a few rows keep the old id (docs/RELIABILITY.md), not
    # what this run measures.
    recreated_events: int = 20_000
    invalid_rate: float = 0.01
    settle_timeout_s: float = 600.0

    # Partitions archived, verified and dropped while it runs (benchmarks.chaos_drops): needs
    # a stack with STREAMFLOW_PARTITION_INTERVAL=1m (main does it).
    partition_drops: bool = True

    def faults(self) -> list[str]:
        """Kills spread around the other faults: kill, oversized, kill, poison_headers, kill,
        offset_gap, kill, postgres, kill, broker, ... The gap comes early, while the producer
        still fills the partition past the stopped sink."""
        others = (["oversized"] * self.oversized_messages
                  + ["poison_headers"] * self.poison_header_messages
                  + ["offset_gap"] * self.offset_gaps
                  + ["postgres"] * self.postgres_restarts + ["broker"] * self.broker_restarts)
        order: list[str] = []
        kills = self.sink_kills
        for other in others:
            if kills:
                order.append("sink_kill")
                kills -= 1
            order.append(other)
        return order + ["sink_kill"] * kills


QUICK = ChaosPlan(events=50_000, rate=5_000.0, sink_kills=2, postgres_restarts=1,
                  broker_restarts=0, gap_messages=1_000, recreated_events=5_000,
                  settle_timeout_s=300.0)


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

    def reap(self) -> None:
        """Kill the process if it still runs (a run that failed part-way leaves nothing)."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def restart_if_exited(self) -> int | None:
        """As the supervisor does: start the process again if it exited by itself (a fatal
        consumer error exits the sink with 1); the exit code, or None while it runs."""
        code = self.proc.poll() if self.proc is not None else None
        if code is not None:
            self.start()
        return code


class ChaosProducer(Worker):
    """`streamflow produce` of the plan, leaving its delivery counts in a stats file."""

    def __init__(self, topic: str, plan: ChaosPlan, env: dict[str, str], logs_dir: Path,
                 label: str = "chaos") -> None:
        self.stats_file = logs_dir / f"{topic}-{label}-producer.json"
        super().__init__(["produce", "--topic", topic, "--count", str(plan.events), "--rate",
                          str(plan.rate), "--invalid-rate", str(plan.invalid_rate),
                          "--metrics-port", "0", "--stats-file", str(self.stats_file)],
                         env, logs_dir / f"{label}-producer.log")

    def acknowledged(self) -> int | None:
        """Events the broker acknowledged; None when the producer wrote no counts (killed)."""
        try:
            return json.loads(self.stats_file.read_text())["delivered"]
        except FileNotFoundError:
            return None


class ChaosRun:
    """One run of a plan on a fresh topic: the faults, then the accounting."""

    def __init__(self, settings: Settings, kafka: KafkaConnection, database_url: str,
                 plan: ChaosPlan, echo) -> None:
        self.settings, self.kafka, self.database_url = settings, kafka, database_url
        self.plan, self.echo = plan, echo
        tag = uuid.uuid4().hex[:8]
        self.topic, self.group = f"chaos-{tag}", f"chaos-{tag}"
        dlq_topic = f"chaos-dlq-{tag}"
        topics.create_topic(kafka, self.topic, PARTITIONS)
        topics.create_topic(kafka, dlq_topic)
        self.env = worker_env(settings, database_url, STREAMFLOW_LOG_LEVEL="WARNING")
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.producer = ChaosProducer(self.topic, plan, self.env, settings.logs_dir)
        self.sink = Worker(["sink", "--topic", self.topic, "--group", self.group, "--dlq-topic",
                            dlq_topic, "--instance-id", f"chaos-sink-{tag}", "--metrics-port",
                            "0"], self.env, settings.logs_dir / "chaos-sink.log")
        self.workers: list[Worker] = [self.producer, self.sink]
        self.sent: list[Sent] = []              # the oversized messages
        self.poisoned: list[Sent] = []          # the poison-header messages
        self.deleted: list[DeletedRange] = []   # offsets deleted before the sink read them
        self.sink_exits: list[int] = []         # exit codes of a sink that stopped by itself
        self.started = time.monotonic()

    def run(self) -> dict:
        try:
            return self._run()
        finally:
            for worker in self.workers:
                worker.reap()

    def _run(self) -> dict:
        plan, faults = self.plan, self.plan.faults()
        spacing = plan.events / plan.rate / (len(faults) + 1)
        self.echo(f"chaos: {plan.events:,} events at {plan.rate:,.0f}/s to {self.topic}; faults "
                  f"every ~{spacing:.1f} s: {', '.join(faults)}")
        self.started = time.monotonic()
        self.producer.start()
        self.sink.start()
        drops = self._drops() if plan.partition_drops else None
        if drops is not None:
            drops.start()
        injected = []
        for i, fault in enumerate(faults, 1):
            self._supervise(until=self.started + i * spacing)
            at = time.monotonic()
            detail = self._inject(fault)
            injected.append(self._fault_record(fault, at, covered_now(self.database_url,
                                                                       self.topic), detail))
        producer_rc = self._wait_for(self.producer)
        restored = None
        if drops is not None:
            drops.stop()
            restored = drops.restore_all()
        kafka_messages, ledger = self._settle(None)
        result = {"plan": asdict(plan), "faults": injected,
                  **self._main_tally(producer_rc, kafka_messages, ledger)}
        if drops is not None:
            result["partition_drops"] = drops.record() | {"restored_rows": restored}
            self.echo(f"  partitions dropped under chaos: {len(drops.dropped)} in "
                      f"{drops.passes} lifecycle passes, {restored:,} rows restored for the "
                      f"ledger, {len(drops.failed)} failures")
        if plan.recreated_events:
            fault, result["recreation"] = self._recreate(ledger)
            injected.append(fault)
        result["sink_exit_code_on_sigterm"] = self.sink.stop()
        result["sink_exits"] = self.sink_exits
        result["seconds"] = round(time.monotonic() - self.started, 1)
        self.echo(summary(result))
        return result

    def _drops(self):
        from benchmarks.chaos_drops import Drops

        return Drops(self.database_url, str(self.settings.home_dir / "archive"),
                     self.settings.partition_period)

    def _supervise(self, until: float) -> None:
        """Wait until ``until`` (monotonic), starting the sink again whenever it exits by
        itself, as `streamflow up`'s supervisor would."""
        while True:
            code = self.sink.restart_if_exited()
            if code is not None:
                self.sink_exits.append(code)
                self.echo(f"  the sink exited with {code}: started again (as the supervisor "
                          "does)")
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))

    def _wait_for(self, producer: Worker) -> int:
        """The producer's exit code, supervising the sink meanwhile."""
        deadline = time.monotonic() + self.plan.settle_timeout_s
        while producer.proc.poll() is None and time.monotonic() < deadline:
            self._supervise(until=time.monotonic() + 1.0)
        return producer.proc.wait(max(deadline - time.monotonic(), 1.0))

    def _inject(self, fault: str) -> dict:
        """Inject one fault; what it did, for the result's fault list."""
        if fault == "sink_kill":
            self.sink.kill()
            self.sink.start()  # as the supervisor would
            return {}
        if fault == "offset_gap":
            self.sink.kill()
            hole = delete_unread(self.kafka, self.database_url, self.topic, self.group,
                                 self.plan.gap_messages)
            self.sink.start()
            self.deleted.append(hole)
            return {"partition": hole.partition, "deleted_from": hole.first,
                    "deleted_to": hole.end, "deleted_unread": hole.count}
        if fault == "oversized":
            sent = send_oversized(self.kafka, self.topic)
            self.sent.append(sent)
            return asdict(sent)
        if fault == "poison_headers":
            sent = send_poison_headers(self.kafka, self.topic)
            self.poisoned.append(sent)
            return asdict(sent)
        server = postgres_server if fault == "postgres" else kafka_server
        server.stop(self.settings)
        time.sleep(2.0)
        server.start(self.settings, echo=lambda _m: None)
        return {}

    def _fault_record(self, fault: str, at: float, covered: int, detail: dict) -> dict:
        self.echo(f"  {fault} at {at - self.started:5.1f} s ({covered:,} offsets accounted for)")
        return {"fault": fault, "at_s": round(at - self.started, 1),
                "took_s": round(time.monotonic() - at, 1), "covered_after": covered, **detail}

    def _settle(self, topic_id: str | None) -> tuple[int, Ledger]:
        """Wait until PostgreSQL records every message of the incarnation (``topic_id``; None:
        the only one yet), the sink records nothing new for STALL_S, or the settle timeout
        runs out; then (messages in Kafka, ledger)."""
        deadline = time.monotonic() + self.plan.settle_timeout_s
        seen, seen_at = -1, time.monotonic()
        while True:
            kafka_messages = topics.message_count(self.kafka, self.topic)
            try:
                ledger = account(self.database_url, self.topic, topic_id)
            except psycopg.OperationalError:
                ledger = None
            now = time.monotonic()
            if ledger is not None and ledger.entries != seen:
                seen, seen_at = ledger.entries, now
            if ((ledger is not None and ledger.covered >= kafka_messages) or now > deadline
                    or now - seen_at > STALL_S):
                break
            self._supervise(until=time.monotonic() + 1.0)
        time.sleep(2.0)  # anything still in flight (a duplicate would show now)
        return (topics.message_count(self.kafka, self.topic),
                account(self.database_url, self.topic, topic_id))

    def _main_tally(self, producer_rc: int, kafka_messages: int, ledger: Ledger) -> dict:
        deleted = sorted((d.partition, d.first, d.end) for d in self.deleted if d.count)
        recorded = sorted((h.partition, h.first, h.end) for h in ledger.holes)
        return {
            "produced": self.producer.acknowledged(),
            "producer_exit_code": producer_rc,
            # Messages chaos sent itself (the oversized and poison-header ones).
            "injected": len(self.sent) + len(self.poisoned),
            "kafka_messages": kafka_messages,
            "landed": ledger.rows,
            "dead_lettered": ledger.dead_letters,
            "gone_by_delete_records": sum(d.count for d in self.deleted),
            "recorded_as_offset_gap": ledger.hole_offsets,
            "offset_gap_letters": len(ledger.holes),
            "offset_gaps_as_deleted": deleted == recorded,
            "oversized": [asdict(message_outcome(self.database_url, self.topic, s.partition,
                                                 s.offset, s.size)) for s in self.sent],
            "poison_headers": [asdict(message_outcome(self.database_url, self.topic,
                                                      s.partition, s.offset, s.size,
                                                      POISON_HEADERS))
                               for s in self.poisoned],
            "duplicates": ledger.duplicates,
            "lost": kafka_messages - ledger.covered,
        }

    def _recreate(self, before: Ledger) -> tuple[dict, dict]:
        """Delete the topic and create it again under the running sink, produce
        ``recreated_events`` more, and account for the new incarnation by its topic id; the
        old incarnation's rows and dead letters must all still be there. (fault, result)"""
        at = time.monotonic()
        admin = kafka_clients.admin_client(self.kafka)
        old_id = incarnation.topic_ids(admin, [self.topic]).get(self.topic)
        new_id = incarnation.recreate_topic(self.kafka, self.topic, PARTITIONS)
        took = time.monotonic() - at
        producer = ChaosProducer(self.topic, replace(self.plan, events=self.plan.recreated_events),
                                 self.env, self.settings.logs_dir, label="chaos-recreated")
        self.workers.append(producer)
        producer.start()
        producer_rc = self._wait_for(producer)
        kafka_messages, new = self._settle(new_id)
        every = account(self.database_url, self.topic)
        old = (every.rows - new.rows, every.dead_letters - new.dead_letters,
               len(every.holes) - len(new.holes))
        fault = {"fault": "topic_recreation", "at_s": round(at - self.started, 1),
                 "took_s": round(took, 1), "covered_after": new.covered,
                 "old_topic_id": old_id, "topic_id": new_id}
        self.echo(f"  topic_recreation at {at - self.started:5.1f} s: {old_id} -> {new_id}")
        return fault, {
            "old_topic_id": old_id,
            "topic_id": new_id,
            "produced": producer.acknowledged(),
            "producer_exit_code": producer_rc,
            "kafka_messages": kafka_messages,
            "landed": new.rows,
            "dead_lettered": new.dead_letters,
            "offset_gap_letters": len(new.holes),
            "duplicates": new.duplicates,
            "lost": kafka_messages - new.covered,
            "old_incarnation_kept": old == (before.rows, before.dead_letters, len(before.holes)),
        }


def run_chaos(settings: Settings, kafka: KafkaConnection, database_url: str, plan: ChaosPlan,
              echo=print) -> dict:
    return ChaosRun(settings, kafka, database_url, plan, echo).run()


def problems(result: dict) -> list[str]:
    """What keeps a run from being clean; none: nothing lost or duplicated, every message
    accounted for, and each fault did what the plan asked."""
    plan, r = result["plan"], result.get("recreation")
    checks = [
        (result["lost"] == 0, f"{result['lost']} offsets lost"),
        (result["duplicates"] == 0, f"{result['duplicates']} offsets recorded twice"),
        (result["producer_exit_code"] == 0,
         f"the producer exited with {result['producer_exit_code']}"),
        ((result["produced"] or 0) + result["injected"] == result["kafka_messages"],
         "messages in Kafka are not the acknowledged events plus chaos's own"),
        (result["landed"] + result["dead_lettered"] + result["recorded_as_offset_gap"]
         == result["kafka_messages"],
         "rows + dead letters + offsets in offset_gap ranges are not the messages in Kafka"),
        (result["offset_gaps_as_deleted"]
         and result["gone_by_delete_records"] == result["recorded_as_offset_gap"],
         "the offset_gap dead letters do not cover exactly the offsets deleted unread"),
        (result["gone_by_delete_records"] > 0 or not plan["offset_gaps"],
         "the offset gap fault deleted nothing"),
        (len(result["oversized"]) == plan["oversized_messages"], "oversized messages missing"),
        (len(result.get("poison_headers", [])) == plan.get("poison_header_messages", 0),
         "poison-header messages missing"),
        ("partition_drops" not in result or (
            result["partition_drops"]["dropped"] > 0
            and not result["partition_drops"]["failed"]),
         f"partition drops under chaos: {result.get('partition_drops')}"),
        (result["sink_exit_code_on_sigterm"] == 0,
         f"the sink exited with {result['sink_exit_code_on_sigterm']} on SIGTERM"),
    ]
    checks += [(o["rows"] == 0 and o["dead_letters"] == 1
                and o["reason_codes"] == [Reason.TOO_LARGE.value]
                and o["stored_bytes"] == o["size"],
                f"the oversized message is not one too_large dead letter with every byte: {o}")
               for o in result["oversized"]]
    checks += [(o["rows"] == 0 and o["dead_letters"] == 1
                and o["reason_codes"] == [Reason.NOT_JSON.value] and o["headers_kept"],
                f"the poison-header message is not one not_json dead letter with every header "
                f"byte: {({k: v for k, v in o.items() if k != 'headers'})}")
               for o in result.get("poison_headers", [])]
    if plan["recreated_events"]:
        checks += [(r is not None and r["topic_id"] not in (None, r["old_topic_id"]),
                    "the topic was not created again under a new id")]
    if r is not None:
        checks += [
            (r["producer_exit_code"] == 0 and r["produced"] == r["kafka_messages"],
             "new incarnation: messages in Kafka are not the acknowledged events"),
            (r["lost"] == 0 and r["duplicates"] == 0,
             f"new incarnation: {r['lost']} lost, {r['duplicates']} recorded twice"),
            (r["landed"] + r["dead_lettered"] == r["kafka_messages"],
             "new incarnation: rows + dead letters are not the messages in Kafka"),
            (r["old_incarnation_kept"], "rows or dead letters of the old incarnation changed"),
        ]
    return [what for ok, what in checks if not ok]


def summary(result: dict) -> str:
    line = (f"chaos: produced {result['produced'] or 0:,} (acknowledged) + "
            f"{result['injected']} of chaos's own, landed {result['landed']:,}, dead-lettered "
            f"{result['dead_lettered']:,}, gone by delete_records "
            f"{result['gone_by_delete_records']:,} (recorded as offset_gap "
            f"{result['recorded_as_offset_gap']:,}), duplicates {result['duplicates']}, "
            f"lost {result['lost']}")
    if r := result.get("recreation"):
        line += (f"; re-created: produced {r['produced'] or 0:,}, landed {r['landed']:,}, "
                 f"dead-lettered {r['dead_lettered']:,}, duplicates {r['duplicates']}, "
                 f"lost {r['lost']}")
    return f"{line} in {result['seconds']} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced plan of make test")
    parser.add_argument("--cluster", action="store_true",
                        help="three brokers and three sinks (benchmarks.chaos_cluster)")
    args = parser.parse_args(argv)
    if args.cluster:
        return _cluster_main(args.quick)
    plan = QUICK if args.quick else ChaosPlan()
    from benchmarks.chaos_drops import INTERVAL

    with isolated_stack(STREAMFLOW_PARTITION_INTERVAL=INTERVAL) as st:
        result = run_chaos(st.settings, st.kafka, st.database_url, plan,
                           echo=lambda m: print(m, file=sys.stderr))
        found = _record("chaos", args.quick, result, problems(result), st.settings.logs_dir)
    if found:
        return 1
    from benchmarks import report

    report.refresh_reliability(result)  # docs state clean runs only; every run has its file
    return 0


def _cluster_main(quick: bool) -> int:
    from benchmarks import chaos_cluster

    plan = chaos_cluster.QUICK_CLUSTER if quick else chaos_cluster.ClusterPlan()
    with isolated_stack(STREAMFLOW_KAFKA_BROKERS=3) as st:
        result = chaos_cluster.run_cluster_chaos(st, plan,
                                                 echo=lambda m: print(m, file=sys.stderr))
        found = _record("chaos-cluster", quick, result, chaos_cluster.problems(result),
                        st.settings.logs_dir)
    return 1 if found else 0


def _record(name: str, quick: bool, result: dict, found: list[str], logs_dir) -> list[str]:
    """Write the result file and print it; an unclean run keeps the workers' logs beside it
    (they go with the temporary stack). Returns ``found``."""
    path = write_results(name, {"quick": quick, "chaos": result})
    if found:
        kept = path.with_name(path.stem + "-logs")
        shutil.copytree(logs_dir, kept)
        print(f"logs of the unclean run: {kept}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    print(f"results: {path}", file=sys.stderr)
    for problem in found:
        print(f"{name}: NOT CLEAN: {problem}", file=sys.stderr)
    return found


if __name__ == "__main__":
    sys.exit(main())
