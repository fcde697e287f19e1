"""The shop gateway over mutual TLS, for the Go and Java clients.

``PKI(directory)`` makes a CA, the server's certificate (127.0.0.1, localhost)
and a client certificate with trustme, written as PEM files (keys in PKCS#8,
which Go and Java's Netty both read). ``serve_with_tls(pki, workdir)`` runs
``wirebus serve examples.shop.app:app --tls-cert --tls-key --client-ca`` with
the embedded defaults (SQLite in ``workdir``, in-memory broker), waits until
its health check answers SERVING over TLS and, on exit, stops it with SIGTERM
and asserts exit code 0. ``pki.env(server)`` is what a client reads::

    with serve_with_tls(pki, tmp_path) as server:
        run_tool(["go", "test", "-run", "^TestGatewayTLS$"], env=tool_env(**pki.env(server)))
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import trustme
from cryptography.hazmat.primitives import serialization

from tests.checkout import PYTHONPATH
from tests.crosslang.conftest import ROOT, SHOP_APP, ShopServer, free_port, wait_serving


def pkcs8(key_pem: bytes) -> bytes:
    """A PEM private key as unencrypted PKCS#8 ("BEGIN PRIVATE KEY")."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclasses.dataclass(frozen=True)
class PKI:
    """PEM files: ``ca`` (trusted by both sides), the server's and a client's cert and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path) -> PKI:
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("crosslang-client@wirebus.test")
        pki = cls(
            ca=directory / "ca.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server.key",
            client_cert=directory / "client.pem",
            client_key=directory / "client.key",
        )
        pki.ca.write_bytes(ca.cert_pem.bytes())
        for leaf, cert, key in ((server, pki.server_cert, pki.server_key),
                                (client, pki.client_cert, pki.client_key)):  # fmt: skip
            cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            key.write_bytes(pkcs8(leaf.private_key_pem.bytes()))
        return pki

    def env(self, server: ShopServer) -> dict[str, str]:
        """The variables the Go and Java TLS tests read."""
        return {
            "WIREBUS_TLS_GATEWAY": server.address,
            "WIREBUS_TLS_CA": str(self.ca),
            "WIREBUS_TLS_CLIENT_CERT": str(self.client_cert),
            "WIREBUS_TLS_CLIENT_KEY": str(self.client_key),
        }

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.client_key.read_bytes(),
            certificate_chain=self.client_cert.read_bytes(),
        )


def serve_env(workdir: Path) -> dict[str, str]:
    """This tree's code; the embedded defaults (no Kafka, SQLite in ``workdir``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIREBUS_KAFKA_")}
    env["PYTHONPATH"] = os.pathsep.join([PYTHONPATH, env.get("PYTHONPATH", "")])
    env["WIREBUS_DATABASE_URL"] = f"sqlite+aiosqlite:///{workdir}/shop.db"
    return env


@contextlib.contextmanager
def serve_with_tls(pki: PKI, workdir: Path) -> Iterator[ShopServer]:
    """``wirebus serve`` of the shop with mutual TLS on a free port (see the module docstring)."""
    server = ShopServer(port=free_port(), log=workdir / "serve-tls.log", reader_group="")
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    command = [sys.executable, "-m", "wirebus", "serve", SHOP_APP, "--port", str(server.port)]
    with server.log.open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [*command, *tls, "--client-ca", str(pki.ca)],
            cwd=ROOT,
            env=serve_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        wait_serving(server, proc, pki.credentials())
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
    assert code == 0, f"wirebus serve exited {code} on SIGTERM:{server.log_tail()}"
