"""A real Apache Kafka 4.x broker (KRaft combined mode) run from its Maven Central jars.

``fetch`` copies the jars named by ``pom.xml`` under STREAMFLOW_HOME once; after that the broker
starts offline. ``start`` formats the storage on first use (the cluster id is kept, so a restart
keeps the data) and returns only when the broker answers a metadata request.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from streamflow.errors import (
    BrokerStartFailed,
    JavaNotFound,
    KafkaJarsMissing,
    MavenNotFound,
)
from streamflow.infra import log_rotation, processes
from streamflow.kafka_clients import broker_answers
from streamflow.settings import LOCALHOST, Settings

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


def server_properties(settings: Settings, extra: Mapping[str, str] | None = None) -> str:
    """The broker's configuration; ``extra`` adds or replaces properties (a test broker
    with a SASL_SSL listener, say)."""
    data = settings.kafka_dir / "data"
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOCALHOST}:{settings.kafka_controller_port}",
        "listeners": f"PLAINTEXT://{LOCALHOST}:{settings.kafka_port},"
                     f"CONTROLLER://{LOCALHOST}:{settings.kafka_controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOCALHOST}:{settings.kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data),
        # A single broker: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # 10 instead of 50 __consumer_offsets partitions: the first group join is faster on
        # 2 cores, and one broker gains nothing from more.
        "offsets.topic.num.partitions": "10",
        # Topics are created on purpose (`streamflow topics create`); a typo must not make one.
        "auto.create.topics.enable": "false",
        # Rebalance at once: tests and `up` start consumers one by one.
        "group.initial.rebalance.delay.ms": "0",
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


def prepare(settings: Settings, extra: Mapping[str, str] | None = None) -> Path:
    """Write the config and format the storage once (the cluster id survives restarts)."""
    config = settings.kafka_dir / "server.properties"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(server_properties(settings, extra))
    if not (settings.kafka_dir / "data" / "meta.properties").exists():
        cmd = [shutil.which(settings.java) or settings.java, "-cp", _classpath(settings),
               "kafka.tools.StorageTool", "format",
               # `=`: a random id may start with "-", which would read as an option.
               f"--cluster-id={_cluster_id(settings)}", "-c", str(config)]
        result = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603
        if result.returncode != 0:
            raise BrokerStartFailed(
                f"formatting Kafka storage failed: {(result.stdout + result.stderr).strip()[-800:]}"
            )
    return config


def running(settings: Settings) -> processes.ProcessState | None:
    state = processes.read_state(settings.run_dir, COMPONENT)
    return state if state and state.is_alive() else None


def start(settings: Settings, *, echo=print,
          extra: Mapping[str, str] | None = None) -> processes.ProcessState:
    """Start the broker (or find it running) and return once it answers metadata requests
    on its PLAINTEXT listener; ``extra``: more server properties (see server_properties)."""
    if state := running(settings):
        echo(f"kafka already running (pid {state.pid}) on {state.address}")
        return state
    if not jars_present(settings):
        raise KafkaJarsMissing("the Kafka jars are not fetched yet: run `streamflow kafka fetch`")
    java = java_major(settings.java) and (shutil.which(settings.java) or settings.java)
    for port, setting in ((settings.kafka_port, "STREAMFLOW_KAFKA_PORT"),
                          (settings.kafka_controller_port, "STREAMFLOW_KAFKA_CONTROLLER_PORT")):
        processes.require_free_port(port, "the Kafka broker", setting, ALTERNATIVES)
    config = prepare(settings, extra)
    log = settings.logs_dir / "kafka.log"
    cmd = [java, f"-Xms{settings.kafka_heap_mb}m", f"-Xmx{settings.kafka_heap_mb}m", *JVM_FLAGS,
           "-cp", _classpath(settings), "kafka.Kafka", str(config)]
    echo(f"starting Kafka {kafka_version()} (KRaft) on {settings.bootstrap_servers} ...")
    state, _ = processes.spawn(COMPONENT, cmd, run_dir=settings.run_dir, log_path=log,
                               address=settings.bootstrap_servers)

    def ready_or_dead() -> bool:
        return not state.is_alive() or broker_answers(settings.kafka, timeout_s=1.0)

    processes.wait_until(ready_or_dead, timeout_s=settings.kafka_start_timeout_s, interval_s=0.5)
    if not state.is_alive():
        processes.clear_state(settings.run_dir, COMPONENT)
        raise BrokerStartFailed(
            f"the Kafka broker exited during start-up; last lines of {log}:\n"
            f"{processes.tail(log)}\nFix the cause above, or {ALTERNATIVES}"
        )
    if not broker_answers(settings.kafka, timeout_s=2.0):
        processes.terminate(state.pid, timeout_s=10)
        processes.clear_state(settings.run_dir, COMPONENT)
        raise BrokerStartFailed(
            f"the Kafka broker did not answer within {settings.kafka_start_timeout_s:.0f}s "
            f"(STREAMFLOW_KAFKA_START_TIMEOUT); see {log}, or {ALTERNATIVES}"
        )
    return state


def stop(settings: Settings) -> str:
    state = processes.read_state(settings.run_dir, COMPONENT)
    if state is None or not state.is_alive():
        processes.clear_state(settings.run_dir, COMPONENT)
        return "not running"
    # A controlled shutdown moves leadership and flushes logs; give it time before SIGKILL.
    outcome = processes.terminate(state.pid, timeout_s=60)
    processes.clear_state(settings.run_dir, COMPONENT)
    return outcome


def version_from_log(settings: Settings) -> str | None:
    """The version the running broker reported about itself at start-up (the line may
    have moved to a rotated copy, kafka.log.1 ..., or been dropped with the oldest one)."""
    for log in log_rotation.generations(settings.logs_dir / "kafka.log"):
        try:
            found = re.findall(r"Kafka version: (\S+)", log.read_text(errors="replace"))
        except FileNotFoundError:
            continue
        if found:
            return found[-1]
    return None

