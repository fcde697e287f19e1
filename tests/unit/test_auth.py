"""Authentication: bearer tokens and JWTs through a real gateway, per-method rules, and
the identity injected into handlers (unary calls and server streams)."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import grpc.aio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import (
    CancelOrder,
    GetOrder,
    ListOrders,
    OrderStatus,
    OrderView,
)
from tests.conftest import error_info
from wirebus import (
    App,
    Authentication,
    Identity,
    JWTAuthenticator,
    Router,
    StaticTokens,
    current_identity,
    require_scopes,
)
from wirebus.auth import JWKS
from wirebus.errors import Unauthenticated, Unavailable
from wirebus.testing import AppHarness

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
SECRET = "a-shared-secret-of-at-least-32-bytes!!"


def shop_router() -> Router:
    """Handlers that answer with who called them."""
    router = Router("auth-test")

    @router.handler
    async def get_order(query: GetOrder, who: Identity) -> OrderView:
        return OrderView(
            order_id=query.order_id,
            customer_id=f"{who.scheme}:{who.subject}",
            items=(),
            total_cents=len(who.scopes),
            status=OrderStatus.PENDING,
            placed_at=NOW,
        )

    @router.handler
    async def list_orders(query: ListOrders) -> AsyncIterator[OrderView]:
        for n in range(2):
            who = current_identity()  # the same identity for every item of the stream
            yield OrderView(
                order_id=f"{query.customer_id}-{n}",
                customer_id=who.subject,
                items=(),
                total_cents=n,
                status=OrderStatus.PENDING,
                placed_at=NOW,
            )

    @router.handler
    async def cancel_order(cmd: CancelOrder) -> None:
        return None

    return router


def app_with(auth: Authentication) -> App:
    return App(
        name="auth-test",
        services=[orders_pb2],
        routers=[shop_router()],
        allow_unbound=True,  # PlaceOrder: not needed here
        authentication=auth,
    )


@pytest.fixture
async def tokens() -> AsyncIterator[tuple[orders_pb2_grpc.OrderServiceStub, AppHarness]]:
    auth = Authentication(
        StaticTokens(
            {
                "reader-token": Identity("reader", "bearer", scopes=frozenset({"orders:read"})),
                "admin-token": Identity(
                    "admin", "bearer", scopes=frozenset({"orders:read", "orders:cancel"})
                ),
            }
        ),
        rules={
            "shop.orders.v1.OrderService/CancelOrder": {"orders:cancel"},
            "shop.orders.v1.OrderService/*": {"orders:read"},
        },
    )
    async with AppHarness(app_with(auth)) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel()), harness


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_a_call_without_credentials_is_unauthenticated(tokens: Any) -> None:
    stub, _ = tokens
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o-1"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "needs credentials" in (caught.value.details() or "")
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "UNAUTHENTICATED"


async def test_a_wrong_token_and_a_malformed_header_are_unauthenticated(tokens: Any) -> None:
    stub, _ = tokens
    for metadata in (bearer("guess"), (("authorization", "Basic dXNlcjpwYXNz"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o-1"), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_valid_token_reaches_the_handler_with_its_identity(tokens: Any) -> None:
    stub, _ = tokens
    order = await stub.GetOrder(
        orders_pb2.GetOrderRequest(order_id="o-1"), metadata=bearer("reader-token")
    )
    assert order.customer_id == "bearer:reader"
    assert order.total_cents == 1  # one scope


async def test_a_rule_the_identity_does_not_meet_is_permission_denied(tokens: Any) -> None:
    stub, _ = tokens
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelOrder(
            orders_pb2.CancelOrderRequest(order_id="o-1"), metadata=bearer("reader-token")
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "reader may not call shop.orders.v1.OrderService/CancelOrder" in (
        caught.value.details() or ""
    )
    await stub.CancelOrder(
        orders_pb2.CancelOrderRequest(order_id="o-1"), metadata=bearer("admin-token")
    )


async def test_a_server_stream_is_authenticated_and_every_item_sees_the_identity(
    tokens: Any,
) -> None:
    stub, _ = tokens
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [o async for o in stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="c"))]
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    call = stub.ListOrders(
        orders_pb2.ListOrdersRequest(customer_id="c"), metadata=bearer("admin-token")
    )
    assert [o.customer_id async for o in call] == ["admin", "admin"]


async def test_health_stays_public_and_in_process_requests_are_trusted(tokens: Any) -> None:
    _, harness = tokens
    health = health_pb2_grpc.HealthStub(await harness.channel())
    reply = await health.Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    order = await harness.send(GetOrder(order_id="o-2"))
    assert order.customer_id == "local:local"


async def test_a_public_method_accepts_anonymous_callers_but_not_bad_credentials() -> None:
    auth = Authentication(
        StaticTokens({"t": "someone"}), public=["shop.orders.v1.OrderService/GetOrder"]
    )
    async with AppHarness(app_with(auth)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"))
        assert order.customer_id == "anonymous:"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"), metadata=bearer("x"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id="o"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# ---------------------------------------------------------------- JWT


def hs256(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def fresh_claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 300, "aud": "shop", **extra}


async def test_jwts_are_checked_for_signature_expiry_and_audience() -> None:
    auth = Authentication(JWTAuthenticator(key=SECRET, algorithms=["HS256"], audience="shop"))
    async with AppHarness(app_with(auth)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())

        good = hs256(fresh_claims(scope="orders:read orders:cancel"))
        order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"), metadata=bearer(good))
        assert (order.customer_id, order.total_cents) == ("jwt:alice", 2)

        bad_tokens = {
            "signature": hs256(fresh_claims(), key="another-secret-of-at-least-32-bytes!"),
            "expired": hs256(fresh_claims(exp=int(time.time()) - 3600)),
            "audience": hs256(fresh_claims(aud="billing")),
            "no expiry": jwt.encode({"sub": "alice", "aud": "shop"}, SECRET, algorithm="HS256"),
            "not a jwt": "abc.def",
            "alg none": jwt.encode(fresh_claims(), None, algorithm="none"),
        }
        for what, token in bad_tokens.items():
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetOrder(
                    orders_pb2.GetOrderRequest(order_id="o"), metadata=bearer(token)
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, what


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 (a thread), counting requests, optionally slow."""

    def __init__(self, keys: dict[str, Any]) -> None:
        self.keys = keys
        self.requests = 0
        self.delay = 0.0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                time.sleep(owner.delay)
                body = json.dumps({"keys": list(owner.keys.values())}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JWKSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def rsa_key(kid: str) -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public, "kid": kid, "alg": "RS256", "use": "sig"}


def rs256(private: Any, kid: str, **claims: Any) -> str:
    return jwt.encode(fresh_claims(**claims), private, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks() -> Iterator[tuple[JWKSServer, Any]]:
    private, public = rsa_key("k1")
    with JWKSServer({"k1": public}) as server:
        yield server, private


async def test_jwks_keys_are_fetched_once_and_reused(jwks: Any) -> None:
    server, private = jwks
    authenticator = JWTAuthenticator(jwks_url=server.url, algorithms=["RS256"], audience="shop")
    async with AppHarness(app_with(Authentication(authenticator))) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        for n in range(5):
            token = rs256(private, "k1", sub=f"user-{n}")
            order = await stub.GetOrder(
                orders_pb2.GetOrderRequest(order_id="o"), metadata=bearer(token)
            )
            assert order.customer_id == f"jwt:user-{n}"
    assert server.requests == 1


async def test_a_slow_jwks_fetch_does_not_block_the_event_loop(jwks: Any) -> None:
    server, _ = jwks
    server.delay = 0.5
    keys = JWKS(server.url)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        key = await keys.key("k1")
    finally:
        task.cancel()
    assert key is not None
    assert ticks >= 10, f"the loop ran {ticks} times during a 0.5 s fetch: it was blocked"


async def test_unknown_key_ids_refetch_at_most_once_per_interval(jwks: Any) -> None:
    server, _ = jwks
    keys = JWKS(server.url, min_refresh=60)
    await keys.key("k1")
    for _ in range(20):
        with pytest.raises(Unauthenticated, match="key id 'forged' is not known"):
            await keys.key("forged")
    assert server.requests == 1  # made-up key ids cannot make every call fetch


async def test_a_rotated_key_is_found_by_a_refetch(jwks: Any) -> None:
    server, _ = jwks
    keys = JWKS(server.url, min_refresh=0)
    await keys.key("k1")
    _, public2 = rsa_key("k2")
    server.keys["k2"] = public2
    assert await keys.key("k2") is not None
    assert server.requests == 2


async def test_concurrent_calls_on_a_cold_cache_share_one_fetch(jwks: Any) -> None:
    server, _ = jwks
    server.delay = 0.2
    keys = JWKS(server.url)
    found = await asyncio.gather(*(keys.key("k1") for _ in range(10)))
    assert all(k is found[0] for k in found)
    assert server.requests == 1


async def test_an_unreachable_jwks_is_unavailable_not_unauthenticated() -> None:
    def refuse(url: str, timeout: float) -> bytes:
        raise OSError("connection refused")

    keys = JWKS("http://127.0.0.1:9/jwks.json", fetch=refuse)
    with pytest.raises(Unavailable, match="signing keys cannot be fetched"):
        await keys.key("k1")


def test_scope_rules_read_as_their_scopes() -> None:
    rule = require_scopes("b", "a")
    assert rule(Identity("x", "jwt", scopes=frozenset({"a", "b", "c"})), "m") is True
    assert rule(Identity("x", "jwt", scopes=frozenset({"a"})), "m") is False
    assert "require_scopes(a, b)" in repr(rule)


def test_the_pipeline_shows_authentication_outermost() -> None:
    app = app_with(Authentication(StaticTokens({"t": "x"})))
    assert "authentication -> handler" in app.describe()
