"""The shop's ImportOrders (client streaming) and WatchOrders (bidi), on SQLite.

The shop runs in an ``AppHarness`` as ``wirebus run`` runs it (outbox,
relay, consumers over the in-memory broker), called through a real gRPC
channel on 127.0.0.1 and in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from examples.shop.orders.handlers import MAX_IMPORT_ORDERS, MAX_WATCHED_ORDERS
from examples.shop.orders.messages import (
    LineItem,
    OrderPlaced,
    OrderStatus,
    PlaceOrder,
    WatchOrders,
)
from tests.conftest import bad_request, error_info
from wirebus.testing import AppHarness

ITEMS = [orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250)]
Shop = tuple[orders_pb2_grpc.OrderServiceStub, AppHarness]


async def shop_with(**options: bool) -> AsyncIterator[Shop]:
    async with AppHarness(app, **options) as harness:  # type: ignore[arg-type]
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel()), harness


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async for served in shop_with():
        yield served


@pytest.fixture
async def idle_shop() -> AsyncIterator[Shop]:
    """The shop with its consumers idle: an order stays PENDING until the test moves it."""
    async for served in shop_with(consume=False):
        yield served


def order(customer_id: str) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(customer_id=customer_id, items=ITEMS)


def watch(order_id: str, *, unwatch: bool = False) -> orders_pb2.WatchOrdersRequest:
    return orders_pb2.WatchOrdersRequest(order_id=order_id, unwatch=unwatch)


async def placed_ids(stub: orders_pb2_grpc.OrderServiceStub, customer_id: str) -> list[str]:
    request = orders_pb2.ListOrdersRequest(customer_id=customer_id)
    return [o.order_id async for o in stub.ListOrders(request)]


# ---------------------------------------------------------------- ImportOrders


async def test_import_orders_places_every_streamed_order_and_answers_their_ids(shop: Shop) -> None:
    stub, harness = shop
    reply = await stub.ImportOrders(iter([order("ann"), order("bob"), order("ann")]))
    assert reply.imported == 3
    assert len(set(reply.order_ids)) == 3
    assert await placed_ids(stub, "ann") == [reply.order_ids[0], reply.order_ids[2]]
    published = await harness.wait_published(OrderPlaced, count=3)
    assert [p.key for p in published] == list(reply.order_ids)


async def test_an_invalid_order_in_an_import_places_none_of_them(shop: Shop) -> None:
    stub, harness = shop
    bad = orders_pb2.PlaceOrderRequest(customer_id="cid")  # no items
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(iter([order("cid"), order("cid"), bad, order("cid")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(caught.value)
    assert violations is not None
    assert [v.field for v in violations.field_violations] == ["items"]
    assert await placed_ids(stub, "cid") == []
    later = await stub.PlaceOrder(order("dan"))  # published after anything the import left
    [published] = await harness.wait_published(OrderPlaced)
    assert published.key == later.order_id


async def test_an_import_of_more_than_its_limit_places_none(shop: Shop) -> None:
    stub, _ = shop
    too_many = (order("ivy") for _ in range(MAX_IMPORT_ORDERS + 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(too_many)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "IMPORT_TOO_LARGE"
    assert await placed_ids(stub, "ivy") == []


async def test_import_orders_runs_in_process_too(shop: Shop) -> None:
    stub, harness = shop
    item = LineItem(sku="pen", quantity=1, price_cents=199)
    cmds = [PlaceOrder(customer_id="eve", items=(item,)) for _ in range(2)]
    imported = await harness.send_stream(PlaceOrder, cmds)
    assert imported.imported == 2
    assert await placed_ids(stub, "eve") == list(imported.order_ids)


# ---------------------------------------------------------------- WatchOrders


async def test_watch_orders_answers_the_current_status_then_each_change(idle_shop: Shop) -> None:
    stub, _ = idle_shop
    placed = await stub.PlaceOrder(order("fay"))
    call = stub.WatchOrders()
    await call.write(watch(placed.order_id))
    first = await call.read()
    assert (first.order_id, first.status) == (placed.order_id, orders_pb2.ORDER_STATUS_PENDING)
    await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=placed.order_id))
    change = await call.read()
    assert (change.order_id, change.status) == (placed.order_id, orders_pb2.ORDER_STATUS_CANCELLED)
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF  # the client closed its side: the call ends
    assert await call.code() == grpc.StatusCode.OK


async def test_watch_orders_sees_the_payments_slice_mark_an_order_paid(shop: Shop) -> None:
    stub, _ = shop
    placed = await stub.PlaceOrder(order("gus"))
    call = stub.WatchOrders()
    await call.write(watch(placed.order_id))
    statuses = []
    async with asyncio.timeout(10):
        while orders_pb2.ORDER_STATUS_PAID not in statuses:
            statuses.append((await call.read()).status)
    assert statuses in (
        [orders_pb2.ORDER_STATUS_PENDING, orders_pb2.ORDER_STATUS_PAID],
        [orders_pb2.ORDER_STATUS_PAID],  # paid before the watch began
    )
    call.cancel()


async def test_an_unwatched_order_is_no_longer_answered(idle_shop: Shop) -> None:
    stub, _ = idle_shop
    a, b, c = [(await stub.PlaceOrder(order("hal"))).order_id for _ in range(3)]
    call = stub.WatchOrders()
    for order_id in (a, b):
        await call.write(watch(order_id))
    assert {(await call.read()).order_id for _ in range(2)} == {a, b}
    await call.write(watch(b, unwatch=True))
    await call.write(watch(c))
    assert (await call.read()).order_id == c  # requests are handled in order: b is unwatched
    for order_id in (b, a):
        await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id))
    change = await call.read()
    assert (change.order_id, change.status) == (a, orders_pb2.ORDER_STATUS_CANCELLED)
    call.cancel()


async def test_watch_orders_runs_in_process_too(idle_shop: Shop) -> None:
    stub, harness = idle_shop
    placed = await stub.PlaceOrder(order("ida"))
    requests = [WatchOrders(order_id=placed.order_id)]
    updates = [update async for update in harness.bidi(WatchOrders, requests)]
    assert [(u.order_id, u.status) for u in updates] == [(placed.order_id, OrderStatus.PENDING)]


async def test_a_watch_of_more_orders_than_its_limit_ends_with_invalid_argument(
    idle_shop: Shop,
) -> None:
    stub, _ = idle_shop
    imported = await stub.ImportOrders(order("jon") for _ in range(MAX_WATCHED_ORDERS + 1))
    ids = list(imported.order_ids)
    call = stub.WatchOrders()
    for order_id in [ids[0], *ids[:MAX_WATCHED_ORDERS]]:  # the first twice: it counts once
        await call.write(watch(order_id))
    answered = {(await call.read()).order_id for _ in range(MAX_WATCHED_ORDERS)}
    assert answered == set(ids[:MAX_WATCHED_ORDERS])
    await call.write(watch(ids[MAX_WATCHED_ORDERS]))  # one more than the limit
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "TOO_MANY_WATCHED"


async def test_watching_an_order_that_does_not_exist_ends_the_call_with_not_found(
    idle_shop: Shop,
) -> None:
    stub, _ = idle_shop
    call = stub.WatchOrders(iter([watch("no-such-order")]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, dict(info.metadata)) == ("ORDER_NOT_FOUND", {"order_id": "no-such-order"})
