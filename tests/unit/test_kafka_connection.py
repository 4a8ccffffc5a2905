"""Kafka security settings -> librdkafka properties: one function for every client."""

import pytest

from streamflow.errors import SettingsError
from streamflow.kafka_connection import KafkaConnection, security_properties
from streamflow.settings import load_settings

SASL = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "app", "KAFKA_SASL_PASSWORD": "s3cret-value"}


def test_plaintext_adds_nothing():
    assert security_properties() == {}
    assert load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9092").kafka.config() == {
        "bootstrap.servers": "b:9092"}


def test_sasl_ssl_settings_become_librdkafka_properties(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    extra = '{"client.dns.lookup": "use_all_dns_ips", "socket.nagle.disable": true}'
    settings = load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", KAFKA_SSL_CA_LOCATION=str(ca),
                             KAFKA_CLIENT_PROPERTIES=extra, **SASL)
    assert settings.kafka.config() == {
        "bootstrap.servers": "b:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app",
        "sasl.password": "s3cret-value", "ssl.ca.location": str(ca),
        "client.dns.lookup": "use_all_dns_ips", "socket.nagle.disable": "true"}


def test_the_connection_never_prints_its_secrets():
    kafka = load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", **SASL).kafka
    for shown in (repr(kafka), str(kafka), kafka.describe()):
        assert "s3cret-value" not in shown
    assert kafka.describe() == "b:9093 (SASL_SSL, SCRAM-SHA-512 as app)"
    assert KafkaConnection("x:1").describe() == "x:1 (PLAINTEXT)"


@pytest.mark.parametrize(("overrides", "says"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
    ({**SASL, "KAFKA_SASL_PASSWORD": None}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SASL_USERNAME": "app"}, "the security protocol is PLAINTEXT"),
    ({"KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "the security protocol is PLAINTEXT"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
     "is not a readable file"),
    ({"KAFKA_CLIENT_PROPERTIES": "{not json"}, "KAFKA_CLIENT_PROPERTIES not a JSON object"),
    ({"KAFKA_CLIENT_PROPERTIES": '["a"]'}, "must be a JSON object"),
    ({"KAFKA_CLIENT_PROPERTIES": '{"enable.idempotence": false}'}, "enable.idempotence"),
    ({"KAFKA_CLIENT_PROPERTIES": '{"sasl.password": "x"}'}, "which StreamFlow owns"),
    ({"KAFKA_CLIENT_PROPERTIES": '{"a": {"b": 1}}'}, "must be a string, number or boolean"),
])
def test_inconsistent_security_is_one_line_without_secrets(overrides, says):
    with pytest.raises(SettingsError) as info:
        load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", **overrides)
    message = str(info.value)
    assert says in message and "\n" not in message
    assert "s3cret-value" not in message


def test_a_bad_mechanism_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match=r"^KAFKA_SASL_MECHANISM='GSSAPI'"):
        load_settings(**{**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"})


def test_the_dagster_resource_reads_secrets_from_the_environment_at_run_time(monkeypatch):
    """The resource's config names variables (EnvVar), so the Dagster UI never shows the
    password; the connection it builds equals the settings' own."""
    import dagster as dg

    from resources import KafkaResource

    for name, value in {**SASL, "KAFKA_BOOTSTRAP_SERVERS": "b:9093"}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    resource = KafkaResource.from_settings(settings)
    assert resource.sasl_password == dg.EnvVar("KAFKA_SASL_PASSWORD")
    assert resource.bootstrap_servers == dg.EnvVar("KAFKA_BOOTSTRAP_SERVERS")
    assert resource.ssl_ca_location is None  # unset: not wired, not required

    @dg.asset
    def probe(kafka: KafkaResource) -> None:
        assert kafka.connection.config() == settings.kafka.config()

    assert dg.materialize([probe], resources={"kafka": resource}).success


# -- TLS verification cannot be turned off through the pass-through (issue 21) ----------------

@pytest.mark.parametrize("extra", [
    '{"enable.ssl.certificate.verification": false}',
    '{"enable.ssl.certificate.verification": "false"}',
    '{"enable.ssl.certificate.verification": "False"}',
    '{"enable.ssl.certificate.verification": 0}',
    '{"ssl.endpoint.identification.algorithm": "none"}',
    '{"ssl.endpoint.identification.algorithm": " NONE"}',
    '{"ssl.cipher.suites": "ALL:@SECLEVEL=0"}',
    '{"ssl.cipher.suites": "aNULL:@seclevel=00"}',
])
def test_the_pass_through_cannot_turn_tls_verification_off(extra):
    with pytest.raises(SettingsError) as info:
        load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", KAFKA_CLIENT_PROPERTIES=extra, **SASL)
    message = str(info.value)
    assert "TLS verification of the broker cannot be turned off" in message
    assert "KAFKA_CLIENT_PROPERTIES" in message and "\n" not in message
    assert "s3cret-value" not in message


def test_what_the_pass_through_refuses_librdkafka_would_take():
    """The refusal above is the only guard: librdkafka builds a client with each value."""
    from confluent_kafka import Producer

    for name, value in [("enable.ssl.certificate.verification", "False"),
                        ("enable.ssl.certificate.verification", "0"),
                        ("ssl.endpoint.identification.algorithm", " NONE"),
                        ("ssl.cipher.suites", "ALL:@SECLEVEL=0")]:
        Producer({"bootstrap.servers": "127.0.0.1:9", "log_level": 0, name: value})


def test_verification_left_on_passes_through():
    extra = ('{"enable.ssl.certificate.verification": true, '
             '"ssl.endpoint.identification.algorithm": "https", '
             '"ssl.cipher.suites": "ECDHE+AESGCM:@SECLEVEL=2"}')
    config = load_settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", KAFKA_CLIENT_PROPERTIES=extra,
                           **SASL).kafka.config()
    assert (config["enable.ssl.certificate.verification"],
            config["ssl.endpoint.identification.algorithm"], config["ssl.cipher.suites"]) == (
        "true", "https", "ECDHE+AESGCM:@SECLEVEL=2")


def test_the_dagster_resource_refuses_it_too():
    from resources import KafkaResource

    resource = KafkaResource(bootstrap_servers="b:9093", client_properties=(
        '{"ssl.endpoint.identification.algorithm": "none"}'))
    with pytest.raises(ValueError, match="cannot be turned off"):
        resource.connection  # noqa: B018 - builds the properties
