"""A second embedded broker with a SASL_SSL listener, for the Kafka security tests.

Everything a managed cluster would hold is made here: a CA and a broker certificate signed by
it (openssl), SCRAM users created with Kafka's own ConfigCommand. The broker keeps a
PLAINTEXT listener for its own readiness probe and the user administration; the clients under
test use only the SASL_SSL one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamflow.infra import kafka_server
from streamflow.infra.processes import free_port
from streamflow.kafka_connection import KafkaConnection, security_properties
from streamflow.settings import LOCALHOST, Settings

SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: S603,S607


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key) as PEM files."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_broker_keystore(directory: Path, ca: tuple[Path, Path]) -> Path:
    """A PEM keystore (PKCS#8 key + certificate signed by ``ca``) valid for 127.0.0.1."""
    key, csr, cert = (directory / f"broker.{ext}" for ext in ("key", "csr", "crt"))
    extensions = directory / "broker.ext"
    extensions.write_text(f"subjectAltName=IP:{LOCALHOST},DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return keystore


def secure_listener_properties(settings: Settings, port: int, keystore: Path) -> dict[str, str]:
    plain = f"PLAINTEXT://{LOCALHOST}:{settings.kafka_port}"
    return {
        "listeners": f"{plain},CONTROLLER://{LOCALHOST}:{settings.kafka_controller_port},"
                     f"SECURE://{LOCALHOST}:{port}",
        "advertised.listeners": f"{plain},SECURE://{LOCALHOST}:{port}",
        "listener.security.protocol.map":
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SECURE:SASL_SSL",
        "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.secure.scram-sha-256.sasl.jaas.config": SCRAM_JAAS,
        "listener.name.secure.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
        "listener.name.secure.ssl.keystore.type": "PEM",
        "listener.name.secure.ssl.keystore.location": str(keystore),
    }


def add_scram_user(settings: Settings, user: str, password: str, mechanism: str) -> None:
    """Create (or reset) a SCRAM user with the broker's own ConfigCommand."""
    cmd = kafka_server.tool_command(
        settings, "kafka.admin.ConfigCommand", "--bootstrap-server", settings.bootstrap_servers,
        "--alter", "--entity-type", "users", "--entity-name", user,
        "--add-config", f"{mechanism}=[iterations=4096,password={password}]")
    result = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class SecureBroker:
    settings: Settings  # the broker's own (its PLAINTEXT side)
    bootstrap: str  # the SASL_SSL listener
    ca: Path
    user: str
    password: str
    mechanism: str = "SCRAM-SHA-256"

    def connection(self, **changes: object) -> KafkaConnection:
        options = {"protocol": "SASL_SSL", "sasl_mechanism": self.mechanism,
                   "sasl_username": self.user, "sasl_password": self.password,
                   "ssl_ca_location": self.ca, **changes}
        return KafkaConnection(self.bootstrap, security_properties(**options))

    def env(self, **changes: str) -> dict[str, str]:
        """The settings a StreamFlow process needs to reach this broker, as variables."""
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": self.mechanism, "KAFKA_SASL_USERNAME": self.user,
                "KAFKA_SASL_PASSWORD": self.password, "KAFKA_SSL_CA_LOCATION": str(self.ca),
                **changes}


def start_secure_broker(settings: Settings, directory: Path, *, echo=print) -> SecureBroker:
    ca = make_ca(directory, "streamflow-test-ca")
    keystore = make_broker_keystore(directory, ca)
    port = free_port()
    kafka_server.start(settings, echo=echo,
                       extra=secure_listener_properties(settings, port, keystore))
    user, password = "streamflow-app", "app-secret-0123"
    add_scram_user(settings, user, password, "SCRAM-SHA-256")
    return SecureBroker(settings, f"{LOCALHOST}:{port}", ca[0], user, password)
