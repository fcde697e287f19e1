"""Past its capacity the gateway refuses at once; on stop it refuses with UNAVAILABLE.

``GatewayConfig(max_concurrent_calls=N)`` bounds the app's calls in flight
(unary and streaming alike); call N+1 gets RESOURCE_EXHAUSTED at once, a
code client retry policies retry. Health and reflection are not counted.
Stopping refuses every call that was not yet running with UNAVAILABLE while
the running ones finish within the grace. All over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from wirebus import App, ConfigurationError, Gateway, GatewayConfig, Router
from wirebus.testing import wait_until


class SlowShop:
    """GetOrder and ListOrders that hold their slot until ``release`` is set."""

    def __init__(self) -> None:
        self.running = 0
        self.release = asyncio.Event()
        router = Router()

        @router.handler
        async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
            self.running += 1
            await self.release.wait()
            return orders_pb2.Order(order_id=query.order_id)

        @router.handler
        async def list_orders(
            query: orders_pb2.ListOrdersRequest,
        ) -> AsyncIterator[orders_pb2.Order]:
            self.running += 1
            yield orders_pb2.Order(order_id="first")
            await self.release.wait()
            yield orders_pb2.Order(order_id="last")

        self.app = App(name="slow", services=[orders_pb2], routers=[router], allow_unbound=True)

    async def until_running(self, count: int) -> None:
        await wait_until(lambda: self.running >= count, within=10)


async def until_not_serving(watch: AsyncIterator[health_pb2.HealthCheckResponse]) -> None:
    """Read a health ``Watch`` stream until the gateway says NOT_SERVING (it stops)."""
    async for reply in watch:
        if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
    watch.cancel()  # type: ignore[attr-defined]  # else the stop waits for it


def watch_health(channel: grpc.aio.Channel) -> AsyncIterator[health_pb2.HealthCheckResponse]:
    return health_pb2_grpc.HealthStub(channel).Watch(  # type: ignore[return-value]
        health_pb2.HealthCheckRequest(service=""), timeout=30
    )


@contextlib.asynccontextmanager
async def serving(shop: SlowShop, limit: int) -> AsyncIterator[grpc.aio.Channel]:
    config = GatewayConfig(port=0, max_concurrent_calls=limit, grace_seconds=1)
    async with (
        Gateway(shop.app, config) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        yield channel


def get(stub: orders_pb2_grpc.OrderServiceStub, order_id: str = "o") -> asyncio.Future[object]:
    return asyncio.ensure_future(
        stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=30)
    )


async def refusal(call: asyncio.Future[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_the_call_past_the_limit_gets_resource_exhausted_at_once_saying_why():
    shop = SlowShop()
    async with serving(shop, 2) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        running = [get(stub, "a"), get(stub, "b")]
        await shop.until_running(2)
        started = time.monotonic()
        code, details = await refusal(get(stub, "c"))
        assert time.monotonic() - started < 2  # at once, not after the running calls
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at capacity: 2 calls in flight (max_concurrent_calls=2)" in details
        shop.release.set()
        assert [r.order_id for r in await asyncio.gather(*running)] == ["a", "b"]  # type: ignore[attr-defined]


async def test_a_stream_in_flight_holds_a_slot_like_a_unary_call():
    shop = SlowShop()
    async with serving(shop, 1) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        stream = stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="c"), timeout=30)
        assert (await stream.read()).order_id == "first"
        code, _ = await refusal(get(stub))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOrders(orders_pb2.ListOrdersRequest(), timeout=30).read()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        shop.release.set()
        assert (await stream.read()).order_id == "last"


async def test_once_a_slot_frees_calls_succeed_again():
    shop = SlowShop()
    async with serving(shop, 1) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        first = get(stub, "first")
        await shop.until_running(1)
        code, _ = await refusal(get(stub))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        shop.release.set()
        await first
        replies = [await get(stub, f"again-{i}") for i in range(3)]
        assert [r.order_id for r in replies] == ["again-0", "again-1", "again-2"]  # type: ignore[attr-defined]


async def test_health_still_answers_when_every_slot_is_taken():
    shop = SlowShop()
    async with serving(shop, 1) as channel:
        busy = get(orders_pb2_grpc.OrderServiceStub(channel))
        await shop.until_running(1)
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        shop.release.set()
        await busy


def test_max_concurrent_calls_must_be_positive():
    with pytest.raises(ConfigurationError, match="max_concurrent_calls"):
        GatewayConfig(max_concurrent_calls=0)


async def test_on_stop_running_calls_finish_and_every_other_call_gets_unavailable_at_once():
    shop = SlowShop()
    gateway = Gateway(shop.app, GatewayConfig(port=0, max_concurrent_calls=4, grace_seconds=10))
    await gateway.start()
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        running = [get(stub, f"run-{i}") for i in range(4)]
        await shop.until_running(4)
        watch = watch_health(channel)
        stopping = asyncio.ensure_future(gateway.stop())
        await until_not_serving(watch)
        started = time.monotonic()
        code, details = await refusal(get(stub, "late"))
        assert time.monotonic() - started < 2
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in details
        shop.release.set()
        replies = await asyncio.gather(*running)
        assert [r.order_id for r in replies] == [f"run-{i}" for i in range(4)]  # type: ignore[attr-defined]
        await stopping


async def test_a_burst_over_grpc_cores_default_pending_queue_is_served_not_cancelled() -> None:
    """grpc core cancelled the calls over its default of 1,000 waiting for the process
    (2,000 calls at once: ~10 % CANCELLED); the gateway raises that bound."""
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        await asyncio.sleep(0.005)  # as on a database: calls pile up
        return orders_pb2.Order(order_id=query.order_id)

    app = App(name="burst", services=[orders_pb2], routers=[router], allow_unbound=True)
    codes: dict[str, int] = {}
    async with Gateway(app, GatewayConfig(port=0, grace_seconds=1)) as gateway:
        channels = [grpc.aio.insecure_channel(gateway.address) for _ in range(4)]
        stubs = [orders_pb2_grpc.OrderServiceStub(c) for c in channels]

        async def one(n: int) -> None:
            request = orders_pb2.GetOrderRequest(order_id=str(n))
            try:
                await stubs[n % 4].GetOrder(request, timeout=60)
                name = "OK"
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
            codes[name] = codes.get(name, 0) + 1

        try:
            await asyncio.gather(*(one(n) for n in range(2_500)))
        finally:
            for channel in channels:
                await channel.close()
    assert codes == {"OK": 2_500}


def test_the_pending_queue_bound_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="max_pending_calls must be positive"):
        GatewayConfig(max_pending_calls=0)
