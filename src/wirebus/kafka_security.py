"""``KafkaSecurity``: TLS and SASL for every Kafka client wirebus makes.

One object, read once from the environment (:meth:`KafkaSecurity.from_env`)
or built in code, handed to the publisher, the consumers and the admin client
that creates topics, so all of them connect the same way:

- ``WIREBUS_KAFKA_SECURITY_PROTOCOL``: ``PLAINTEXT`` (default), ``SSL``,
  ``SASL_PLAINTEXT`` or ``SASL_SSL``;
- ``WIREBUS_KAFKA_SSL_CAFILE``: the CA that signed the brokers' certificates
  (the system's trust store when unset); ``WIREBUS_KAFKA_SSL_CERTFILE`` and
  ``WIREBUS_KAFKA_SSL_KEYFILE``: this client's certificate, for brokers that
  require one (mutual TLS);
- ``WIREBUS_KAFKA_SASL_MECHANISM`` (``PLAIN``, ``SCRAM-SHA-256``,
  ``SCRAM-SHA-512``), ``WIREBUS_KAFKA_SASL_USERNAME``,
  ``WIREBUS_KAFKA_SASL_PASSWORD``.

Example::

    security = KafkaSecurity(protocol="SASL_SSL", ca_file="ca.pem",
                             sasl_mechanism="SCRAM-SHA-512", username="shop", password="...")
    KafkaEventPublisher("broker:9093", registry, source="shop", security=security)
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigurationError

__all__ = ["PLAINTEXT", "KafkaSecurity"]

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class KafkaSecurity:
    """How Kafka clients authenticate and encrypt (see the module docstring)."""

    protocol: Protocol = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOCOLS:
            raise ConfigurationError(
                f"WIREBUS_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(_PROTOCOLS)},"
                f" not {self.protocol!r}"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigurationError(
                "WIREBUS_KAFKA_SSL_CERTFILE and WIREBUS_KAFKA_SSL_KEYFILE go together"
            )
        uses_tls = self.protocol in ("SSL", "SASL_SSL")
        if not uses_tls and (self.ca_file or self.cert_file):
            raise ConfigurationError(
                f"TLS files are set but WIREBUS_KAFKA_SECURITY_PROTOCOL is {self.protocol}"
                " (SSL or SASL_SSL uses them)"
            )
        if self.protocol.startswith("SASL"):
            if self.sasl_mechanism not in _MECHANISMS:
                raise ConfigurationError(
                    f"WIREBUS_KAFKA_SASL_MECHANISM must be one of {', '.join(_MECHANISMS)}"
                    f" with {self.protocol}, not {self.sasl_mechanism!r}"
                )
            if not self.username or self.password is None:
                raise ConfigurationError(
                    f"{self.protocol} needs WIREBUS_KAFKA_SASL_USERNAME and _PASSWORD"
                )
        elif self.sasl_mechanism or self.username:
            raise ConfigurationError(
                f"SASL settings are set but WIREBUS_KAFKA_SECURITY_PROTOCOL is {self.protocol}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """The ``WIREBUS_KAFKA_SECURITY_*``, ``_SSL_*`` and ``_SASL_*`` variables."""
        protocol = (env.get("WIREBUS_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        return cls(
            protocol=protocol,  # type: ignore[arg-type]  # checked in __post_init__
            ca_file=env.get("WIREBUS_KAFKA_SSL_CAFILE") or None,
            cert_file=env.get("WIREBUS_KAFKA_SSL_CERTFILE") or None,
            key_file=env.get("WIREBUS_KAFKA_SSL_KEYFILE") or None,
            sasl_mechanism=(env.get("WIREBUS_KAFKA_SASL_MECHANISM") or "").upper() or None,
            username=env.get("WIREBUS_KAFKA_SASL_USERNAME") or None,
            password=env.get("WIREBUS_KAFKA_SASL_PASSWORD"),
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        if self.protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self.ssl_context()
        if self.protocol.startswith("SASL"):
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context: verifies the brokers (hostname too), offers a certificate."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"Kafka TLS files cannot be used: {exc}") from None
        return context


PLAINTEXT = KafkaSecurity()
"""No TLS, no SASL (the default)."""
