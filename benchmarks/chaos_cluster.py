"""`make chaos CLUSTER=1`: a three-broker cluster and three sinks in one group, while events flow:
the broker leading the most partitions SIGKILLed and started again, a sink SIGKILLed, another
frozen (SIGSTOP) past its session timeout and resumed (a zombie), every broker restarted one
after another (a rolling restart), and one partition's replicas reassigned (its leader moves).
Then the micro-batch (contract step and windows) runs over what landed.

    python -m benchmarks.chaos --cluster          # 1,000,000 events
    python -m benchmarks.chaos --cluster --quick  # the reduced plan of `make test`

Accounting is chaos's (benchmarks.chaos_ledger): every (partition, offset) one row or one
ingest dead letter, 0 lost, 0 duplicated; no offset_gap dead letter at all (nothing was
deleted: a gap here would be one a leader move invented). The micro-batch invariants: every
landed event is a notification xor a contract dead letter (or quarantined, reported), and
every window equals a recount of its validated events. docs/RELIABILITY.md states the results.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import asdict, dataclass

import psycopg
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.chaos_ledger import account, covered_now
from benchmarks.harness import worker_env
from streamflow import kafka_clients, stack, topics
from streamflow import replicas as replicas_mod
from streamflow.db.engine import connect_admin
from streamflow.infra import kafka_server
from streamflow.kafka_connection import KafkaConnection
from streamflow.microbatch import batch as batches
from streamflow.microbatch import notifications as contract_step
from streamflow.microbatch import windows
from streamflow.settings import Settings

PARTITIONS = 3
# The sinks' session timeout is the group's (kafka_clients.CONSUMER_DEFAULTS, 10 s): a sink
# frozen this much longer has certainly lost its partitions.
FREEZE_S = 18.0
# Seconds a killed broker stays down before it is started again.
DOWN_S = 5.0
# Seconds without progress after which settling stops waiting (above the sink's backoff).
STALL_S = 90.0


@dataclass(frozen=True)
class ClusterPlan:
    events: int = 1_000_000
    rate: float = 10_000.0  # events/s: three brokers, three sinks and PostgreSQL on 2 cores
    sinks: int = 3
    faults: tuple[str, ...] = ("leader_kill", "sink_kill", "sink_freeze", "rolling_restart",
                               "reassign")
    invalid_rate: float = 0.01
    settle_timeout_s: float = 900.0


# The reduced plan of `make test` (tests/integration/test_chaos_cluster.py): one broker kill,
# one sink kill, one zombie, while events still flow (~20 s of them).
QUICK_CLUSTER = ClusterPlan(events=40_000, rate=2_000.0, sinks=2,
                            faults=("leader_kill", "sink_kill", "sink_freeze"),
                            settle_timeout_s=300.0)


class ClusterChaos:
    """One run of a plan on a fresh topic of a running embedded cluster (``settings``)."""

    def __init__(self, settings: Settings, database_url: str, plan: ClusterPlan,
                 echo=print) -> None:
        from benchmarks.chaos import ChaosPlan, ChaosProducer, Worker

        self.settings, self.database_url, self.plan, self.echo = (settings, database_url, plan,
                                                                  echo)
        self.kafka: KafkaConnection = settings.kafka
        tag = uuid.uuid4().hex[:8]
        self.topic, self.group = f"chaos-{tag}", f"chaos-{tag}"
        dlq_topic = f"chaos-dlq-{tag}"
        factor, in_sync = topics.replication_for(settings.kafka_brokers)
        for name, partitions in ((self.topic, PARTITIONS), (dlq_topic, 1)):
            topics.create_topic(self.kafka, name, partitions, replication_factor=factor,
                                config={"min.insync.replicas": str(in_sync)})
        self.env = worker_env(settings, database_url, STREAMFLOW_LOG_LEVEL="WARNING")
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self.producer = ChaosProducer(
            self.topic, ChaosPlan(events=plan.events, rate=plan.rate,
                                  invalid_rate=plan.invalid_rate),
            self.env, settings.logs_dir, label=f"cluster-{tag}")
        self.sinks = [Worker(["sink", "--topic", self.topic, "--group", self.group,
                              "--dlq-topic", dlq_topic, "--instance-id", f"{self.group}-{i}",
                              "--metrics-port", "0"], self.env,
                             settings.logs_dir / f"cluster-sink-{i}.log")
                      for i in range(1, plan.sinks + 1)]
        self.sink_exits: list[int] = []
        self.frozen: set[int] = set()
        # The group's stored offsets, sampled twice a second: any that moved back (a zombie
        # finishing a stale batch) is recorded.
        self.stored: dict[int, int] = {}
        self.backwards: list[dict] = []
        self._offsets_conn: psycopg.Connection | None = None
        self.started = time.monotonic()

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            for sink in self.sinks:
                if sink.proc is not None and sink.proc.poll() is None:
                    os.kill(sink.proc.pid, signal.SIGCONT)
            for worker in (self.producer, *self.sinks):
                worker.reap()
            if self._offsets_conn is not None:
                self._offsets_conn.close()

    def _run(self) -> dict:
        plan = self.plan
        spacing = plan.events / plan.rate / (len(plan.faults) + 1)
        self.echo(f"chaos (cluster): {plan.events:,} events at {plan.rate:,.0f}/s to "
                  f"{self.topic}, {plan.sinks} sinks, {self.settings.kafka_brokers} brokers; "
                  f"faults every ~{spacing:.1f} s: {', '.join(plan.faults)}")
        self.started = time.monotonic()
        self.producer.start()
        for sink in self.sinks:
            sink.start()
        faults = []
        for i, fault in enumerate(plan.faults, 1):
            self._supervise(until=self.started + i * spacing)
            at = time.monotonic()
            detail = getattr(self, f"_{fault}")()
            faults.append({"fault": fault, "at_s": round(at - self.started, 1),
                           "took_s": round(time.monotonic() - at, 1),
                           "covered_after": covered_now(self.database_url, self.topic),
                           **detail})
            self.echo(f"  {fault} at {at - self.started:5.1f} s: {detail}")
        producer_rc = self._wait_for_producer()
        kafka_messages, ledger = self._settle()
        result = {
            "plan": asdict(plan), "faults": faults, "brokers": self.settings.kafka_brokers,
            "produced": self.producer.acknowledged(), "producer_exit_code": producer_rc,
            "kafka_messages": kafka_messages, "landed": ledger.rows,
            "dead_lettered": ledger.dead_letters, "offset_gap_letters": len(ledger.holes),
            "duplicates": ledger.duplicates, "lost": kafka_messages - ledger.covered,
            "sink_exits": self.sink_exits, "offsets_moved_back": self.backwards,
        }
        result["microbatch"] = self._microbatch()
        result["sink_exit_codes_on_sigterm"] = self._stop_sinks()
        result["seconds"] = round(time.monotonic() - self.started, 1)
        self.echo(summary(result))
        return result

    def _sample_offsets(self) -> None:
        if self._offsets_conn is None:
            self._offsets_conn = connect_admin(self.database_url, "chaos-offsets")
        rows = self._offsets_conn.execute(
            "SELECT kafka_partition, next_offset FROM raw.consumer_offsets "
            "WHERE group_id = %s AND topic = %s AND next_offset IS NOT NULL",
            (self.group, self.topic)).fetchall()
        for partition, offset in rows:
            before = self.stored.get(partition, -1)
            if offset < before:
                self.backwards.append({"partition": partition, "from": before, "to": offset,
                                       "at_s": round(time.monotonic() - self.started, 1)})
            self.stored[partition] = max(before, offset)

    def _supervise(self, until: float) -> None:
        """Wait until ``until``, starting a sink again when it exits by itself (as the
        supervisor does), and sampling the stored offsets."""
        while True:
            self._sample_offsets()
            for i, sink in enumerate(self.sinks):
                if i in self.frozen:
                    continue
                code = sink.restart_if_exited()
                if code is not None:
                    self.sink_exits.append(code)
                    self.echo(f"  sink {i + 1} exited with {code}: started again")
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))

    def _stop_sinks(self) -> list[int]:
        """SIGTERM each running sink: its exit code. One that exited by itself since the last
        look (the zombie, fenced as it resumes: a fatal consumer error exits it with 1, for
        the supervisor to start again) is a sink exit, not an answer to SIGTERM."""
        codes = []
        for i, sink in enumerate(self.sinks):
            exited = sink.proc.poll()
            if exited is None:
                codes.append(sink.stop())
            else:
                self.sink_exits.append(exited)
                self.echo(f"  sink {i + 1} had exited with {exited} before the stop")
        return codes

    def _wait_for_producer(self) -> int:
        deadline = time.monotonic() + self.plan.settle_timeout_s
        while self.producer.proc.poll() is None and time.monotonic() < deadline:
            self._supervise(until=time.monotonic() + 1.0)
        return self.producer.proc.wait(max(deadline - time.monotonic(), 1.0))

    def _settle(self):
        deadline = time.monotonic() + self.plan.settle_timeout_s
        seen, seen_at = -1, time.monotonic()
        while True:
            kafka_messages = topics.message_count(self.kafka, self.topic)
            ledger = account(self.database_url, self.topic)
            now = time.monotonic()
            if ledger.entries != seen:
                seen, seen_at = ledger.entries, now
            if ledger.covered >= kafka_messages or now > deadline or now - seen_at > STALL_S:
                break
            self._supervise(until=time.monotonic() + 1.0)
        time.sleep(2.0)
        return topics.message_count(self.kafka, self.topic), account(self.database_url,
                                                                      self.topic)

    # -- the faults ------------------------------------------------------------------------
    def _admin(self) -> AdminClient:
        return kafka_clients.admin_client(self.kafka)

    def _leaders(self) -> dict[int, int]:
        """Partition -> its leader's node id."""
        partitions = self._admin().list_topics(self.topic, timeout=10).topics[self.topic]
        return {p.id: p.leader for p in partitions.partitions.values()}

    def _leader_kill(self) -> dict:
        """SIGKILL the node leading the most partitions of the topic; start it again."""
        leaders = list(self._leaders().values())
        victim = max(set(leaders), key=leaders.count)
        state = dict((n.node_id, s) for n, s in kafka_server.node_states(self.settings))[victim]
        os.kill(state.pid, signal.SIGKILL)
        self._supervise(until=time.monotonic() + DOWN_S)
        kafka_server.start(self.settings, node_id=victim, echo=lambda _m: None)
        return {"node": victim, "led": leaders.count(victim)}

    def _sink_kill(self) -> dict:
        self.sinks[0].kill()
        self.sinks[0].start()  # as the supervisor would
        return {"sink": 1}

    def _sink_freeze(self) -> dict:
        """SIGSTOP a sink past its session timeout (its partitions move), then SIGCONT: the
        zombie must land nothing twice and move no stored offset back."""
        index = len(self.sinks) - 1
        sink = self.sinks[index]
        self.frozen.add(index)
        os.kill(sink.proc.pid, signal.SIGSTOP)
        try:
            self._supervise(until=time.monotonic() + FREEZE_S)
        finally:
            os.kill(sink.proc.pid, signal.SIGCONT)
            self.frozen.discard(index)
        return {"sink": index + 1, "frozen_s": FREEZE_S}

    def _rolling_restart(self) -> dict:
        """Each node in turn: a controlled stop, a start, and its replicas back in sync before
        the next (as an operator rolls an upgrade)."""
        waited = []
        for n in kafka_server.nodes(self.settings):
            kafka_server.stop(self.settings, node_id=n.node_id)
            kafka_server.start(self.settings, node_id=n.node_id, echo=lambda _m: None)
            at = time.monotonic()
            while stack.kafka_cluster(self.settings).under_replicated and (
                    time.monotonic() - at < 120):
                self._supervise(until=time.monotonic() + 1.0)
            waited.append(round(time.monotonic() - at, 1))
        return {"caught_up_s": waited}

    def _reassign(self) -> dict:
        """Move partition 0's replicas (their order: the preferred leader changes) with
        Kafka's reassignment (streamflow.replicas.Mover, as `topics create --fix-replication`
        does) and elect the new preferred leader: the partition's leader moves under the
        running sinks."""
        from confluent_kafka import ElectionType

        admin = self._admin()
        partition = admin.list_topics(self.topic, timeout=10).topics[self.topic].partitions[0]
        replicas = list(partition.replicas)
        moved = replicas[1:] + replicas[:1]
        mover = replicas_mod.Mover(self.kafka)
        try:
            mover.move({(self.topic, 0): moved}, timeout_s=30)
        finally:
            mover.close()
        deadline = time.monotonic() + 60
        while list(admin.list_topics(self.topic, timeout=10).topics[self.topic]
                   .partitions[0].replicas) != moved and time.monotonic() < deadline:
            self._supervise(until=time.monotonic() + 0.5)
        admin.elect_leaders(ElectionType.PREFERRED,
                            [TopicPartition(self.topic, 0)]).result(30)
        return {"partition": 0, "replicas": f"{replicas} -> {moved}",
                "leader": self._leaders()[0]}

    # -- the micro-batch over what landed --------------------------------------------------
    def _microbatch(self) -> dict:
        """The contract step and the windows over everything landed (claims, several
        chunks), published to the cluster; then the invariants."""
        def publish(topic: str):
            def send(messages):
                remaining, errors = kafka_clients.deliver(
                    producer, topic, ((k, v, None) for k, v in messages), timeout_s=60)
                assert not remaining and not errors, (remaining, errors[:3])
            return send

        def dead_letters(letters):
            from streamflow import dlq

            return dlq.publish(producer, topics.DEAD_LETTER, letters)

        producer = kafka_clients.producer(self.kafka)
        started = time.monotonic()
        with connect_admin(self.database_url) as conn:
            landed = batches.landed_max_seq(conn)
            contract_step.run(conn, landed, publish(topics.NOTIFICATIONS), dead_letters)
            windows.run(conn, landed, publish(topics.ANALYTICS))
            found = microbatch_invariants(conn, self.topic)
        found["seconds"] = round(time.monotonic() - started, 1)
        return found


_INVARIANTS = """
    WITH e AS (SELECT event_id, ingest_seq FROM raw.events WHERE kafka_topic = %(t)s),
    judged AS (
        SELECT e.event_id,
               EXISTS (SELECT 1 FROM streamflow.notifications n
                       WHERE n.event_id = e.event_id) AS valid,
               EXISTS (SELECT 1 FROM raw.dead_letters d WHERE d.stage = 'contract'
                       AND lower(d.event_id) = e.event_id::text) AS rejected,
               EXISTS (SELECT 1 FROM raw.quarantine q WHERE q.kind = 'event'
                       AND q.ingest_seq = e.ingest_seq AND q.resolved_at IS NULL)
                   AS quarantined
        FROM e)
    SELECT count(*), count(*) FILTER (WHERE valid), count(*) FILTER (WHERE rejected),
           count(*) FILTER (WHERE valid AND rejected),
           count(*) FILTER (WHERE NOT valid AND NOT rejected AND NOT quarantined),
           count(*) FILTER (WHERE quarantined)
    FROM judged
"""
# Every window of every validated event against a recount of the validated events in it.
_WINDOWS_RECOUNT = """
    WITH recount AS (
        SELECT to_timestamp(floor(extract(epoch FROM occurred_at) / 10) * 10) AS window_start,
               event_type, count(*) AS events
        FROM streamflow.notifications GROUP BY 1, 2)
    SELECT count(*) FILTER (WHERE w.events IS DISTINCT FROM r.events), count(*)
    FROM recount r
    LEFT JOIN streamflow.event_windows w
           ON w.window_start = r.window_start AND w.event_type = r.event_type
"""


def microbatch_invariants(conn: psycopg.Connection, topic: str) -> dict:
    landed, valid, rejected, both, neither, quarantined = conn.execute(
        _INVARIANTS, {"t": topic}).fetchone()
    wrong, windows_checked = conn.execute(_WINDOWS_RECOUNT).fetchone()
    return {"landed": landed, "notifications": valid, "contract_dead_letters": rejected,
            "both": both, "neither": neither, "quarantined": quarantined,
            "windows_checked": windows_checked, "windows_unlike_recount": wrong}


def problems(result: dict) -> list[str]:
    m = result["microbatch"]
    checks = [
        (result["lost"] == 0, f"{result['lost']} offsets lost"),
        (result["duplicates"] == 0, f"{result['duplicates']} offsets recorded twice"),
        (result["producer_exit_code"] == 0,
         f"the producer exited with {result['producer_exit_code']}"),
        (result["produced"] == result["kafka_messages"],
         "messages in Kafka are not the acknowledged events"),
        (result["landed"] + result["dead_lettered"] == result["kafka_messages"],
         "rows + dead letters are not the messages in Kafka"),
        (not result["offsets_moved_back"],
         f"stored offsets moved back: {result['offsets_moved_back'][:3]}"),
        (result["offset_gap_letters"] == 0,
         f"{result['offset_gap_letters']} offset gaps reported, none was made"),
        (m["both"] == 0, f"{m['both']} events both a notification and a contract dead letter"),
        (m["neither"] == 0, f"{m['neither']} events neither a notification nor a dead letter"),
        (m["windows_unlike_recount"] == 0,
         f"{m['windows_unlike_recount']} windows unlike a recount of their events"),
        (all(code == 0 for code in result["sink_exit_codes_on_sigterm"]),
         f"sinks exited with {result['sink_exit_codes_on_sigterm']} on SIGTERM"),
    ]
    return [what for ok, what in checks if not ok]


def summary(result: dict) -> str:
    m = result["microbatch"]
    return (f"chaos (cluster): produced {result['produced'] or 0:,} (acknowledged), landed "
            f"{result['landed']:,}, dead-lettered {result['dead_lettered']:,}, offset gaps "
            f"{result['offset_gap_letters']}, duplicates {result['duplicates']}, lost "
            f"{result['lost']}; micro-batch: {m['notifications']:,} notifications, "
            f"{m['contract_dead_letters']:,} contract dead letters, {m['both']} both, "
            f"{m['neither']} neither, {m['windows_unlike_recount']} windows unlike a recount "
            f"of {m['windows_checked']:,}; sink exits {result['sink_exits'] or 'none'} in "
            f"{result['seconds']} s")


def run_cluster_chaos(services: stack.Services, plan: ClusterPlan, echo=print) -> dict:
    return ClusterChaos(services.settings, services.database_url, plan, echo).run()
