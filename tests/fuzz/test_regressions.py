"""What fuzzing found, as plain examples: each one input and the behaviour it must get.

A test marked ``xfail(strict=True)`` still fails on this branch: its reason
names the defect; the fix removes the marker (the test then passes, and an
unexpected pass fails the suite until it does).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.fuzz.test_fuzz_gateway import CLIENT_ERRORS
from tests.integration.conftest import database_url, pg_url, services  # noqa: F401
from wirebus import GatewayConfig, WirebusError
from wirebus.broker import OutgoingRecord, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.codec import EventRegistry
from wirebus.dlq import REPLAY_GROUP, replay, replay_record
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import AppHarness

INT64_MAX = 2**63 - 1


async def test_an_order_whose_total_does_not_fit_int64_is_a_client_error_not_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    items = [orders_pb2.LineItem(sku="a", quantity=1, price_cents=INT64_MAX)] * 2
    async with AppHarness(app) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        with (
            caplog.at_level(logging.ERROR),
            pytest.raises(grpc.aio.AioRpcError) as caught,
        ):
            await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="c", items=items))
    assert caught.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
    ), caught.value.details()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_dlq_record_whose_original_topic_header_is_not_utf8_is_replayed_or_refused_clearly() -> (
    None
):
    record = Record("t.dlq", 0, 0, b"k", b"v", (("wirebus_original_topic", b"\x80"),))
    try:
        replayed = replay_record(record)
    except WirebusError as exc:
        assert "wirebus_original_topic" in str(exc)  # noqa: PT017 (either outcome is allowed)
    else:
        assert replayed == OutgoingRecord("t", b"k", b"v", ())


async def test_one_garbled_dlq_record_does_not_stop_the_replay_of_the_records_behind_it() -> None:
    broker = InMemoryBroker(partitions=1)
    garbled = OutgoingRecord("t.dlq", None, b"bad", (("wirebus_original_topic", b"\x80"),))
    good = OutgoingRecord("t.dlq", b"k", b"good", (("wirebus_original_topic", b"t"),))
    await broker.append([garbled, good])
    port = broker.consumer(group=REPLAY_GROUP, topics=["t.dlq"])
    publisher = broker.publisher(EventRegistry(), source="test")
    await asyncio.wait_for(replay(port, publisher, idle_seconds=0.05), 10)
    assert [r.value for r in broker.records("t")] == [b"good"]


NUL = "a\x00b"
NUL_REQUESTS = [
    pytest.param(
        "PlaceOrder",
        orders_pb2.PlaceOrderRequest(
            customer_id=NUL, items=[orders_pb2.LineItem(sku="x", quantity=1, price_cents=1)]
        ),
        id="PlaceOrder",
    ),
    pytest.param("GetOrder", orders_pb2.GetOrderRequest(order_id=NUL), id="GetOrder"),
    pytest.param("CancelOrder", orders_pb2.CancelOrderRequest(order_id=NUL), id="CancelOrder"),
    pytest.param("ListOrders", orders_pb2.ListOrdersRequest(customer_id=NUL), id="ListOrders"),
]


@pytest.mark.integration
@pytest.mark.parametrize(("method", "request_message"), NUL_REQUESTS)
async def test_a_nul_character_in_a_string_field_is_a_client_error_on_postgresql(
    pg_url: str,  # noqa: F811
    method: str,
    request_message: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = GatewayConfig(host="127.0.0.1", port=0, grace_seconds=1.0)
    runtime = Runtime(app, Settings(database_url=pg_url), gateway=config, broker=InMemoryBroker())
    async with runtime:
        assert runtime.gateway is not None
        async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as caught:
                await _answer(stub, method, request_message)
    assert caught.value.code() in CLIENT_ERRORS, caught.value.details()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def _answer(stub: orders_pb2_grpc.OrderServiceStub, method: str, request: object) -> None:
    """Call ``method`` with ``request`` and read its whole answer (every item of a stream)."""
    call = getattr(stub, method)
    if method == "ListOrders":
        _ = [order async for order in call(request)]
    else:
        await call(request)
