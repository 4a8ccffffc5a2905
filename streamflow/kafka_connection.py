"""Where a Kafka client connects and how it proves who it is: one value every client takes.

``KafkaConnection`` carries the bootstrap servers and the librdkafka security properties
(protocol, SASL, TLS and the pass-through); the client factories in ``kafka_clients`` merge
it into every producer, consumer and admin client. It never prints a secret: ``repr`` and
``describe()`` show the protocol, mechanism and user only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# Properties with a setting of their own (one home each), and the ones StreamFlow's delivery
# guarantees rest on: the pass-through may not change them.
OWNED_PROPERTIES = frozenset({
    "bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
    "sasl.username", "sasl.password", "ssl.ca.location", "ssl.certificate.location",
    "ssl.key.location", "ssl.key.password",
    "group.id", "enable.auto.commit", "enable.auto.offset.store", "enable.idempotence", "acks",
    "isolation.level", "transactional.id",
})

# TLS verification of the broker stays on whatever else is passed through: the values each
# of these may take there (leaving it out means the same). librdkafka reads "False", "0",
# "NONE" and " none" as off, so what passes is listed, not what is refused.
VERIFICATION_PROPERTIES = {
    # off: any certificate is accepted
    "enable.ssl.certificate.verification": frozenset({"true", "t", "1"}),
    # none: a certificate of any other host is accepted
    "ssl.endpoint.identification.algorithm": frozenset({"https"}),
}
# OpenSSL's security level 0 in a cipher list lets suites without a certificate (aNULL) in:
# a broker, or whoever stands between, need then prove nothing.
_NO_SECURITY_LEVEL = re.compile(r"@SECLEVEL=0+(?![0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    # librdkafka properties, secrets included: kept out of repr and equality by hash.
    security: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    def config(self) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap, **self.security}

    @property
    def protocol(self) -> str:
        return self.security.get("security.protocol", "PLAINTEXT")

    def describe(self) -> str:
        """``host:port (SASL_SSL, SCRAM-SHA-256 as alice)``: safe for logs and status."""
        details = [self.protocol]
        if "sasl.mechanism" in self.security:
            details.append(f"{self.security['sasl.mechanism']} as "
                           f"{self.security.get('sasl.username', '?')}")
        return f"{self.bootstrap} ({', '.join(details)})"


def security_properties(
    *, protocol: str = "PLAINTEXT", sasl_mechanism: str | None = None,
    sasl_username: str | None = None, sasl_password: str | None = None,
    ssl_ca_location: Path | str | None = None, ssl_certificate_location: Path | str | None = None,
    ssl_key_location: Path | str | None = None, ssl_key_password: str | None = None,
    client_properties: str | None = None,
) -> dict[str, str]:
    """librdkafka properties for these settings; ``ValueError`` names what is inconsistent.

    Settings and the Dagster resource both build their connection here, so a setting means
    the same to every client.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"security protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    props: dict[str, str] = {}
    if protocol != "PLAINTEXT":
        props["security.protocol"] = protocol
    sasl = protocol.startswith("SASL_")
    if sasl:
        if sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"{protocol} needs KAFKA_SASL_MECHANISM, one of "
                             f"{', '.join(SASL_MECHANISMS)}")
        if not sasl_username or not sasl_password:
            raise ValueError(f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        props.update({"sasl.mechanism": sasl_mechanism, "sasl.username": sasl_username,
                      "sasl.password": sasl_password})
    elif sasl_mechanism or sasl_username or sasl_password:
        raise ValueError(f"SASL settings are set but the security protocol is {protocol} "
                         "(set KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT)")
    tls = {"ssl.ca.location": ssl_ca_location,
           "ssl.certificate.location": ssl_certificate_location,
           "ssl.key.location": ssl_key_location}
    for name, location in tls.items():
        if location is None:
            continue
        if not protocol.endswith("SSL"):
            raise ValueError(f"{name} is set but the security protocol is {protocol}")
        if not Path(location).is_file():
            raise ValueError(f"{name} {str(location)!r} is not a readable file")
        props[name] = str(location)
    if ssl_key_password:
        props["ssl.key.password"] = ssl_key_password
    if bool(ssl_certificate_location) != bool(ssl_key_location):
        raise ValueError("a client certificate needs both KAFKA_SSL_CERTIFICATE_LOCATION "
                         "and KAFKA_SSL_KEY_LOCATION")
    try:
        props.update(passthrough_properties(client_properties))
    except ValueError as exc:
        raise ValueError(f"KAFKA_CLIENT_PROPERTIES {exc}") from None
    return props


def passthrough_properties(text: str | None) -> dict[str, str]:
    """KAFKA_CLIENT_PROPERTIES: a JSON object of further librdkafka properties."""
    if not text:
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:  # the message holds no value, only the position
        raise ValueError(f"not a JSON object ({exc.msg} at column {exc.colno})") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object of librdkafka properties")
    owned = sorted(OWNED_PROPERTIES & parsed.keys())
    if owned:
        raise ValueError(f"sets {', '.join(owned)}, which StreamFlow owns (use its own "
                         "setting, or leave it: delivery guarantees depend on it)")
    for key, value in parsed.items():
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"property {key!r} must be a string, number or boolean")
    # librdkafka takes strings; JSON true must become "true", not Python's "True".
    props = {k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in parsed.items()}
    weakening = [f"{name}={props[name]}" for name, passes in VERIFICATION_PROPERTIES.items()
                 if name in props and props[name].strip().lower() not in passes]
    if _NO_SECURITY_LEVEL.search(props.get("ssl.cipher.suites", "")):
        weakening.append("ssl.cipher.suites with @SECLEVEL=0")
    if weakening:
        raise ValueError(f"sets {', '.join(weakening)}: TLS verification of the broker cannot "
                         "be turned off (leave it out; for a private CA, set "
                         "KAFKA_SSL_CA_LOCATION)")
    return props
