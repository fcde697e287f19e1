"""Kafka TLS and SASL settings: read once from the environment, checked, handed to aiokafka."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from wirebus.errors import ConfigurationError
from wirebus.kafka_security import PLAINTEXT, KafkaSecurity
from wirebus.settings import Settings


def test_plaintext_is_the_default_and_adds_no_client_option() -> None:
    assert Settings.from_env({}).kafka_security == PLAINTEXT
    assert PLAINTEXT.client_options() == {}


def test_sasl_over_tls_from_the_environment(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {
        "WIREBUS_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "WIREBUS_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "WIREBUS_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "WIREBUS_KAFKA_SASL_USERNAME": "shop",
        "WIREBUS_KAFKA_SASL_PASSWORD": "s3cret",
    }
    security = Settings.from_env(env).kafka_security
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("shop", "s3cret")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert "s3cret" not in repr(security)


def test_a_client_certificate_is_loaded_for_mutual_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("shop-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    security = KafkaSecurity(
        protocol="SSL",
        ca_file=str(tmp_path / "ca.pem"),
        cert_file=str(tmp_path / "client.pem"),
        key_file=str(tmp_path / "client.pem"),
    )
    assert isinstance(security.ssl_context(), ssl.SSLContext)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"protocol": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({"protocol": "SSL", "cert_file": "c.pem"}, "CERTFILE and WIREBUS_KAFKA_SSL_KEYFILE go"),
        ({"protocol": "PLAINTEXT", "ca_file": "ca.pem"}, "TLS files are set but"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "SASL_MECHANISM must be one of"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}, "needs WIREBUS_KAFKA_SASL_"),
        ({"protocol": "SSL", "username": "shop"}, "SASL settings are set but"),
    ],
)
def test_inconsistent_settings_are_one_clear_error(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KafkaSecurity(**settings)  # type: ignore[arg-type]


def test_a_ca_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    security = KafkaSecurity(protocol="SSL", ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="Kafka TLS files cannot be used"):
        security.client_options()
