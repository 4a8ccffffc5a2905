"""A real Apache Kafka 4.x cluster (KRaft, each node a broker and a controller) run from its
Maven Central jars: one node by default, three with STREAMFLOW_KAFKA_BROKERS=3.

``fetch`` copies the jars named by ``pom.xml`` under STREAMFLOW_HOME once; after that the nodes
start offline. ``start`` formats each node's storage on first use (the cluster id is kept, so a
restart keeps the data) and returns only when the cluster answers a metadata request listing
every running node. docs/ARCHITECTURE.md, "The embedded Kafka cluster".
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from streamflow.errors import (
    BrokerStartFailed,
    JavaNotFound,
    KafkaJarsMissing,
    MavenNotFound,
)
from streamflow.infra import log_rotation, processes
from streamflow.kafka_clients import admin_client, broker_answers
from streamflow.settings import LOCALHOST, Settings
from streamflow.topics import replication_for

COMPONENT = "kafka"
POM = Path(__file__).with_name("pom.xml")
MIN_JAVA = 17
ALTERNATIVES = "set KAFKA_BOOTSTRAP_SERVERS to an existing broker, or use `docker compose up`"

# G1 settings from Kafka's own kafka-run-class.sh: short pauses matter more than peak
# throughput for a broker sharing 2 cores with the workers.
JVM_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def kafka_version() -> str:
    """The Kafka version pinned in pom.xml (the one home of that fact)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    assert match, "pom.xml must define kafka.version"
    return match.group(1)


def libs_dir(settings: Settings) -> Path:
    return settings.kafka_dir / "libs"


def _marker(settings: Settings) -> Path:
    return libs_dir(settings) / ".kafka-version"


def jars_present(settings: Settings) -> bool:
    marker = _marker(settings)
    return marker.exists() and marker.read_text().strip() == kafka_version()


def fetch(settings: Settings, *, echo=print) -> Path:
    """Copy the broker's jars under STREAMFLOW_HOME with Maven, once."""
    target = libs_dir(settings)
    if jars_present(settings):
        return target
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise MavenNotFound(
            f"Maven ({settings.mvn!r}) not found, needed once to fetch the Kafka jars: "
            f"install it (apt-get install maven) or set STREAMFLOW_MVN, or {ALTERNATIVES}"
        )
    echo(f"fetching Apache Kafka {kafka_version()} jars with Maven (once) into {target} ...")
    staging = target.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        raise KafkaJarsMissing(
            f"mvn failed ({result.returncode}) fetching the Kafka jars: "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # only a complete download ever becomes libs/
    _marker(settings).write_text(kafka_version())
    echo(f"fetched {sum(1 for _ in target.glob('*.jar'))} jars")
    return target


def share_jars(settings: Settings, libs: Path) -> None:
    """Let a fresh STREAMFLOW_HOME use jars fetched elsewhere (a symlink: no Maven run)."""
    libs_dir(settings).parent.mkdir(parents=True, exist_ok=True)
    libs_dir(settings).symlink_to(libs)


def java_major(java: str) -> int:
    """Major version of ``java``; raises JavaNotFound when it is missing or older than 17."""
    exe = shutil.which(java)
    if exe is None:
        raise JavaNotFound(
            f"Java {MIN_JAVA}+ not found ({java!r}) for the embedded Kafka broker: install "
            f"openjdk-17-jre-headless or set STREAMFLOW_JAVA, or {ALTERNATIVES}"
        )
    out = subprocess.run([exe, "-version"], capture_output=True, text=True)  # noqa: S603
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise JavaNotFound(f"could not read the version of {exe}: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise JavaNotFound(
            f"{exe} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+: install "
            f"openjdk-17-jre-headless or set STREAMFLOW_JAVA, or {ALTERNATIVES}"
        )
    return major


# A node that stops heartbeating (killed, frozen) is fenced by the controller after this
# long, and only then do its partitions get new leaders: Kafka's 9 s default held every write
# to them (produce -> row p99 12.4 s across a leader kill, `make bench` cluster). The nodes
# share one machine, where a heartbeat is not lost to a network: 4 s, heartbeats each second.
_FAILOVER = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "1000"}


@dataclass(frozen=True)
class Node:
    """One node of the embedded KRaft cluster (a broker and a controller in one process)."""

    node_id: int
    port: int             # PLAINTEXT listener
    controller_port: int  # CONTROLLER listener
    dir: Path             # server.properties and data/
    component: str        # its run-state name (processes.read_state)
    log: Path

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def data(self) -> Path:
        return self.dir / "data"


def nodes(settings: Settings) -> list[Node]:
    """The cluster's nodes. One node keeps the layout of a single broker (kafka/data, the
    `kafka` run state, kafka.log), so a home made before clusters existed starts as it was."""
    ports = settings.kafka_node_ports
    if len(ports) == 1:
        return [Node(1, *ports[0], settings.kafka_dir, COMPONENT,
                     settings.logs_dir / "kafka.log")]
    return [Node(i, port, controller, settings.kafka_dir / f"node-{i}", f"{COMPONENT}-{i}",
                 settings.logs_dir / f"kafka-{i}.log")
            for i, (port, controller) in enumerate(ports, 1)]


def node(settings: Settings, node_id: int) -> Node:
    found = [n for n in nodes(settings) if n.node_id == node_id]
    if not found:
        raise BrokerStartFailed(f"no Kafka node {node_id}: the embedded cluster has nodes "
                                f"1-{settings.kafka_brokers} (STREAMFLOW_KAFKA_BROKERS)")
    return found[0]


def server_properties(settings: Settings, at: Node | None = None,
                      extra: Mapping[str, str] | None = None) -> str:
    """A node's configuration (node 1 by default); ``extra`` adds or replaces properties (a
    test broker with a SASL_SSL listener, say)."""
    cluster = nodes(settings)
    at = at or cluster[0]
    factor, in_sync = replication_for(len(cluster))
    properties = {
        "process.roles": "broker,controller",
        "node.id": str(at.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@{LOCALHOST}:{n.controller_port}"
                                             for n in cluster),
        "listeners": f"PLAINTEXT://{at.address},CONTROLLER://{LOCALHOST}:{at.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{at.address}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(at.data),
        # Internal topics and topics created without a factor: as many copies as the cluster
        # allows (up to 3), a write held by two where there are three (topics.replication_for).
        "offsets.topic.replication.factor": str(factor),
        "transaction.state.log.replication.factor": str(factor),
        "transaction.state.log.min.isr": str(in_sync),
        "share.coordinator.state.topic.replication.factor": str(factor),
        "share.coordinator.state.topic.min.isr": str(in_sync),
        "default.replication.factor": str(factor),
        "min.insync.replicas": str(in_sync),
        # 10 instead of 50 __consumer_offsets partitions: the first group join is faster on
        # 2 cores, and a small cluster gains nothing from more.
        "offsets.topic.num.partitions": "10",
        # Topics are created on purpose (`streamflow topics create`); a typo must not make one.
        "auto.create.topics.enable": "false",
        # Rebalance at once: tests and `up` start consumers one by one.
        "group.initial.rebalance.delay.ms": "0",
        **(_FAILOVER if len(cluster) > 1 else {}),
        **(extra or {}),
    }
    return "".join(f"{name}={value}\n" for name, value in properties.items())


def tool_command(settings: Settings, main_class: str, *args: str,
                 heap_mb: int = 256) -> list[str]:
    """A Kafka command-line tool (ConfigCommand, ProducerPerformance ...) from the jars."""
    return [shutil.which(settings.java) or settings.java, f"-Xmx{heap_mb}m",
            "-cp", _classpath(settings), main_class, *args]


def _cluster_id(settings: Settings) -> str:
    path = settings.kafka_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    # Kafka's own Uuid.randomUuid().toString(): url-safe base64 without padding.
    cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cid)
    return cid


def _classpath(settings: Settings) -> str:
    return str(libs_dir(settings) / "*")


def _formatted_size(settings: Settings) -> int | None:
    """The number of nodes the storage under STREAMFLOW_HOME was formatted for (None: none)."""
    layout = settings.kafka_dir / "cluster.json"
    if layout.exists():
        return json.loads(layout.read_text())["brokers"]
    return 1 if (settings.kafka_dir / "data" / "meta.properties").exists() else None


def prepare(settings: Settings, at: Node | None = None,
            extra: Mapping[str, str] | None = None) -> Path:
    """Write a node's config and format its storage once (the cluster id survives restarts).
    A home formatted for another number of nodes is refused: its quorum cannot change."""
    at = at or nodes(settings)[0]
    formatted = _formatted_size(settings)
    if formatted not in (None, settings.kafka_brokers):
        raise BrokerStartFailed(
            f"the embedded Kafka under {settings.kafka_dir} was formatted for {formatted} "
            f"node(s), not STREAMFLOW_KAFKA_BROKERS={settings.kafka_brokers}: its quorum cannot "
            f"change in place. Keep STREAMFLOW_KAFKA_BROKERS={formatted}, or use another "
            "STREAMFLOW_HOME (or `streamflow down` and delete its kafka/ directory: its "
            "messages go with it)")
    config = at.dir / "server.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(server_properties(settings, at, extra))
    if not (at.data / "meta.properties").exists():
        cmd = [shutil.which(settings.java) or settings.java, "-cp", _classpath(settings),
               "kafka.tools.StorageTool", "format",
               # `=`: a random id may start with "-", which would read as an option.
               f"--cluster-id={_cluster_id(settings)}", "-c", str(config)]
        result = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603
        if result.returncode != 0:
            raise BrokerStartFailed(
                f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()[-800:]}"
            )
        (settings.kafka_dir / "cluster.json").write_text(
            json.dumps({"brokers": settings.kafka_brokers}))
    return config


def node_states(settings: Settings) -> list[tuple[Node, processes.ProcessState | None]]:
    """Each node with its running process (None: not running)."""
    found = []
    for n in nodes(settings):
        state = processes.read_state(settings.run_dir, n.component)
        found.append((n, state if state and state.is_alive() else None))
    return found


def quorum_leader(settings: Settings) -> int | None:
    """The KRaft quorum's leader (the active controller) as the nodes last recorded it: the
    newest epoch in their quorum-state files; None when no node has recorded one."""
    newest: tuple[int, int] | None = None
    for n in nodes(settings):
        try:
            state = json.loads((n.data / "__cluster_metadata-0" / "quorum-state").read_text())
        except (OSError, ValueError):
            continue
        if state.get("leaderId", -1) >= 0 and (newest is None
                                              or state["leaderEpoch"] > newest[0]):
            newest = (state["leaderEpoch"], state["leaderId"])
    return newest[1] if newest else None


def running(settings: Settings) -> processes.ProcessState | None:
    """A running node's process (node 1's first), or None when no node runs."""
    return next((state for _, state in node_states(settings) if state is not None), None)


def start(settings: Settings, *, echo=print, extra: Mapping[str, str] | None = None,
          node_id: int | None = None) -> processes.ProcessState:
    """Start the cluster's nodes that do not run (or only ``node_id``) and return once the
    cluster answers metadata requests with every running node in it; ``extra``: more server
    properties (see server_properties). The nodes start together: a quorum of three elects
    its leader once two run."""
    if not jars_present(settings):
        raise KafkaJarsMissing("the Kafka jars are not fetched yet: run `streamflow kafka fetch`")
    java = java_major(settings.java) and (shutil.which(settings.java) or settings.java)
    states = node_states(settings)
    wanted = [(n, s) for n, s in states if node_id in (None, n.node_id)]
    if node_id is not None and not wanted:
        node(settings, node_id)  # raises naming the nodes there are
    for n, state in wanted:
        if state is not None:
            echo(f"kafka node {n.node_id} already running (pid {state.pid}) on {n.address}")
    starting = [n for n, state in wanted if state is None]
    for n in starting:
        for port, setting in ((n.port, "STREAMFLOW_KAFKA_PORT"),
                              (n.controller_port, "STREAMFLOW_KAFKA_CONTROLLER_PORT")):
            processes.require_free_port(port, f"Kafka node {n.node_id}", setting, ALTERNATIVES)
    spawned = []
    heap = settings.embedded_kafka_heap_mb
    for n in starting:
        config = prepare(settings, n, extra)
        cmd = [java, f"-Xms{heap}m", f"-Xmx{heap}m", *JVM_FLAGS, "-cp", _classpath(settings),
               "kafka.Kafka", str(config)]
        echo(f"starting Kafka {kafka_version()} (KRaft) node {n.node_id} on {n.address} ..."
             if len(states) > 1 else
             f"starting Kafka {kafka_version()} (KRaft) on {settings.bootstrap_servers} ...")
        state, _ = processes.spawn(n.component, cmd, run_dir=settings.run_dir, log_path=n.log,
                                   address=n.address)
        spawned.append((n, state))
    if spawned:
        _wait_for(settings, spawned, {n.node_id for n, s in states if s is not None})
    return running(settings)


def _wait_for(settings: Settings, spawned: list[tuple[Node, processes.ProcessState]],
              already: set[int]) -> None:
    """Until the cluster's metadata lists every running node; a node that exits or does not
    join in time is stopped and reported with its log."""
    expected = already | {n.node_id for n, _ in spawned}

    def listed() -> set[int]:
        try:
            return set(admin_client(settings.kafka, **{"log_level": 0}).list_topics(
                timeout=1.0).brokers)
        except KafkaException:
            return set()

    def ready_or_dead() -> bool:
        return (any(not s.is_alive() for _, s in spawned)
                or (broker_answers(settings.kafka, timeout_s=1.0) and expected <= listed()))

    processes.wait_until(ready_or_dead, timeout_s=settings.kafka_start_timeout_s, interval_s=0.5)
    for n, state in spawned:
        if not state.is_alive():
            _abandon(settings, spawned)
            raise BrokerStartFailed(
                f"Kafka node {n.node_id} exited during start-up; last lines of {n.log}:\n"
                f"{processes.tail(n.log)}\nFix the cause above, or {ALTERNATIVES}")
    missing = expected - listed()
    if missing or not broker_answers(settings.kafka, timeout_s=2.0):
        _abandon(settings, spawned)
        logs = ", ".join(str(n.log) for n, _ in spawned)
        raise BrokerStartFailed(
            f"the Kafka cluster did not answer with node(s) {sorted(missing) or '?'} within "
            f"{settings.kafka_start_timeout_s:.0f}s (STREAMFLOW_KAFKA_START_TIMEOUT); see "
            f"{logs}, or {ALTERNATIVES}")


def _abandon(settings: Settings, spawned: list[tuple[Node, processes.ProcessState]]) -> None:
    for n, state in spawned:
        if state.is_alive():
            processes.terminate(state.pid, timeout_s=10)
        processes.clear_state(settings.run_dir, n.component)


def stop(settings: Settings, *, node_id: int | None = None) -> str:
    """Stop the cluster's nodes (or only ``node_id``), all at once: a controlled shutdown
    moves leadership and flushes logs; each is given time before SIGKILL."""
    chosen = [(n, s) for n, s in node_states(settings) if node_id in (None, n.node_id)]
    if node_id is not None and not chosen:
        node(settings, node_id)
    live = [(n, s) for n, s in chosen if s is not None]
    for n, state in chosen:
        if state is None:
            processes.clear_state(settings.run_dir, n.component)
    if not live:
        return "not running"
    with ThreadPoolExecutor(max_workers=len(live)) as pool:
        outcomes = list(pool.map(lambda pair: processes.terminate(pair[1].pid, timeout_s=60),
                                 live))
    for n, _ in live:
        processes.clear_state(settings.run_dir, n.component)
    if len(chosen) == 1:
        return outcomes[0]
    return "; ".join(f"node {n.node_id} {outcome}" for (n, _), outcome in zip(live, outcomes,
                                                                             strict=True))


def version_from_log(settings: Settings) -> str | None:
    """The version the running broker reported about itself at start-up (the line may
    have moved to a rotated copy, kafka.log.1 ..., or been dropped with the oldest one)."""
    for log in log_rotation.generations(nodes(settings)[0].log):
        try:
            found = re.findall(r"Kafka version: (\S+)", log.read_text(errors="replace"))
        except FileNotFoundError:
            continue
        if found:
            return found[-1]
    return None

