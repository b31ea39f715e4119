"""Settings from the environment: sane defaults, clear errors naming the variable."""

from __future__ import annotations

import subprocess

import pytest

from core import defaults
from core.settings import ConfigError, Settings, redact
from embedded.processes import msgstatus_argv

LONG_SECRET = "s" * 32


def test_nothing_configured_means_the_embedded_default():
    settings = Settings.from_env({})
    assert settings.embedded_mongo and settings.embedded_redis
    assert settings.mongo_url == defaults.EMBEDDED_MONGO_URL
    assert settings.redis_url == defaults.EMBEDDED_REDIS_URL
    assert settings.sweep_interval == 5 and settings.claim_ttl == 60
    assert settings.enabled and not settings.hooks and not settings.sweep_only
    assert settings.database == "msgstatus"


def test_a_real_mongodb_requires_an_app_secret_and_takes_a_short_one_as_the_node_service_does():
    env = {"MONGO_DB_URL": "mongodb://db:27017/app"}
    with pytest.raises(ConfigError, match="APP_SECRET is missing"):
        Settings.from_env(env)
    with pytest.raises(ConfigError, match="APP_SECRET is missing"):
        Settings.from_env({**env, "APP_SECRET": ""})
    short = Settings.from_env({**env, "APP_SECRET": "s" * 16})
    assert short.app_secret == "s" * 16 and short.short_secret  # warned about once, at start (cli)
    settings = Settings.from_env({**env, "APP_SECRET": LONG_SECRET})
    assert settings.database == "app" and not settings.short_secret
    assert not Settings.from_env({}).short_secret  # the embedded default's own secret


def test_the_secret_never_shows_in_the_settings_repr():
    settings = Settings.from_env({"APP_SECRET": LONG_SECRET + "-unique-marker"})
    assert "unique-marker" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SWEEP_INTERVAL": "often"}, "SWEEP_INTERVAL"),
        ({"SWEEP_INTERVAL": "0"}, "SWEEP_INTERVAL"),
        ({"CLAIM_TTL": "-1"}, "CLAIM_TTL"),
        ({"CLAIM_TTL": "soon"}, "CLAIM_TTL"),
        ({"QM_HOOKS": "maybe"}, "QM_HOOKS"),
        ({"MONGO_DB_URL": "db:27017"}, "MONGO_DB_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"REDIS_PORT": "sixty"}, "REDIS_PORT"),
        ({"CONVERSATION_SOCKET": "socket:6001"}, "CONVERSATION_SOCKET"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_redis_host_and_port_make_a_url_and_the_switches_read_the_seeds_words():
    settings = Settings.from_env(
        {"REDIS_HOST": "cache", "REDIS_PORT": "6380", "QM_SUPPORT_MESSAGE_STATUS": "false", "QM_HOOKS": "on"}
    )
    assert settings.redis_url == "redis://cache:6380/0" and not settings.embedded_redis
    assert not settings.enabled and settings.hooks


def test_tls_and_credentials_in_urls_are_passed_through_unchanged():
    mongo = "mongodb+srv://user:p%40ss@cluster.example.net/app?tls=true&authSource=admin"
    redis = "rediss://:secret@cache.example.net:6380/2"
    settings = Settings.from_env({"MONGO_DB_URL": mongo, "REDIS_URL": redis, "APP_SECRET": LONG_SECRET})
    assert settings.mongo_url == mongo and settings.redis_url == redis
    assert settings.database == "app"


def test_a_cli_refuses_bad_configuration_with_exit_code_2_and_the_variable_named():
    result = subprocess.run(
        msgstatus_argv("sweep", "--once"), env={"SWEEP_INTERVAL": "soon", "PATH": ""},
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "SWEEP_INTERVAL" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("emit to https://bot:pa:ss@socket.example.net/x", "emit to https://bot:***@socket.example.net/x"),
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("POST https://token123@socket.example.net/emit", "POST https://***@socket.example.net/emit"),
        ("http://127.0.0.1:6001/emit answered 503", "http://127.0.0.1:6001/emit answered 503"),
    ],
)
def test_redact_hides_every_credential_of_a_url_and_leaves_the_rest(text, shown):
    assert redact(text) == shown
