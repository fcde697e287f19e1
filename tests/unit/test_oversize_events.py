"""An event larger than the producer can send is refused at commit, with nothing persisted.

A record over the Kafka producer's ``max_request_size`` (1 MiB by default)
could never be published: accepted, its outbox row would fail every attempt
and be parked for good, the order never paid (issue 12, defect 4). The unit
of work refuses it instead: the caller gets RESOURCE_EXHAUSTED naming the
event type and the sizes, and the transaction rolls back.
"""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.conftest import error_info
from wirebus.broker import HeldBack, OutgoingRecord, PublishError
from wirebus.brokers.memory import InMemoryBroker
from wirebus.outbox.relay import outbox_stats
from wirebus.outbox.rows import MAX_RECORD_BYTES, record_size
from wirebus.testing import AppHarness

ONE_POINT_TWO_MB = 1_200_000


def order_of(sku_bytes: int, customer_id: str = "big") -> orders_pb2.PlaceOrderRequest:
    item = orders_pb2.LineItem(sku="x" * sku_bytes, quantity=1, price_cents=100)
    return orders_pb2.PlaceOrderRequest(customer_id=customer_id, items=[item])


async def test_an_order_whose_event_is_too_large_to_publish_is_refused_and_not_persisted() -> None:
    async with AppHarness(app) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.PlaceOrder(order_of(ONE_POINT_TWO_MB))

        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        message = refused.value.details() or ""
        assert "shop.orders.v1.OrderPlaced" in message
        assert f"more than the {MAX_RECORD_BYTES} bytes" in message
        info = error_info(refused.value)
        assert info is not None
        assert info.reason == "EVENT_TOO_LARGE"
        assert info.metadata["event_type"] == "shop.orders.v1.OrderPlaced"
        assert int(info.metadata["record_bytes"]) > ONE_POINT_TWO_MB
        assert info.metadata["limit_bytes"] == str(MAX_RECORD_BYTES)
        # Nothing persisted: no order, no outbox row.
        listed = stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id="big"))
        assert [o async for o in listed] == []
        stats = await outbox_stats(harness.database)
        assert (stats.pending, stats.failed) == (0, 0)


async def test_an_order_whose_event_fits_the_producer_limit_is_accepted() -> None:
    async with AppHarness(app) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())

        ref = await stub.PlaceOrder(order_of(MAX_RECORD_BYTES - 2_000, customer_id="fits"))

        order = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=ref.order_id))
        assert order.customer_id == "fits"


def test_a_record_is_sized_as_kafkas_producer_sizes_it() -> None:
    headers = [("ce_type", b"shop.orders.v1.OrderPlaced"), ("ce_id", b"0" * 36)]
    # 61 (batch header) + 21 (record overhead) + key 1+3 + value 2+200 + 1 headers count
    # + (1+7 + 1+26) + (1+5 + 1+36)
    assert record_size(b"o-1", b"v" * 200, headers) == 61 + 21 + 4 + 202 + 1 + 35 + 43
    assert record_size(None, b"", []) == 61 + 21 + 1 + 1 + 1


async def test_a_tombstone_is_sized_and_appended_to_the_in_memory_broker() -> None:
    """Fuzzing found it: a record with no value (a Kafka tombstone) failed the size check
    with a TypeError, so the in-memory broker could not carry one."""
    assert record_size(b"k", None, []) == 61 + 21 + 2 + 1 + 1
    assert record_size(b"k", None, [("h", None)]) == 61 + 21 + 2 + 1 + 1 + 2 + 1  # type: ignore[list-item]
    broker = InMemoryBroker(partitions=1)
    [stored] = await broker.append([OutgoingRecord("t", b"k", None, ())])  # type: ignore[arg-type]
    assert stored.value is None


def record(key: bytes, size: int) -> OutgoingRecord:
    return OutgoingRecord("shop.orders.v1", key, b"v" * size, (("ce_id", b"1"),))


async def test_the_in_memory_broker_refuses_a_record_over_the_producer_limit_as_kafka_does() -> (
    None
):
    broker = InMemoryBroker()
    publisher = broker.publisher(app.registry(), source="shop")

    results = await publisher.send_records_settled(
        [record(b"a", 10), record(b"b", ONE_POINT_TWO_MB), record(b"b", 10), record(b"c", 10)]
    )

    assert results[0] is None
    assert isinstance(results[1], PublishError)
    assert not results[1].retriable  # sending it again can never succeed
    assert "more than max_record_bytes (1048576)" in str(results[1])
    assert isinstance(results[2], HeldBack)  # the later record of its key keeps its order
    assert results[3] is None
    assert [r.key for r in broker.records("shop.orders.v1")].count(b"b") == 0
    with pytest.raises(PublishError, match="more than max_record_bytes"):
        await publisher.send_records([record(b"d", ONE_POINT_TWO_MB)])
