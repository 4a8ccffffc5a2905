"""docker-compose.cluster.yml merged over docker-compose.yml: three KRaft brokers that keep every
topic on all three and acknowledge a write once two hold it (README "Deploying"). No Docker
engine here: the merged model is checked statically (tests/helpers/compose.py merges as compose
does); the rules both variants keep are in test_docker_compose.py."""

import base64
import re

import pytest

from tests.helpers import compose

CLUSTER = compose.compose_file(compose.CLUSTER_FILE)
SERVICES = CLUSTER["services"]
BROKERS = compose.brokers(SERVICES)
SINGLE = compose.services()
# Replicas of every topic, and how many must hold a write (acks=all) for it to succeed: one
# broker may be lost with no write refused.
REPLICAS, MIN_IN_SYNC = 3, 2
# The brokers' settings for the replication of Kafka's own topics and of those created without
# a factor (auto-creation is off).
INTERNAL_REPLICATION = ("KAFKA_DEFAULT_REPLICATION_FACTOR",
                        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR")
INTERNAL_MIN_ISR = ("KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
                    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR")
# A node's own settings; every other one is the same on the three.
PER_NODE = frozenset({"KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS"})


def _env(service: dict) -> dict[str, str]:
    return compose.environment(service)  # compose's defaults applied, values as text


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """Listener name -> (host, port) of a KAFKA_LISTENERS / KAFKA_ADVERTISED_LISTENERS value."""
    found = {}
    for entry in value.split(","):
        name, host, port = re.fullmatch(r"(\w+)://([^:]*):(\d+)", entry.strip()).groups()
        found[name] = (host, int(port))
    return found


def _advertised(name: str) -> str:
    """host:port where the compose network's clients reach broker ``name``."""
    host, port = _listeners(_env(BROKERS[name])["KAFKA_ADVERTISED_LISTENERS"])["PLAINTEXT"]
    return f"{host}:{port}"


def _hosts(value: str) -> set[str]:
    return {address.strip() for address in value.split(",")}


def test_three_combined_kraft_nodes_with_distinct_ids():
    assert len(BROKERS) == REPLICAS, sorted(BROKERS)
    ids = [int(_env(svc)["KAFKA_NODE_ID"]) for svc in BROKERS.values()]
    assert sorted(ids) == [1, 2, 3], ids
    for name, svc in BROKERS.items():
        assert _env(svc)["KAFKA_PROCESS_ROLES"] == "broker,controller", name


def test_every_node_lists_the_same_three_voters_at_their_controller_listeners():
    expected = set()
    for name, svc in BROKERS.items():
        env = _env(svc)
        _, controller_port = _listeners(env["KAFKA_LISTENERS"])[
            env["KAFKA_CONTROLLER_LISTENER_NAMES"]]
        expected.add(f"{env['KAFKA_NODE_ID']}@{name}:{controller_port}")
    for name, svc in BROKERS.items():
        voters = _env(svc)["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert set(voters.split(",")) == expected, f"{name}: {voters}"


def test_the_nodes_share_one_valid_cluster_id():
    ids = {_env(svc).get("CLUSTER_ID") for svc in BROKERS.values()}
    assert len(ids) == 1 and None not in ids, ids
    [cluster_id] = ids
    # kafka-storage.sh's form: 16 bytes, URL-safe base64 without padding.
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, cluster_id


def test_each_node_advertises_its_service_name_to_the_compose_network():
    for name in BROKERS:
        assert _advertised(name) == f"{name}:9092"


def test_the_nodes_differ_only_in_id_and_listener_addresses():
    shared = {name: {k: v for k, v in _env(svc).items() if k not in PER_NODE}
              for name, svc in BROKERS.items()}
    first = shared["kafka"]
    for name, env in shared.items():
        assert env == first, f"{name} differs from kafka: {set(env.items()) ^ set(first.items())}"
    layouts = {name: {listener: port for listener, (_, port) in
                      _listeners(_env(svc)["KAFKA_LISTENERS"]).items() if listener != "EXTERNAL"}
               for name, svc in BROKERS.items()}
    assert len({tuple(sorted(layout.items())) for layout in layouts.values()}) == 1, layouts


def test_every_node_runs_the_single_brokers_image_health_check_and_restart_policy():
    for name, svc in BROKERS.items():
        assert svc["image"] == SINGLE["kafka"]["image"], name
        assert svc["healthcheck"] == SINGLE["kafka"]["healthcheck"], name
        assert svc.get("restart") == "unless-stopped", name  # comes back, catches up


def test_kafkas_own_topics_have_three_replicas_two_in_sync():
    for name, svc in BROKERS.items():
        env = _env(svc)
        for variable in INTERNAL_REPLICATION:
            assert env.get(variable) == str(REPLICAS), f"{name}: {variable}={env.get(variable)}"
        for variable in INTERNAL_MIN_ISR:
            assert env.get(variable) == str(MIN_IN_SYNC), f"{name}: {variable}={env.get(variable)}"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", name


def test_topic_init_creates_the_pipelines_topics_with_three_replicas_two_in_sync():
    env = _env(SERVICES["topic-init"])
    assert env.get("STREAMFLOW_TOPIC_REPLICATION_FACTOR") == str(REPLICAS)
    assert env.get("STREAMFLOW_TOPIC_MIN_INSYNC_REPLICAS") == str(MIN_IN_SYNC)
    assert compose.command(SERVICES["topic-init"])[:3] == ["streamflow", "topics", "create"]


def test_every_client_bootstraps_from_every_node():
    every = {_advertised(name) for name in BROKERS}
    clients = {name: _env(svc)["KAFKA_BOOTSTRAP_SERVERS"] for name, svc in SERVICES.items()
               if "build" in svc}
    clients["kafka-ui"] = _env(SERVICES["kafka-ui"])["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"]
    for name, value in clients.items():
        assert _hosts(value) == every, f"{name} bootstraps from {value}"


def test_whatever_waits_for_a_broker_waits_for_all_three_and_no_broker_for_another():
    waiting = set()
    for name in SERVICES.keys() - BROKERS.keys():
        waits = compose.waits_for(SERVICES, name)
        if waits.keys() & BROKERS.keys():
            waiting.add(name)
            assert {broker: waits.get(broker) for broker in BROKERS} == dict.fromkeys(
                BROKERS, "service_healthy"), name
    assert {"topic-init", "kafka-ui", "producer", "sink", "live"} <= waiting
    for name in BROKERS:  # a node is healthy only once a quorum of two is up: start together
        assert not compose.waits_for(SERVICES, name).keys() & BROKERS.keys(), name


def test_each_node_publishes_its_own_external_port():
    ports = {name: compose.published(svc) for name, svc in BROKERS.items()}
    assert len({host_port for [(_, host_port, _)] in ports.values()}) == len(BROKERS), ports
    for name, [(_, _, port)] in ports.items():
        _, listening = _listeners(_env(BROKERS[name])["KAFKA_LISTENERS"])["EXTERNAL"]
        assert listening == int(port), name


def test_each_node_keeps_its_log_on_a_volume_of_its_own():
    volumes = {}
    for name, svc in BROKERS.items():
        mounts = compose.named_volume_mounts(CLUSTER, svc)
        [volume] = {mounts[target] for target in mounts
                    if target == _env(svc)["KAFKA_LOG_DIRS"]}
        volumes[name] = volume
    assert len(set(volumes.values())) == len(BROKERS), volumes
    # A single-broker stack's log belongs to another cluster id: the cluster leaves it alone.
    single = set(compose.named_volume_mounts(compose.compose_file(), SINGLE["kafka"]).values())
    assert not single & set(volumes.values()), volumes


def test_every_node_has_a_bounded_heap():
    for name, svc in BROKERS.items():
        heap = _env(svc).get("KAFKA_HEAP_OPTS", "")
        assert re.search(r"-Xmx\d+[mg]\b", heap), f"{name}: KAFKA_HEAP_OPTS={heap!r}"


def test_one_sink_per_partition_of_user_events():
    assert compose.replicas(SERVICES["sink"]) == compose.user_events_partitions(SERVICES) > 1


# -- the merge the rules above rest on: compose's own rules (docs.docker.com, "Merge") --------

@pytest.mark.parametrize(("base", "override", "merged"), [
    pytest.param({"environment": {"A": "1", "B": "2"}}, {"environment": ["B=3", "C=4"]},
                 {"environment": {"A": "1", "B": "3", "C": "4"}}, id="environment-by-name"),
    pytest.param({"depends_on": ["a"]}, {"depends_on": {"b": {"condition": "service_healthy"}}},
                 {"depends_on": {"a": {"condition": "service_started"},
                                 "b": {"condition": "service_healthy"}}}, id="depends_on"),
    pytest.param({"volumes": ["old:/data", "./conf:/etc/conf:ro"]}, {"volumes": ["new:/data"]},
                 {"volumes": ["new:/data", "./conf:/etc/conf:ro"]}, id="volumes-by-target"),
    pytest.param({"ports": ["127.0.0.1:1:1"]}, {"ports": ["127.0.0.1:2:2", "127.0.0.1:1:1"]},
                 {"ports": ["127.0.0.1:1:1", "127.0.0.1:2:2"]}, id="ports-unique"),
    pytest.param({"command": ["a", "b"], "dns": ["1.1.1.1"]},
                 {"command": ["c"], "dns": ["8.8.8.8"]},
                 {"command": ["c"], "dns": ["1.1.1.1", "8.8.8.8"]}, id="command-replaced"),
    pytest.param({"healthcheck": {"test": ["CMD", "a"], "retries": 3}},
                 {"healthcheck": {"test": ["CMD", "b"]}},
                 {"healthcheck": {"test": ["CMD", "b"], "retries": 3}}, id="healthcheck-test"),
])
def test_the_merge_follows_composes_rules(base, override, merged):
    result = compose.merge({"services": {"s": base}, "volumes": {"old": None}},
                           {"services": {"s": override, "t": {}}, "volumes": {"new": None}})
    assert result["services"] == {"s": merged, "t": {}}
    assert result["volumes"] == {"old": None, "new": None}
