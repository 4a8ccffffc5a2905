"""Who may import whom (docs/ARCHITECTURE.md, "Layers"): read from the source, not trusted."""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Layer -> top-level packages it must never import (the ones above it, and Dagster for the
# runtime, which workers run without).
FORBIDDEN = {
    "streamflow": {"dagster", "dagster_dbt", "dagster_postgres", "resources", "assets",
                   "sensors", "streamflow_defs"},
    "resources": {"assets", "sensors", "streamflow_defs"},
    "assets": {"sensors", "streamflow_defs"},
    "sensors": {"streamflow_defs"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    offences = {str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[layer])
                for path in sorted((ROOT / layer).rglob("*.py"))}
    assert {path: names for path, names in offences.items() if names} == {}


def test_the_import_reader_sees_an_offence():
    assert {"resources", "dagster"} <= _imports(ROOT / "assets" / "microbatch.py")
