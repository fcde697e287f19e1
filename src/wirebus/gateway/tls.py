"""TLS and mutual TLS for the gateway, and the client certificate as an identity.

``TLSConfig(cert_file, key_file)`` serves TLS; with ``client_ca_file`` every
client must present a certificate signed by that CA (mutual TLS), and the
handshake refuses one that does not. The verified certificate's subject
reaches the app as :class:`PeerCertificate` (``CallInfo.certificate``), and
:class:`ClientCertificates` turns it into an :class:`~wirebus.Identity` for
the authentication stage.

Example::

    GatewayConfig(port=50051, tls=TLSConfig("server.pem", "server.key", client_ca_file="ca.pem"))

    auth = Authentication(ClientCertificates())   # who: the certificate's common name
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from ..auth import Identity
from ..context import CallInfo
from ..errors import ConfigurationError

__all__ = ["ClientCertificates", "TLSConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class TLSConfig:
    """PEM files: the server's certificate chain and key, and the CA of client certificates."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    """When set, clients must present a certificate this CA signed (mutual TLS)."""

    def credentials(self) -> grpc.ServerCredentials:
        """grpc server credentials; ``ConfigurationError`` naming a file that cannot be read."""
        chain, key = _read(self.cert_file, "--tls-cert"), _read(self.key_file, "--tls-key")
        ca = _read(self.client_ca_file, "--client-ca") if self.client_ca_file else None
        try:
            return grpc.ssl_server_credentials(
                [(key, chain)], root_certificates=ca, require_client_auth=ca is not None
            )
        except (ValueError, RuntimeError) as exc:  # pragma: no cover - grpc checks lazily
            raise ConfigurationError(f"TLS credentials are not usable: {exc}") from None


def _read(path: str, flag: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{flag} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigurationError(f"{flag} {path}: not a PEM file")
    return data


class ClientCertificates:
    """An authenticator: the caller is its verified client certificate (mutual TLS).

    The subject is the certificate's common name, or else its first subject
    alternative name; ``scopes_of`` may map an identity's subject to scopes.
    """

    def __init__(self, *, scopes_of: Mapping[str, Sequence[str]] | None = None) -> None:
        self.scopes_of = {k: frozenset(v) for k, v in (scopes_of or {}).items()}

    async def authenticate(self, call: CallInfo) -> Identity | None:
        certificate = call.certificate
        if certificate is None:
            return None
        subject = certificate.common_name or next(iter(certificate.subject_alt_names), "")
        claims: dict[str, Any] = {
            "subject": certificate.subject,
            "sans": list(certificate.subject_alt_names),
        }
        return Identity(
            subject, "mtls", scopes=self.scopes_of.get(subject, frozenset()), claims=claims
        )
