"""Health and reflection are public by default, and need credentials when configured so.

Through a real gateway on 127.0.0.1: grpc's health ``Check`` and ``Watch``,
and a reflection ``list_services`` on both v1alpha and v1, with and without
a bearer token, under ``Authentication(protect_health=..., protect_reflection=...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from shop.orders.v1 import orders_pb2

from tests.conftest import error_info
from tests.unit.test_auth import app_with, bearer
from wirebus import Authentication, Identity, StaticTokens
from wirebus.gateway.reflection import REFLECTION_V1
from wirebus.testing import AppHarness

TOKENS = StaticTokens(
    {
        "ops-token": Identity("ops", "bearer", scopes=frozenset({"ops"})),
        "reader-token": Identity("reader", "bearer", scopes=frozenset({"orders:read"})),
    }
)
ORDERS = "shop.orders.v1.OrderService"


async def harness_with(auth: Authentication) -> AsyncIterator[grpc.aio.Channel]:
    async with AppHarness(app_with(auth)) as harness:
        yield await harness.channel()


@pytest.fixture
async def public() -> AsyncIterator[grpc.aio.Channel]:
    async for channel in harness_with(Authentication(TOKENS)):
        yield channel


@pytest.fixture
async def protected() -> AsyncIterator[grpc.aio.Channel]:
    auth = Authentication(TOKENS, protect_health=True, protect_reflection=True)
    async for channel in harness_with(auth):
        yield channel


async def check(channel: grpc.aio.Channel, **kwargs: Any) -> Any:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=ORDERS), **kwargs)).status


async def listed_services(
    channel: grpc.aio.Channel, *, v1: bool = False, **kwargs: Any
) -> set[str]:
    """The service names reflection lists (v1alpha stub; v1 by its path, wire-identical)."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    if v1:
        call = channel.stream_stream(
            f"/{REFLECTION_V1}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(iter([request]), **kwargs)
    else:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([request]), **kwargs)
    replies = [reply async for reply in call]
    return {s.name for r in replies for s in r.list_services_response.service}


async def test_health_and_reflection_are_public_by_default(public: grpc.aio.Channel) -> None:
    assert await check(public) == health_pb2.HealthCheckResponse.SERVING
    assert ORDERS in await listed_services(public)
    assert ORDERS in await listed_services(public, v1=True)


async def test_a_protected_health_check_without_credentials_is_unauthenticated(
    protected: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await check(protected)

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "grpc.health.v1.Health/Check needs credentials" in (caught.value.details() or "")
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "UNAUTHENTICATED"


async def test_a_protected_health_check_and_watch_work_with_a_token(
    protected: grpc.aio.Channel,
) -> None:
    assert await check(protected, metadata=bearer("ops-token")) == (
        health_pb2.HealthCheckResponse.SERVING
    )
    watch = health_pb2_grpc.HealthStub(protected).Watch(
        health_pb2.HealthCheckRequest(service=ORDERS), metadata=bearer("ops-token")
    )
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_protected_health_watch_without_credentials_is_unauthenticated(
    protected: grpc.aio.Channel,
) -> None:
    watch = health_pb2_grpc.HealthStub(protected).Watch(health_pb2.HealthCheckRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch.read()

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("v1", [False, True], ids=["v1alpha", "v1"])
async def test_protected_reflection_needs_credentials_and_lists_services_with_them(
    protected: grpc.aio.Channel, v1: bool
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await listed_services(protected, v1=v1)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await listed_services(protected, v1=v1, metadata=bearer("not-a-token"))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert ORDERS in await listed_services(protected, v1=v1, metadata=bearer("ops-token"))


async def test_the_apps_rules_apply_to_protected_services_too() -> None:
    auth = Authentication(
        TOKENS,
        rules={"grpc.reflection.v1alpha.ServerReflection/*": {"ops"}},
        protect_reflection=True,
    )
    async for channel in harness_with(auth):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await listed_services(channel, metadata=bearer("reader-token"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

        assert ORDERS in await listed_services(channel, metadata=bearer("ops-token"))
        # health is not protected here: public as by default
        assert await check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_protecting_health_and_reflection_leaves_the_apps_methods_as_they_were(
    protected: grpc.aio.Channel,
) -> None:
    get_order = protected.unary_unary(
        f"/{ORDERS}/GetOrder",
        request_serializer=orders_pb2.GetOrderRequest.SerializeToString,
        response_deserializer=orders_pb2.Order.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_order(orders_pb2.GetOrderRequest(order_id="o-1"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

    order = await get_order(
        orders_pb2.GetOrderRequest(order_id="o-1"), metadata=bearer("ops-token")
    )
    assert order.customer_id == "bearer:ops"
