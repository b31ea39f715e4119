"""The image build and compose's services, replayed without a Docker engine.

``build`` reads the Dockerfile: it lays out the build context as its COPY lines and .dockerignore
say, and runs its RUN lines in that layout with a fresh virtualenv standing for the image's Python.
Nothing is restated here, so a Dockerfile that leaves out a package fails as the real build would.
What cannot be replayed is named: the base image's OS (its Python must be ours, 3.13), and
``useradd``. The base image has no C compiler, so neither has the replay: a dependency that only
builds from C source fails here as it would there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]

COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "make")
"""What python:3.13-slim lacks and a source build would call."""

SKIPPED = {"useradd": "creates the image's user; the replay runs as the test's user"}
"""RUN commands the replay passes over, each with the reason."""


class ReplayError(AssertionError):
    """The Dockerfile asks for something the build would fail at, or the replay cannot do."""


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def msgstatus_services() -> dict[str, dict]:
    """Compose's services that run the msgstatus image's command."""
    return {
        name: svc for name, svc in compose()["services"].items()
        if isinstance(svc.get("command"), list) and svc["command"][0] == "msgstatus"
    }


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:[?-])(?P<arg>[^}]*))?\}")


def interpolate(value: str, given: dict[str, str]) -> str:
    """``value`` with compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` filled from ``given``."""

    def fill(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if given.get(name):
            return given[name]
        if op == ":?":
            raise ReplayError(f"compose refuses to start without {name}: {arg}")
        return arg if op == ":-" else ""

    return _VARIABLE.sub(fill, value)


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _ignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude, pattern) rules, the last match deciding, as Docker reads it."""
    path = context / ".dockerignore"
    rules = []
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(?:.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        rules.append((exclude, re.compile(regex + "(?:/.*)?")))  # a directory takes what is under it
    return rules


def _ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    ignored = False
    for exclude, pattern in rules:
        if pattern.fullmatch(relative):
            ignored = exclude
    return ignored


def _context_files(base: Path, context: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> list[Path]:
    """The files under ``base`` that reach the build context (an ignored directory is not walked)."""
    reincluding = any(not exclude for exclude, _ in rules)  # a "!" rule may take back a file under it

    def keep(path: Path) -> bool:
        return not _ignored(path.relative_to(context).as_posix(), rules)

    found = []
    for directory, subdirectories, names in os.walk(base):
        here = Path(directory)
        subdirectories[:] = [d for d in subdirectories if reincluding or keep(here / d)]
        found += [here / name for name in names if keep(here / name)]
    return sorted(found)


def _copy(context: Path, sources: list[str], target: str, workdir: Path, root: Path,
          rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    destination = root / target.lstrip("/") if target.startswith("/") else workdir / target
    for source in sources:
        base = (context / source).resolve()
        if not base.exists() or not base.is_relative_to(context):
            raise ReplayError(f"COPY {source}: no such file in the build context")
        if base.is_file():
            if _ignored(base.relative_to(context).as_posix(), rules):
                raise ReplayError(f"COPY {source}: .dockerignore leaves it out of the build context")
            to = destination / base.name if target.endswith("/") or destination.is_dir() else destination
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base, to)
            continue
        for path in _context_files(base, context, rules):  # a directory's contents, not the directory
            to = destination / path.relative_to(base)
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, to)


@dataclass
class Image:
    """A replayed image: its filesystem under ``root``, its Python a virtualenv, its build's output."""

    root: Path
    workdir: Path
    python: Path
    env: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def bin(self) -> Path:
        return self.python.parent

    def environ(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a process in the image: its PATH first, none of the tests' variables."""
        shim = self.root / "no-compiler"
        path = os.pathsep.join([str(shim), str(self.bin), "/usr/local/bin", "/usr/bin", "/bin"])
        return {"PATH": path, "HOME": str(self.root / "home"), "LANG": "C.UTF-8", **self.env, **(extra or {})}

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=self.workdir, env=self.environ(env), capture_output=True,
                              text=True, timeout=timeout)


def _compiler_shim(directory: Path) -> None:
    directory.mkdir(parents=True)
    for name in COMPILERS:
        tool = directory / name
        tool.write_text(f'#!/bin/sh\necho "{name}: python:3.13-slim has no compiler" >&2\nexit 127\n')
        tool.chmod(0o755)


def build(context: Path, into: Path, dockerfile: str = "Dockerfile") -> Image:
    """Replay ``context/dockerfile`` into the directory ``into``; ReplayError with the build's output if it fails."""
    context = context.resolve()
    rules = _ignore_rules(context)
    image: Image | None = None
    log: list[str] = []
    for keyword, rest in _instructions((context / dockerfile).read_text()):
        if keyword == "FROM":
            wanted = f"python:{sys.version_info.major}.{sys.version_info.minor}"
            if not rest.startswith(wanted):
                raise ReplayError(f"FROM {rest}: the replay's Python is {wanted}, so it can only stand for {wanted}")
            root = into / "image"
            _compiler_shim(root / "no-compiler")
            subprocess.run([sys.executable, "-m", "venv", str(root / "python")], check=True)
            image = Image(root, root, root / "python" / "bin" / "python")
            continue
        if image is None:
            raise ReplayError(f"{keyword} before FROM")
        if keyword == "WORKDIR":
            image.workdir = image.root / rest.lstrip("/")
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "ENV":
            name, _, value = rest.partition("=") if "=" in rest.split()[0] else rest.partition(" ")
            image.env[name.strip()] = value.strip().strip('"')
        elif keyword == "COPY":
            words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            if any(word.startswith("--from") for word in words):
                raise ReplayError("COPY --from (a multi-stage build) is not replayed")
            *sources, target = [word for word in words if not word.startswith("--")]
            _copy(context, sources, target, image.workdir, image.root, rules)
        elif keyword == "RUN":
            for command in re.split(r"\s*&&\s*", rest):
                argv = shlex.split(command)
                if argv[0] in SKIPPED:
                    image.skipped.append(f"{command} ({SKIPPED[argv[0]]})")
                    continue
                if argv[0] not in ("pip", "python", "python3"):
                    raise ReplayError(f"RUN {command}: the replay knows pip and python commands; teach it {argv[0]}")
                argv = [str(image.python), *(["-m", "pip"] if argv[0] == "pip" else []), *argv[1:]]
                done = image.run(*argv, timeout=600)
                log.append(f"$ {command}\n{done.stdout}{done.stderr}")
                if done.returncode != 0:
                    raise ReplayError(f"RUN {command} failed ({done.returncode}):\n" + "\n".join(log))
        elif keyword not in ("USER", "CMD", "ENTRYPOINT", "EXPOSE", "LABEL"):
            raise ReplayError(f"{keyword}: the replay does not know this instruction")
    if image is None:
        raise ReplayError("no FROM in the Dockerfile")
    image.output = "\n".join(log)
    return image


def service_env(service: dict, given: dict[str, str], mongo_url: str, redis_host: str) -> dict[str, str]:
    """A compose service's environment with its variables filled, MongoDB and Redis's host pointed here.

    MONGO_DB_URL becomes ``mongo_url`` (the embedded server is no replica set); REDIS_URL keeps its
    user, password and database and takes ``redis_host`` ("host:port").
    """
    env = {name: interpolate(str(value), given) for name, value in service["environment"].items()}
    env["MONGO_DB_URL"] = mongo_url
    parts = urlsplit(env["REDIS_URL"])
    credentials = parts.netloc.rpartition("@")[0]
    env["REDIS_URL"] = urlunsplit(parts._replace(netloc=f"{credentials}@{redis_host}" if credentials else redis_host))
    return env
