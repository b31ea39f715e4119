"""docker-compose.yml cannot run here (no Docker engine); check it against the CLI and settings."""

from __future__ import annotations

import click
import yaml

from core.settings import VARIABLES
from msgstatus.cli import main
from tests.replay import ROOT, compose, msgstatus_services


def test_compose_runs_mongo_as_a_replica_set_with_a_healthcheck_and_redis():
    services = compose()["services"]
    assert services["mongo"]["image"] == "mongo:7"
    assert "--replSet rs0" in " ".join(services["mongo"]["entrypoint"])
    assert "rs.initiate" in " ".join(services["mongo"]["healthcheck"]["test"])
    assert services["redis"]["image"] == "redis:7"
    assert {"watcher", "worker", "scheduler", "dashboard", "api"} <= set(msgstatus_services())


def test_mongo_and_redis_require_passwords_that_compose_will_not_start_without():
    services = compose()["services"]
    mongo, redis = services["mongo"], services["redis"]
    # MongoDB: authentication with a key file (a replica set with users needs one), from the environment
    assert "--keyFile" in " ".join(mongo["entrypoint"])
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGO_PASSWORD:?")
    assert mongo["environment"]["MONGO_REPLICA_KEY"].startswith("${MONGO_REPLICA_KEY:?")
    # Redis: requirepass, and the healthcheck authenticates
    command = redis["command"]
    assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")
    # and every msgstatus process carries both in its URLs
    for name, service in msgstatus_services().items():
        env = service["environment"]
        assert env["MONGO_DB_URL"].startswith("mongodb://msgstatus:${MONGO_PASSWORD:?"), name
        assert env["REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?"), name
    # No database port is published: only the dashboard, the api and Prometheus, each on loopback
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"dashboard", "api", "prometheus"}


def test_every_msgstatus_command_and_option_in_compose_exists_in_the_cli():
    for name, service in msgstatus_services().items():
        _, subcommand, *args = service["command"]
        assert subcommand in main.commands, f"{name}: msgstatus has no command {subcommand!r}"
        command = main.commands[subcommand]
        known = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
        for arg in args:
            if arg.startswith("--"):
                assert arg in known, f"{name}: `msgstatus {subcommand}` has no option {arg}"
        # And the command line parses.
        command.make_context(subcommand, list(args), resilient_parsing=False)


def test_every_variable_in_compose_is_one_msgstatus_reads():
    for name, service in msgstatus_services().items():
        for variable in service["environment"]:
            assert variable in VARIABLES, f"{name}: msgstatus does not read {variable}"


def test_the_mongo_url_in_compose_names_the_replica_set_and_the_dashboard_is_published_on_loopback_only():
    services = msgstatus_services()
    assert "replicaSet=rs0" in services["watcher"]["environment"]["MONGO_DB_URL"]
    assert all(port.startswith("127.0.0.1:") for port in services["dashboard"]["ports"])


def test_prometheus_scrapes_the_api_service_with_the_shipped_alert_rules():
    services = compose()["services"]
    api = msgstatus_services()["api"]
    port = api["command"][api["command"].index("--port") + 1]
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == f"api:{port}"
    mounts = {volume.split(":")[1] for volume in services["prometheus"]["volumes"] if volume.startswith("./")}
    assert {"/etc/prometheus/prometheus.yml", "/etc/prometheus/alerts.yml"} <= mounts
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert all(port.startswith("127.0.0.1:") for port in services["prometheus"]["ports"] + api["ports"])
