"""A database that refuses or does not answer is one line naming the server, never the password."""

from __future__ import annotations

import json

import psycopg
import pytest

from streamflow.db.engine import connection_error, redacted, require_credentials
from streamflow.errors import DatabaseRefused, DatabaseUnavailable, SettingsError
from streamflow.settings import load_settings

URL = "postgresql://app:s3cret-pw@db.internal:5432/streamflow"
# What libpq says (psycopg 3.3 puts it after "connection failed: ").
REFUSED = ('connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
           'password authentication failed for user "app"')
NO_ROLE = ('connection failed: connection to server on socket "/tmp/.s.PGSQL.5432" failed: '
           'FATAL:  role "app" does not exist')
DOWN = ('connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection '
        'refused\n\tIs the server running on that host and accepting TCP/IP connections?')
STARTING = ('connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
            'the database system is starting up')


@pytest.mark.parametrize("text", [REFUSED, NO_ROLE])
def test_a_refusal_names_the_server_and_hides_the_password(text):
    error = connection_error(psycopg.OperationalError(text), URL)
    assert isinstance(error, DatabaseRefused)
    message = str(error)
    assert message.startswith("PostgreSQL at postgresql://app:***@db.internal:5432/streamflow "
                              "refused the connection: ")
    assert "s3cret-pw" not in message and "\n" not in message


@pytest.mark.parametrize("text", [DOWN, STARTING])
def test_a_server_that_is_down_or_starting_is_unavailable_not_refused(text):
    error = connection_error(psycopg.OperationalError(text), URL)
    assert type(error) is DatabaseUnavailable
    assert "did not accept a connection: " in str(error) and "\n" not in str(error)


@pytest.mark.parametrize("url", [URL, "postgresql://app:s3cret-pw@db:port/streamflow"])
def test_a_password_echoed_by_the_driver_is_scrubbed(url):
    error = connection_error(psycopg.OperationalError("bad option near s3cret-pw"), url)
    assert "s3cret-pw" not in str(error)


@pytest.mark.parametrize(("url", "shown"), [
    (URL, "postgresql://app:***@db.internal:5432/streamflow"),
    ("postgresql://app@db/streamflow", "postgresql://app@db/streamflow"),
    ("127.0.0.1:9092", "127.0.0.1:9092"),  # a Kafka address: nothing to hide
    # A URL SQLAlchemy cannot parse still loses its password.
    ("postgresql://app:s3cret-pw@db:port/streamflow", "postgresql://app:***@db:port/streamflow"),
])
def test_redacted(url, shown):
    assert redacted(url) == shown


def test_require_credentials_waits_out_a_server_that_is_down(monkeypatch):
    def down(*_args, **_kwargs):
        raise psycopg.OperationalError(DOWN)

    monkeypatch.setattr(psycopg, "connect", down)
    require_credentials(URL)  # no error: the sink waits for the server, as during a run

    def refuse(*_args, **_kwargs):
        raise psycopg.OperationalError(REFUSED)

    monkeypatch.setattr(psycopg, "connect", refuse)
    with pytest.raises(DatabaseRefused):
        require_credentials(URL)


def test_an_unparseable_database_url_is_a_setting_error_without_the_password(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret-pw@db:port/streamflow")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("DATABASE_URL=<redacted>: ")
    assert "s3cret-pw" not in str(info.value)


def test_status_json_shows_an_external_database_url_without_its_password(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from streamflow import stack
    from streamflow.cli import app
    from streamflow.settings import env_var_names

    for name in env_var_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STREAMFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    from streamflow.cluster import Replication
    from streamflow.cluster_health import judge

    monkeypatch.setattr(stack, "kafka_cluster", lambda _settings: stack.KafkaCluster(
        judge(Replication((1,), ())), {}, None))
    monkeypatch.setattr(stack, "server_version", lambda _url: "17.2")  # a healthy server

    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    document = json.loads(result.output)
    shown = "postgresql://app:***@db.internal:5432/streamflow"
    assert document["database_url"] == shown
    postgres = next(c for c in document["components"] if c["component"] == "postgres")
    assert postgres["address"] == shown and postgres["detail"] == "PostgreSQL 17.2"
