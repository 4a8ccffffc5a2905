"""tests/helpers/image.py reads the Dockerfile and .dockerignore as Docker does: what the image
test builds is what `docker build` would."""

import pytest

from tests.helpers import image


def test_instructions_join_continuations_and_drop_comments():
    text = ("# a comment\nFROM python:3.11.11-slim\n\nENV A=1 \\\n    B=2\n"
            "RUN one \\\n    && two\n# between\nCOPY a b ./\n")
    assert image.instructions(text) == [
        image.Instruction("FROM", "python:3.11.11-slim"), image.Instruction("ENV", "A=1 B=2"),
        image.Instruction("RUN", "one && two"), image.Instruction("COPY", "a b ./")]


@pytest.mark.parametrize(("path", "excluded"), [
    (".venv", True), (".venv/bin/python", True), ("sub/.venv", False),
    ("streamflow/__pycache__/x.pyc", True), ("__pycache__", True), ("a/b/__pycache__/c", True),
    ("dbt_project/target/manifest.json", True), ("dbt_project/targets", False),
    ("dbt_project/models/x.sql", False), ("notes/keep.md", False), ("notes/drop.md", True),
    ("x.log", True), ("deep/x.log", False), ("streamflow/cli.py", False)])
def test_dockerignore_patterns_match_as_docker_matches_them(path, excluded):
    ignore = image.DockerIgnore("# comment\n.venv\n**/__pycache__\n/dbt_project/target/\n"
                                "notes/*\n!notes/keep.md\n*.log\n")
    assert ignore.excluded(path) is excluded


def test_the_repository_dockerignore_leaves_out_the_checkouts_manifest():
    """The image parses its own manifest: one from the checkout could be stale."""
    ignore = image.DockerIgnore(image.DOCKERIGNORE.read_text())
    assert ignore.excluded("dbt_project/target/manifest.json")
    assert not ignore.excluded("dbt_project/dbt_project.yml")


def test_run_steps_install_into_the_images_python_with_uvs_cache(tmp_path):
    built = image.Image(tmp_path)
    python = built.python
    assert image._run_step("pip install --no-cache-dir uv==0.13.9", built, "/bin/uv").split() == [
        "/bin/uv", "pip", "install", "--python", str(python), "uv==0.13.9"]
    assert image._run_step("uv pip install --system --no-cache -r requirements.lock", built,
                           "/bin/uv").split() == [
        "uv", "pip", "install", "--python", str(python), "-r", "requirements.lock"]
    assert image._run_step("useradd --uid 10001 streamflow", built, "/bin/uv") is None
    assert image._run_step('mkdir -p "$DAGSTER_HOME"', built, "/bin/uv") == (
        'mkdir -p "$DAGSTER_HOME"')
    assert built.localise("-w /opt/dagster/home/workspace.yaml") == (
        f"-w {tmp_path}/opt/dagster/home/workspace.yaml")
    assert built.localise("postgresql://u:p@postgres:5432/streamflow") == (
        "postgresql://u:p@postgres:5432/streamflow")
