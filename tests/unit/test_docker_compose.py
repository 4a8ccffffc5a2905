"""docker-compose.yml cannot run here (no Docker engine): check its shape statically."""

import re

import pytest
import yaml

from streamflow.settings import env_var_names
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {name for name, svc in SERVICES.items() if "build" in svc}


def test_every_part_of_the_platform_is_a_service():
    assert {"kafka", "topic-init", "postgres", "migrate", "kafka-ui", "producer", "sink",
            "live", "dagster-webserver", "dagster-daemon"} <= set(SERVICES)
    assert {"topic-init", "migrate", "producer", "sink", "live", "dagster-webserver",
            "dagster-daemon"} <= OURS
    assert (ROOT / "Dockerfile").exists()


def test_kafka_is_a_4x_kraft_broker_with_a_health_check():
    kafka = SERVICES["kafka"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "healthcheck" in kafka and "healthcheck" in SERVICES["postgres"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned(name):
    image = SERVICES[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and tag and tag != "latest", image


@pytest.mark.parametrize("name", sorted(OURS))
def test_our_services_only_set_variables_the_settings_read(name):
    assert set(SERVICES[name].get("environment", {})) <= env_var_names()


def _waits_for(name: str) -> dict[str, str]:
    """Every service ``name`` waits for, transitively, with the condition it waits on."""
    seen: dict[str, str] = {}
    todo = [name]
    while todo:
        for dep, spec in SERVICES[todo.pop()].get("depends_on", {}).items():
            if dep not in seen:
                seen[dep] = spec["condition"]
                todo.append(dep)
    return seen


@pytest.mark.parametrize("name", ["producer", "sink", "live", "dagster-webserver",
                                  "dagster-daemon"])
def test_nothing_starts_before_the_broker_is_healthy_and_topics_exist(name):
    waits = _waits_for(name)
    assert waits.get("kafka") == "service_healthy"
    assert waits.get("postgres") == "service_healthy"
    assert waits.get("topic-init") == "service_completed_successfully"
    assert waits.get("migrate") == "service_completed_successfully"
