"""docker-compose.yml as compose reads it: its services, each one's command and environment."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DEFAULT = re.compile(r"\$\{(\w+):?-([^}]*)\}")  # ${NAME:-default}, ${NAME-default}
VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")  # any other: required or unset


def compose_file() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose_file()["services"]


def command(service: dict) -> list[str]:
    """The service's command as compose runs it (a string is split as a shell would)."""
    value = service["command"]
    return list(value) if isinstance(value, list) else shlex.split(value)


def environment(service: dict) -> dict[str, str]:
    """The service's environment with compose's defaults; a required or unset variable gets a
    placeholder (tests override the ones that matter: addresses, homes, secrets)."""
    env = {}
    for name, value in (service.get("environment") or {}).items():
        value = DEFAULT.sub(lambda m: m[2], str(value))
        env[name] = VARIABLE.sub(lambda m: f"test-{m[1].lower()}", value)
    return env


def healthcheck(service: dict) -> list[str]:
    """The healthcheck's command (``CMD``: as is; ``CMD-SHELL``: through ``sh -c``)."""
    kind, *args = service["healthcheck"]["test"]
    return args if kind == "CMD" else ["sh", "-c", *args]
