"""docker-compose.yml as compose reads it: its services, each one's command and environment;
with docker-compose.cluster.yml merged over it as `docker compose -f ... -f ...` merges them
(there is no Docker engine here to run `docker compose config`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CLUSTER_FILE = ROOT / "docker-compose.cluster.yml"  # the three-broker variant (README)
DEFAULT = re.compile(r"\$\{(\w+):?-([^}]*)\}")  # ${NAME:-default}, ${NAME-default}
VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")  # any other: required or unset
# Compose's merge rules (docs.docker.com/reference/compose-file/merge): mappings merge key by
# key and sequences append, but these service attributes are replaced whole (and a
# healthcheck's `test`), and `ports` and `volumes` keep one entry per key (below), the later
# file's winning.
REPLACED = frozenset({"command", "entrypoint"})


def compose_file(*overrides: Path) -> dict:
    """docker-compose.yml, with each of ``overrides`` merged over it in turn."""
    model = yaml.safe_load(COMPOSE_FILE.read_text())
    for path in overrides:
        model = merge(model, yaml.safe_load(path.read_text()))
    return model


def services(*overrides: Path) -> dict[str, dict]:
    return compose_file(*overrides)["services"]


def merge(base: dict, override: dict) -> dict:
    """Two compose files' models merged as compose merges them (the parts these files use)."""
    merged = _merge_mappings({k: v for k, v in base.items() if k != "services"},
                             {k: v for k, v in override.items() if k != "services"})
    services = dict(base.get("services") or {})
    for name, service in (override.get("services") or {}).items():
        services[name] = _merge_service(services.get(name) or {}, service or {})
    merged["services"] = services
    return merged


def _merge_service(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if key in ("environment", "depends_on"):
            merged[key] = {**_as_mapping(key, old), **_as_mapping(key, value)}
        elif key == "healthcheck" and isinstance(old, dict):
            merged[key] = {**old, **value}  # its `test` replaced whole, like command
        elif key in _UNIQUE_BY and isinstance(old, list):
            by_key = {_UNIQUE_BY[key](entry): entry for entry in [*old, *value]}
            merged[key] = list(by_key.values())
        elif key in REPLACED or old is None:
            merged[key] = value
        else:
            merged[key] = _merge_values(old, value)
    return merged


def _merge_values(old: object, new: object) -> object:
    if isinstance(old, dict) and isinstance(new, dict):
        return _merge_mappings(old, new)
    if isinstance(old, list) and isinstance(new, list):
        return [*old, *new]
    return new


def _merge_mappings(old: dict, new: dict) -> dict:
    merged = dict(old)
    for key, value in new.items():
        merged[key] = _merge_values(merged[key], value) if key in merged else value
    return merged


def _as_mapping(key: str, value: object) -> dict:
    """environment as NAME: value, depends_on as service: spec, from either of their forms."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if key == "environment":
        return dict(entry.split("=", 1) if "=" in entry else (entry, None) for entry in value)
    return {name: {"condition": "service_started"} for name in value}


def _mount(entry: str | dict) -> tuple[str, str]:
    """(source, target) of a `volumes` entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("source", ""), entry["target"]
    parts = str(entry).split(":")
    return (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])


def _port(entry: str | int | dict) -> tuple[str, str, str, str]:
    """(host address, host port, container port, protocol) of a `ports` entry."""
    if isinstance(entry, dict):
        return (entry.get("host_ip", ""), str(entry.get("published", "")),
                str(entry["target"]), entry.get("protocol", "tcp"))
    spec, _, protocol = str(entry).partition("/")
    address, published, target = ["", "", *spec.rsplit(":", 2)][-3:]
    return address, published, target, protocol or "tcp"


_UNIQUE_BY = {"ports": _port, "volumes": lambda entry: _mount(entry)[1]}


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each `ports` entry."""
    return [_port(entry)[:3] for entry in service.get("ports", [])]


def named_volume_mounts(model: dict, service: dict) -> dict[str, str]:
    """Mount path -> named volume (declared under top-level `volumes`) of a service."""
    declared = model.get("volumes") or {}
    return {target: source for source, target in map(_mount, service.get("volumes", []))
            if source in declared}


def waits_for(services: dict[str, dict], name: str) -> dict[str, str]:
    """Every service ``name`` waits for, transitively, with the condition it waits on."""
    seen: dict[str, str] = {}
    todo = [name]
    while todo:
        for dep, spec in _as_mapping("depends_on", services[todo.pop()].get("depends_on")).items():
            if dep not in seen:
                seen[dep] = spec["condition"]
                todo.append(dep)
    return seen


def brokers(services: dict[str, dict]) -> dict[str, dict]:
    """The Kafka brokers of a compose model, by service name."""
    return {name: svc for name, svc in services.items()
            if str(svc.get("image", "")).startswith("apache/kafka:")}


def replicas(service: dict) -> int:
    """Containers `docker compose up` starts for a service (no --scale)."""
    return int(interpolate((service.get("deploy") or {}).get("replicas", 1)))


def user_events_partitions(services: dict[str, dict]) -> int:
    """Partitions of user-events as the topic-init service creates them."""
    from streamflow.settings import Settings

    value = environment(services["topic-init"]).get("STREAMFLOW_USER_EVENTS_PARTITIONS")
    return int(value or Settings.model_fields["user_events_partitions"].default)


def command(service: dict) -> list[str]:
    """The service's command as compose runs it (a string is split as a shell would)."""
    value = service["command"]
    return list(value) if isinstance(value, list) else shlex.split(value)


def interpolate(value: object) -> str:
    """A value as compose reads it with no variable set: defaults in; a required or unset
    variable gets a placeholder (tests override the ones that matter: addresses, homes,
    secrets)."""
    value = DEFAULT.sub(lambda m: m[2], str(value))
    return VARIABLE.sub(lambda m: f"test-{m[1].lower()}", value)


def environment(service: dict) -> dict[str, str]:
    """The service's environment, interpolated as above."""
    return {name: interpolate(value)
            for name, value in _as_mapping("environment", service.get("environment")).items()}


def healthcheck(service: dict) -> list[str]:
    """The healthcheck's command (``CMD``: as is; ``CMD-SHELL``: through ``sh -c``)."""
    kind, *args = service["healthcheck"]["test"]
    return args if kind == "CMD" else ["sh", "-c", *args]
