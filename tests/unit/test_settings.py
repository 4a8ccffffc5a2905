import pytest
from pydantic import ValidationError

from streamflow.errors import SettingsError
from streamflow.settings import env_var_names, load_settings


def test_defaults_point_at_the_embedded_stack(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in env_var_names():
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.embedded_kafka and settings.embedded_postgres
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.home_dir == tmp_path / ".streamflow"
    assert settings.dagster_home_dir == tmp_path / ".streamflow" / "dagster"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/streamflow")
    monkeypatch.setenv("STREAMFLOW_HOME", str(tmp_path / "h"))
    settings = load_settings()
    assert not settings.embedded_kafka and not settings.embedded_postgres
    assert settings.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert settings.home_dir == tmp_path / "h"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMFLOW_KAFKA_PORT", "not-a-port"),
        ("STREAMFLOW_KAFKA_PORT", "70000"),
        ("STREAMFLOW_USER_EVENTS_PARTITIONS", "0"),
        ("DATABASE_URL", "mysql://x@y/z"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port-here"),
        ("STREAMFLOW_LOG_LEVEL", "CHATTY"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert "\n" not in message


def test_replays_go_to_user_events_unless_the_deployment_allows_more(monkeypatch):
    monkeypatch.delenv("STREAMFLOW_REPLAY_TOPICS", raising=False)
    assert load_settings().replay_topic_names == ("user-events",)
    monkeypatch.setenv("STREAMFLOW_REPLAY_TOPICS", "user-events, staging-events")
    assert load_settings().replay_topic_names == ("user-events", "staging-events")


@pytest.mark.parametrize("value", ["notifications", "user-events,analytics",
                                   "dead-letter-topic", " , "])
def test_a_replay_may_never_be_allowed_into_the_outputs(monkeypatch, value):
    monkeypatch.setenv("STREAMFLOW_REPLAY_TOPICS", value)
    with pytest.raises(SettingsError, match="^STREAMFLOW_REPLAY_TOPICS="):
        load_settings()


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.kafka_port = 1


def test_env_example_documents_every_setting():
    from tests.conftest import ROOT

    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("##")
    }
    assert env_var_names() <= documented, env_var_names() - documented


def test_settings_round_trip_through_the_environment(tmp_path):
    from streamflow.settings import to_env

    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_DAGSTER_PORT=4321,
                             STREAMFLOW_PII_KEY="s" * 20)
    env = to_env(settings)
    assert env["STREAMFLOW_DAGSTER_PORT"] == "4321" and env["STREAMFLOW_PII_KEY"] == "s" * 20
    assert load_settings(**env) == settings


def test_a_rejected_secret_is_never_printed():
    import pytest

    from streamflow.errors import SettingsError
    from streamflow.settings import load_settings

    with pytest.raises(SettingsError) as caught:
        load_settings(DATABASE_URL="mysql://admin:hunter2-secret@db/app")
    assert "hunter2-secret" not in str(caught.value)
    assert "DATABASE_URL=<redacted>" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_empty_variable_is_an_unset_one(monkeypatch):
    """docker-compose passes `${KAFKA_SASL_MECHANISM:-}` as "" when .env leaves it out."""
    for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SSL_CA_LOCATION",
                 "DATABASE_URL", "STREAMFLOW_LIVE_TOKEN"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.kafka_sasl_mechanism is None and settings.kafka_ssl_ca_location is None
    assert settings.embedded_postgres and settings.live_token is None
    assert settings.kafka.protocol == "PLAINTEXT"


def test_a_child_process_sees_exactly_the_settings(monkeypatch, tmp_path):
    from streamflow.stack import child_env

    monkeypatch.setenv("STREAMFLOW_LIVE_TOKEN", "from-the-parent-only")  # not in the settings
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    settings = load_settings(STREAMFLOW_HOME=str(tmp_path), STREAMFLOW_LIVE_TOKEN=None,
                             KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", DATABASE_URL=None)
    env = child_env(settings, "postgresql://db/x", STREAMFLOW_PII_KEY="k" * 32)
    assert "STREAMFLOW_LIVE_TOKEN" not in env and env["UNRELATED_VARIABLE"] == "kept"
    assert env["DATABASE_URL"] == "postgresql://db/x" and env["STREAMFLOW_PII_KEY"] == "k" * 32
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    assert env["STREAMFLOW_HOME"] == str(settings.home_dir)
