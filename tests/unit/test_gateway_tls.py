"""TLS and mutual TLS on the gateway, over real sockets, with a CA made at test time (trustme)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import trustme
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import GetOrder, OrderStatus, OrderView
from wirebus import (
    App,
    Authentication,
    CallInfo,
    ConfigurationError,
    Gateway,
    GatewayConfig,
    Identity,
    Router,
)
from wirebus.gateway.tls import ClientCertificates, TLSConfig

ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def app_with(authentication: Authentication | None = None) -> App:
    router = Router("tls-test")

    @router.handler
    async def get_order(query: GetOrder, call: CallInfo, who: Identity) -> OrderView:
        certificate = call.certificate
        names = ",".join(certificate.subject_alt_names) if certificate else "-"
        return OrderView(
            order_id=query.order_id,
            customer_id=f"{who.scheme}:{who.subject}|{names}",
            items=(),
            total_cents=0,
            status=OrderStatus.PENDING,
            placed_at=NOW,
        )

    return App(
        name="tls-test",
        services=[orders_pb2],
        routers=[router],
        allow_unbound=True,
        authentication=authentication,
    )


class PKI:
    """A CA, the server's certificate for 127.0.0.1, and files for ``TLSConfig``."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.client_ca = directory / "ca.pem"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        self.key.write_bytes(server.private_key_pem.bytes())
        self.client_ca.write_bytes(self.ca.cert_pem.bytes())

    def config(self, *, mutual: bool) -> TLSConfig:
        ca = str(self.client_ca) if mutual else None
        return TLSConfig(str(self.cert), str(self.key), client_ca_file=ca)

    def client(self, cert: trustme.LeafCert | None = None) -> grpc.ChannelCredentials:
        if cert is None:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.cert_pem.bytes())
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem.bytes(),
            private_key=cert.private_key_pem.bytes(),
            certificate_chain=b"".join(blob.bytes() for blob in cert.cert_chain_pems),
        )


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


async def get(address: str, credentials: grpc.ChannelCredentials | None) -> orders_pb2.Order:
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    async with channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        return await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"), timeout=10)


async def serving(app: App, tls: TLSConfig) -> AsyncIterator[str]:
    async with Gateway(app, GatewayConfig(port=0, grace_seconds=0.5, tls=tls)) as gateway:
        yield gateway.address


async def test_tls_serves_a_client_that_trusts_the_ca(pki: PKI) -> None:
    async for address in serving(app_with(), pki.config(mutual=False)):
        order = await get(address, pki.client())
        assert order.customer_id == "local:local|-"  # no client certificate, no auth stage


async def test_a_plaintext_client_cannot_call_a_tls_gateway(pki: PKI) -> None:
    async for address in serving(app_with(), pki.config(mutual=False)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get(address, None)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_trusts_another_ca_refuses_the_server(pki: PKI) -> None:
    other = trustme.CA()
    credentials = grpc.ssl_channel_credentials(root_certificates=other.cert_pem.bytes())
    async for address in serving(app_with(), pki.config(mutual=False)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get(address, credentials)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_gives_handlers_the_client_certificates_identity(pki: PKI) -> None:
    client = pki.ca.issue_cert("client-a.example.com", common_name="client-a")
    auth = Authentication(ClientCertificates())
    async for address in serving(app_with(auth), pki.config(mutual=True)):
        order = await get(address, pki.client(client))
        assert order.customer_id == "mtls:client-a|client-a.example.com"


@pytest.mark.parametrize("who", ["no certificate", "a certificate of another CA"])
async def test_mutual_tls_refuses_a_client_without_a_valid_certificate(pki: PKI, who: str) -> None:
    credentials: Any = pki.client()
    if who == "a certificate of another CA":
        stranger = trustme.CA().issue_cert("mallory.example.com", common_name="mallory")
        credentials = pki.client(stranger)
    async for address in serving(app_with(), pki.config(mutual=True)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get(address, credentials)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_unreadable_or_non_pem_file_is_a_configuration_error(pki: PKI, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"--tls-cert .*missing\.pem"):
        TLSConfig(str(tmp_path / "missing.pem"), str(pki.key)).credentials()
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="not a PEM file"):
        TLSConfig(str(tmp_path / "junk.pem"), str(pki.key)).credentials()


def wirebus_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wirebus", "serve", "examples.shop.app:app", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_says_which_tls_flag_is_missing(pki: PKI) -> None:
    alone = wirebus_serve("--client-ca", str(pki.client_ca))
    assert alone.returncode == 2
    assert "--client-ca needs --tls-cert and --tls-key" in alone.stderr
    half = wirebus_serve("--tls-cert", str(pki.cert))
    assert half.returncode == 2
    assert "--tls-cert and --tls-key go together" in half.stderr
