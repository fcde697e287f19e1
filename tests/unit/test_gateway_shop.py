"""The shop example's rules, proved through a real gRPC channel on 127.0.0.1.

The shop runs in an ``AppHarness``: as ``wirebus run`` runs it, with its
outbox, relay and consumers over the in-memory broker.
"""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from examples.shop.orders.messages import OrderPlaced
from examples.shop.payments.messages import PaymentCaptured
from tests.conftest import bad_request, error_info
from wirebus.testing import AppHarness

ITEMS = [
    orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250),
    orders_pb2.LineItem(sku="pen", quantity=1, price_cents=199),
]


@pytest.fixture
async def shop():
    """``(stub, harness)``: the shop's gateway stub, and the harness it runs in."""
    async with AppHarness(app) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel()), harness


async def place(stub, customer_id: str = "alice", items=ITEMS) -> str:
    reply = await stub.PlaceOrder(
        orders_pb2.PlaceOrderRequest(customer_id=customer_id, items=items)
    )
    return reply.order_id


async def test_placed_order_is_read_back_with_total_and_paid_by_the_payments_slice(shop):
    stub, harness = shop
    order_id = await place(stub)
    await harness.idle()  # OrderPlaced consumed by payments, PaymentCaptured by orders
    order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
    assert order.order_id == order_id
    assert order.customer_id == "alice"
    assert list(order.items) == ITEMS
    assert order.total_cents == 2 * 1250 + 199
    assert order.status == orders_pb2.ORDER_STATUS_PAID
    assert order.placed_at.seconds > 1_700_000_000
    [placed], [captured] = harness.published(OrderPlaced), harness.published(PaymentCaptured)
    assert placed.key == captured.key == order_id


async def test_list_orders_streams_only_that_customers_orders_in_order(shop):
    stub, _ = shop
    first = await place(stub, "alice")
    await place(stub, "bob")
    second = await place(stub, "alice")
    streamed = [o async for o in stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="alice"))]
    assert [o.order_id for o in streamed] == [first, second]
    assert all(o.customer_id == "alice" for o in streamed)


async def test_list_orders_of_an_unknown_customer_is_an_empty_stream(shop):
    stub, _ = shop
    assert [o async for o in stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="x"))] == []


async def test_cancel_marks_the_order_cancelled(shop):
    stub, _ = shop
    order_id = await place(stub)
    assert await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id, reason="r")) == (
        orders_pb2.CancelOrderResponse()
    )
    order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
    assert order.status == orders_pb2.ORDER_STATUS_CANCELLED


async def test_cancelling_a_cancelled_order_is_failed_precondition(shop):
    stub, _ = shop
    order_id = await place(stub)
    await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CancelOrder(orders_pb2.CancelOrderRequest(order_id=order_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "ORDER_ALREADY_CANCELLED"


async def test_place_order_with_no_items_is_invalid_argument_naming_items(shop):
    stub, _ = shop
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="alice"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["items"]


async def test_place_order_with_quantity_below_one_names_the_item_field(shop):
    stub, _ = shop
    items = [ITEMS[0], orders_pb2.LineItem(sku="x", quantity=0, price_cents=5)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await place(stub, items=items)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = bad_request(caught.value)
    assert bad is not None
    assert [v.field for v in bad.field_violations] == ["items[1].quantity"]
    assert bad.field_violations[0].description == "must be greater than or equal to 1 [int32.gte]"


async def test_get_order_of_unknown_id_is_not_found_with_reason_and_metadata(shop):
    stub, _ = shop
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="missing"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "ORDER_NOT_FOUND",
        "shop",
        {"order_id": "missing"},
    )


async def test_failed_placement_leaves_no_order_behind(shop):
    stub, _ = shop
    with pytest.raises(grpc.aio.AioRpcError):
        await place(stub, "carol", items=[orders_pb2.LineItem(sku="x", quantity=0)])
    assert [
        o async for o in stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="carol"))
    ] == []


async def test_behaviour_logs_each_request_with_the_callers_correlation_id(shop, caplog):
    stub, _ = shop
    with caplog.at_level(logging.INFO, logger="examples.shop"):
        await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="a", items=ITEMS),
            metadata=(("x-correlation-id", "corr-42"),),
        )
    assert any("[corr-42] PlaceOrder ok" in r.getMessage() for r in caplog.records)
