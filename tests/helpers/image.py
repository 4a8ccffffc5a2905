"""The Docker image's file set, built without a Docker engine: the Dockerfile's instructions
carried out into a directory that stands for the container's ``/``.

`.dockerignore` filters the build context, COPY copies from it, ENV and WORKDIR set what the
processes see, RUN runs its commands with ``sh`` in that directory. The image's Python is a
fresh venv at ``<root>/usr/local`` (where the image's ``pip install --system`` puts packages and
console scripts), made from this interpreter, so only Python's patch version differs. RUN's
commands run as written but for three mappings: `pip install` is `uv pip install` into the
venv, uv's `--system` names the venv's Python, and neither skips uv's cache (it makes the
install take seconds); user accounts (`useradd`, `chown`) are not reproduced. An absolute path
in an ENV value, a compose environment value or a command is the container's: it lives under
the root. A change to the Dockerfile or .dockerignore is what the tests then run.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from streamflow.settings import env_var_names

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
# What the image's RUN steps may do that is not reproduced here: the test runs as its own user.
ACCOUNT_COMMANDS = frozenset({"useradd", "groupadd", "usermod", "chown"})
IGNORED_INSTRUCTIONS = frozenset({"USER", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL"})
# Variables of this process that would let the image's Python import from the checkout.
PYTHON_VARIABLES = frozenset({"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"})
# An absolute path at the start of a word (not the path part of a URL or host:port/db).
ABSOLUTE_PATH = re.compile(r"(?<![\w:/.@-])/[\w./-]*")
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions: comment lines dropped, continuation lines joined."""
    found, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return found


def _pattern(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    parts = []
    for index, part in enumerate(pattern.split("/")):
        if part == "**":
            parts.append("(?:.*/)?" if index < pattern.count("/") else ".*")
        else:
            translated = fnmatch.translate(part).removeprefix("(?s:").removesuffix(")\\Z")
            parts.append(translated.replace(".*", "[^/]*") + "/")
    return re.compile("".join(parts).removesuffix("/"))


class DockerIgnore:
    """Which paths of the build context .dockerignore leaves out (the last matching rule wins;
    a rule matching a folder leaves out all it holds)."""

    def __init__(self, text: str) -> None:
        self.rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            cleaned = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.rules.append((negate, _pattern(cleaned)))

    def excluded(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        verdict = False
        for negate, rule in self.rules:
            if any(rule.fullmatch(candidate) for candidate in candidates):
                verdict = not negate
        return verdict


@dataclass
class Image:
    root: Path  # the container's "/"
    env: dict[str, str] = field(default_factory=dict)  # ENV, paths already under the root
    workdir: str = "/"

    @property
    def bin(self) -> Path:
        return self.root / "usr" / "local" / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def path(self, image_path: str) -> Path:
        return self.root / image_path.lstrip("/")

    def localise(self, text: str) -> str:
        """``text`` with every absolute path moved under the root."""
        return ABSOLUTE_PATH.sub(lambda m: str(self.path(m[0])), text)

    def environ(self, env: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        """A process environment in the image: none of this process's StreamFlow or Python
        variables, the image's ENV, then ``env`` (paths moved under the root), then ``extra``
        as given; the venv's scripts first on PATH."""
        base = {k: v for k, v in os.environ.items()
                if k not in env_var_names() and k not in PYTHON_VARIABLES}
        return {**base, **self.env, "PATH": f"{self.bin}{os.pathsep}{os.defpath}",
                **{k: self.localise(v) for k, v in (env or {}).items()}, **extra}


def _run_step(step: str, image: Image, uv: str) -> str | None:
    """One `&&`-separated step of a RUN, as it runs here (None: not reproduced)."""
    words = shlex.split(step)
    if not words or words[0] in ACCOUNT_COMMANDS:
        return None
    if words[:2] == ["pip", "install"]:
        step = f"{shlex.quote(uv)} pip install --python {image.python} " + step.split(
            "install", 1)[1]
    elif words[:2] == ["uv", "pip"]:
        step = re.sub(r"(?<!\S)--system(?!\S)", f"--python {image.python}", step)
    return re.sub(r"(?<!\S)--no-cache(-dir)?(?!\S)", "", step)


def _copy(arguments: str, image: Image, context: Path, ignore: DockerIgnore) -> None:
    words = [w for w in shlex.split(arguments) if not w.startswith("--")]
    *sources, destination = words
    into_folder = destination.endswith("/") or len(sources) > 1
    target = image.path(str(PurePosixPath(image.workdir, destination)))
    for source in sources:
        matches = sorted(context.glob(source.lstrip("/"))) if any(
            c in source for c in "*?[") else [context / source.lstrip("/")]
        assert matches, f"COPY {source}: not in the build context"
        for path in matches:
            relative = path.relative_to(context).as_posix()
            if ignore.excluded(relative):
                continue
            if path.is_dir():
                for inner in sorted(path.rglob("*")):
                    inner_relative = inner.relative_to(context).as_posix()
                    if inner.is_file() and not ignore.excluded(inner_relative):
                        copy_to = target / inner.relative_to(path)
                        copy_to.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(inner, copy_to)
            else:
                copy_to = target / path.name if into_folder else target
                copy_to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy_to)


def build(root: Path, *, context: Path = ROOT, log: Path | None = None) -> Image:
    """Carry out the Dockerfile in ``root``; the output of its RUN steps goes to ``log``."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (make install puts it there)"
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    image = Image(root)
    log = log or root.parent / f"{root.name}-build.log"
    for instruction in instructions(DOCKERFILE.read_text()):
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "FROM":
            _require_python(arguments)
            subprocess.run([uv, "venv", "--quiet", "--python", sys.executable,
                            str(image.python.parent.parent)], check=True)
        elif keyword == "ENV":
            image.env.update({name: image.localise(value) for name, value in _env_pairs(
                arguments)})
        elif keyword == "WORKDIR":
            image.workdir = str(PurePosixPath(image.workdir, arguments))
            image.path(image.workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            _copy(arguments, image, context, ignore)
        elif keyword == "RUN":
            steps = [_run_step(image.localise(step), image, uv)
                     for step in arguments.split("&&")]
            script = " && ".join(s for s in steps if s)
            if not script:
                continue
            with log.open("a") as out:
                out.write(f"\n$ RUN {script}\n")
                out.flush()
                # RUN's environment: the image's, with this machine's uv config and cache.
                env = {**image.environ(), "HOME": os.environ.get("HOME", "/root")}
                done = subprocess.run(["sh", "-c", script], cwd=image.path(image.workdir),
                                      env=env, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=BUILD_TIMEOUT_S)
            assert done.returncode == 0, (
                f"RUN {arguments} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
        else:
            assert keyword in IGNORED_INSTRUCTIONS, f"the image test cannot carry out {keyword}"
    return image


def _require_python(base: str) -> None:
    """The image's Python (``python:3.11.11-slim``) and this one share major and minor."""
    match = re.match(r"python:(\d+)\.(\d+)", base)
    assert match, f"FROM {base}: the image test builds on a python: image only"
    wanted = tuple(map(int, match.groups()))
    assert sys.version_info[:2] == wanted, (
        f"the image runs Python {wanted}, this test {sys.version_info[:2]}")


def _env_pairs(arguments: str) -> list[tuple[str, str]]:
    words = shlex.split(arguments)
    if "=" not in words[0]:  # the old form: ENV NAME value
        return [(words[0], " ".join(words[1:]))]
    return [tuple(word.split("=", 1)) for word in words]
