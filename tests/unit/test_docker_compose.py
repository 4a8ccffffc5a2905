"""docker-compose.yml cannot run here (no Docker engine): check its shape statically.

The rules every variant keeps are checked on docker-compose.yml alone and with the three-broker
docker-compose.cluster.yml merged over it; the cluster's own rules are in
test_docker_compose_cluster.py."""

import inspect
import json
import re
import shlex
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from streamflow.settings import env_var_names
from tests.conftest import ROOT
from tests.helpers import compose


def _ours(services: dict[str, dict]) -> set[str]:
    return {name for name, svc in services.items() if "build" in svc}


COMPOSE = compose.compose_file()
SERVICES = COMPOSE["services"]
OURS = _ours(SERVICES)
# Each variant a user can start, as compose merges its files.
VARIANTS = {"single": COMPOSE, "cluster": compose.compose_file(compose.CLUSTER_FILE)}


def _each(pick) -> list:
    """(variant, service) parameters: in every variant, each service ``pick`` chooses from its
    services (a collection of names)."""
    return [pytest.param(variant, name, id=f"{variant}-{name}")
            for variant, model in VARIANTS.items() for name in sorted(pick(model["services"]))]


def test_every_part_of_the_platform_is_a_service():
    assert {"kafka", "topic-init", "postgres", "migrate", "kafka-ui", "producer", "sink",
            "live", "dagster-webserver", "dagster-daemon", "prometheus", "grafana"} <= set(SERVICES)
    assert {"topic-init", "migrate", "producer", "sink", "live", "dagster-webserver",
            "dagster-daemon"} <= OURS
    assert (ROOT / "Dockerfile").exists()


def test_kafka_is_a_4x_kraft_broker_with_a_health_check():
    kafka = SERVICES["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka and "healthcheck" in SERVICES["postgres"]


@pytest.mark.parametrize(("variant", "name"), _each(set))
def test_images_are_pinned(variant, name):
    image = VARIANTS[variant]["services"][name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest", image


@pytest.mark.parametrize(("variant", "name"), _each(_ours))
def test_our_services_only_set_variables_the_settings_read(variant, name):
    env = VARIANTS[variant]["services"][name].get("environment", {})
    assert set(env) - env_var_names() == set()


WORKERS = ("producer", "sink", "live", "dagster-webserver", "dagster-daemon")


@pytest.mark.parametrize(("variant", "name"), _each(lambda _: WORKERS))
def test_nothing_starts_before_the_brokers_are_healthy_and_topics_exist(variant, name):
    services = VARIANTS[variant]["services"]
    waits = compose.waits_for(services, name)
    for broker in compose.brokers(services):
        assert waits.get(broker) == "service_healthy", broker
    assert waits.get("postgres") == "service_healthy"
    assert waits.get("topic-init") == "service_completed_successfully"
    assert waits.get("migrate") == "service_completed_successfully"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_more_sinks_than_partitions_of_user_events(variant):
    """The sinks share one group: Kafka gives each partition to one sink, a sink beyond the
    partitions sits idle."""
    services = VARIANTS[variant]["services"]
    assert 1 <= compose.replicas(services["sink"]) <= compose.user_events_partitions(services)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_scaled_sinks_never_share_a_static_group_member_id(variant):
    """Every replica of the sink service (`--scale sink=N`, the cluster's `deploy.replicas`)
    runs one command: a fixed --instance-id there is one static member id for them all, and
    sinks sharing one fence each other out of the group in turn (docker-compose.yml, sink)."""
    command = compose.command(VARIANTS[variant]["services"]["sink"])
    words = shlex.split(command[2]) if command[:2] == ["sh", "-c"] else command
    if "--instance-id" in words:
        value = words[words.index("--instance-id") + 1]
        assert "$" in value, f"every sink replica would join as {value!r}"


# -- a compose stack fit for a server (issue 13): each rule below failed on the old file -------

RAW = compose.COMPOSE_FILE.read_text()
# Published ports listen here unless .env opts in (docker-compose.yml header, .env.example).
PUBLISH_ADDRESS = "${STREAMFLOW_PUBLISH_ADDRESS:-127.0.0.1}"
LOOPBACK = "127.0.0.1"
# Variables that must stop compose when unset: a default would be a shared, public secret
# (or, for the live token, an empty one, which switches the check off).
SECRETS = ("POSTGRES_PASSWORD", "STREAMFLOW_PII_KEY", "STREAMFLOW_LIVE_TOKEN",
           "GRAFANA_ADMIN_PASSWORD")
# PromQL words a dashboard query may use besides metric names.
PROMQL_WORDS = frozenset({"sum", "min", "max", "avg", "count", "rate", "irate", "increase",
                          "histogram_quantile", "clamp_min", "and", "or", "unless", "offset"})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_published_port_listens_on_loopback_unless_the_user_opts_in(variant):
    services = VARIANTS[variant]["services"]
    published = {name: compose.published(svc) for name, svc in services.items() if "ports" in svc}
    assert published
    for name, entries in published.items():
        for address, host_port, _ in entries:
            assert address in (PUBLISH_ADDRESS, LOOPBACK), (
                f"{name} publishes {host_port} on {address or 'every interface'}")


@pytest.mark.parametrize(("variant", "name"), _each(compose.brokers))
def test_the_kafka_external_listener_is_published_on_loopback_only(variant, name):
    kafka = VARIANTS[variant]["services"][name]
    [(address, host_port, port)] = compose.published(kafka)
    assert address == LOOPBACK
    # Clients on this host are sent to the published port: the same number inside.
    assert host_port == port
    assert f"EXTERNAL://localhost:{port}" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_secrets_have_no_defaults():
    references = re.findall(r"\$\{(\w+)(:?[-?+])?", RAW)
    for secret in SECRETS:
        operators = [op for name, op in references if name == secret]
        assert operators, f"{secret} is not used"
        assert set(operators) == {":?"}, f"{secret} must be ${{{secret}:?...}}, not {operators}"
    # ... and reach what they protect.
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?")
    assert SERVICES["live"]["environment"]["STREAMFLOW_LIVE_TOKEN"].startswith(
        "${STREAMFLOW_LIVE_TOKEN:?")
    assert SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?")


@pytest.mark.parametrize(("variant", "name"), _each(compose.brokers))
def test_kafka_keeps_its_log_on_the_mounted_volume(variant, name):
    kafka = VARIANTS[variant]["services"][name]
    log_dirs = kafka["environment"].get("KAFKA_LOG_DIRS")
    assert log_dirs, "KAFKA_LOG_DIRS unset: the apache/kafka image writes to /tmp"
    mounts = compose.named_volume_mounts(VARIANTS[variant], kafka)
    for log_dir in log_dirs.split(","):
        assert any(PurePosixPath(log_dir).is_relative_to(target) for target in mounts), (
            f"{log_dir} is on none of kafka's volumes {sorted(mounts)}")


def test_kafka_ui_is_kafbat_pinned_to_a_release():
    kafka_ui = SERVICES["kafka-ui"]
    assert re.fullmatch(r"kafbat/kafka-ui:v\d+\.\d+\.\d+", kafka_ui["image"])
    env = kafka_ui["environment"]
    assert all(name.startswith("KAFKA_CLUSTERS_0_") for name in env), sorted(env)
    assert env["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"


def _mounted_file(service: dict, target: str) -> Path:
    """The file of this repository that a service mounts at ``target`` (bind mount)."""
    for entry in service.get("volumes", []):
        source, mount = str(entry).split(":")[:2]
        if mount == target:
            assert source.startswith("./"), entry
            return ROOT / source
    raise AssertionError(f"nothing mounted at {target}")


def _metrics_commands() -> set[str]:
    """The `streamflow` commands that serve /metrics (they call cli._serve_metrics)."""
    from streamflow import cli

    return {command.name or command.callback.__name__
            for command in cli.app.registered_commands
            if "_serve_metrics(" in inspect.getsource(command.callback)}


def test_prometheus_scrapes_every_worker_on_its_metrics_port():
    commands = _metrics_commands()
    assert commands == {"produce", "sink"}  # the live view serves none: nothing to scrape
    expected = set()
    for name, svc in SERVICES.items():
        command = svc.get("command") or []
        if command[:1] == ["streamflow"] and command[1] in commands:
            env = svc["environment"]
            assert env.get("STREAMFLOW_METRICS_HOST") == "0.0.0.0", name  # reachable by name
            expected.add((name, int(env["STREAMFLOW_METRICS_PORT"])))
    assert {name for name, _ in expected} == {"producer", "sink"}
    prometheus = SERVICES["prometheus"]
    config = yaml.safe_load(
        _mounted_file(prometheus, "/etc/prometheus/prometheus.yml").read_text())
    targets = set()
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {(name, int(sd["port"])) for name in sd["names"]}
        for static in job.get("static_configs", []):
            targets |= {(host, int(port)) for host, port in
                        (target.rsplit(":", 1) for target in static["targets"])}
    assert targets == expected


def _grafana_dir(target: str) -> Path:
    path = _mounted_file(SERVICES["grafana"], target)
    assert path.is_dir(), path
    return path


def _dashboards() -> dict[str, dict]:
    provisioning = _grafana_dir("/etc/grafana/provisioning")
    [provider] = yaml.safe_load(
        (provisioning / "dashboards" / "streamflow.yml").read_text())["providers"]
    folder = _grafana_dir(provider["options"]["path"])
    dashboards = {path.name: json.loads(path.read_text()) for path in folder.glob("*.json")}
    assert dashboards
    return dashboards


def _queries(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_grafana_reads_the_compose_prometheus():
    provisioning = _grafana_dir("/etc/grafana/provisioning")
    [source] = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "9090" in {port for _, _, port in compose.published(SERVICES["prometheus"])}
    for dashboard in _dashboards().values():
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def _exposed_metric_names() -> set[str]:
    """Every sample name the workers serve: streamflow/metrics.py's metrics with the suffixes
    prometheus_client adds per type."""
    from prometheus_client import Counter, Gauge, Histogram

    from streamflow import metrics

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum", "_created")}
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            for family in value.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, strings and
    grouping labels removed, then functions and keywords)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", bare)
    return set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", bare)) - PROMQL_WORDS


def test_the_dashboard_queries_only_metrics_the_code_defines():
    exposed = _exposed_metric_names()
    assert {"streamflow_events_landed_total", "streamflow_sink_batch_seconds_bucket"} <= exposed
    for name, dashboard in _dashboards().items():
        for expr in _queries(dashboard):
            selected = _metric_names(expr)
            assert selected, f"{name}: no metric in {expr!r}"
            assert selected <= exposed, f"{name}: {sorted(selected - exposed)} in {expr!r}"


def test_the_dashboard_shows_rates_lag_dead_letters_by_reason_and_batch_time():
    queries = [expr for dashboard in _dashboards().values() for expr in _queries(dashboard)]
    selected = set().union(*map(_metric_names, queries))
    assert {"streamflow_events_produced_total", "streamflow_events_landed_total",
            "streamflow_consumer_lag", "streamflow_dead_letters_total",
            "streamflow_sink_batch_seconds_bucket"} <= selected
    assert any("streamflow_dead_letters_total" in expr and re.search(r"by \([^)]*reason", expr)
               for expr in queries)


DAGSTER_SERVICES = ("migrate", "dagster-code-server", "dagster-webserver", "dagster-daemon")


def test_the_dagster_instance_config_is_not_a_second_hand_kept_copy():
    assert not (ROOT / "docker" / "dagster.yaml").exists()
    copied = [line for line in (ROOT / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY")]
    assert not [line for line in copied if "dagster" in line or "workspace" in line], copied
    home = SERVICES["migrate"]["environment"]["DAGSTER_HOME"]
    shared = {name: compose.named_volume_mounts(COMPOSE, SERVICES[name]).get(home)
              for name in DAGSTER_SERVICES}
    assert len(set(shared.values())) == 1 and None not in shared.values(), shared
    for name in ("dagster-webserver", "dagster-daemon"):
        command = SERVICES[name]["command"]
        assert command[command.index("-w") + 1] == f"{home}/workspace.yaml"


def _prepare_args() -> list[str]:
    """The `streamflow dagster prepare` arguments of the migrate service's command."""
    command = SERVICES["migrate"]["command"]
    script = command[2] if command[:2] == ["sh", "-c"] else shlex.join(command)
    for step in script.split("&&"):
        words = shlex.split(step)
        if words[:3] == ["streamflow", "dagster", "prepare"]:
            return words[1:]
    raise AssertionError(f"the migrate service does not run `streamflow dagster prepare`: "
                         f"{command}")


def test_migrate_writes_the_instance_config_streamflow_up_writes(tmp_path, monkeypatch):
    from streamflow import cli, supervisor
    from streamflow.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    ran = []  # the storage migration (streamflow_defs.prepare_instance) needs a database
    monkeypatch.setattr(supervisor, "subprocess", SimpleNamespace(
        run=lambda args, **kw: ran.append(args) or SimpleNamespace(returncode=0, stdout="")))
    compose_home = tmp_path / "compose"
    result = CliRunner().invoke(cli.app, _prepare_args(), env={
        "DAGSTER_HOME": str(compose_home), "STREAMFLOW_HOME": str(tmp_path),
        "DATABASE_URL": "postgresql://streamflow:secret@postgres:5432/streamflow"})
    assert result.exit_code == 0, result.output
    assert ran and ran[0][1:] == ["-m", "streamflow_defs.prepare_instance"]

    local = supervisor.write_dagster_yaml(load_settings(
        DAGSTER_HOME=str(tmp_path / "local"), STREAMFLOW_DAGSTER_STORAGE="postgres"))
    assert (compose_home / "dagster.yaml").read_text() == local.read_text()
    instance = yaml.safe_load(local.read_text())
    storage = json.dumps(instance["storage"])  # Dagster's tables in the DATABASE_URL database
    assert '{"env": "DATABASE_URL"}' in storage and "sqlite" not in storage, storage
    assert instance["run_monitoring"]["enabled"]
    [location] = yaml.safe_load((compose_home / "workspace.yaml").read_text())["load_from"]
    server = SERVICES["dagster-code-server"]["command"]
    assert location["grpc_server"]["host"] == "dagster-code-server"
    assert location["grpc_server"]["port"] == int(server[server.index("-p") + 1])
    assert location["grpc_server"]["location_name"] == server[server.index("--location-name")
                                                              + 1]


@pytest.mark.parametrize(("variant", "name"), _each(_ours))
def test_our_services_can_reach_a_managed_secured_kafka(variant, name):
    """Every Kafka connection setting (security included: SASL, the CA, the client certificate,
    key and key password for mutual TLS) passes through from .env, so compose's workers can use
    a managed cluster instead of the `kafka` service (README "Deploying")."""
    env = VARIANTS[variant]["services"][name]["environment"]
    connection = {variable for variable in env_var_names() if variable.startswith("KAFKA_")}
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SSL_CERTIFICATE_LOCATION",
            "KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_KEY_PASSWORD"} <= connection
    for variable in sorted(connection):
        assert str(env.get(variable, "")).startswith(f"${{{variable}:-"), variable
