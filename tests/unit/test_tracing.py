"""Tracing: one trace from a gRPC call through the outbox and the broker to the consumers."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import OrderPlaced
from examples.shop.payments.messages import PaymentCaptured
from tests.conftest import error_info
from tests.unit._traced_shop import ITEMS, named, recording, shop_app
from wirebus.testing import AppHarness, wait_until
from wirebus.tracing import Tracing

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SAMPLED = (("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "shop=1"))
NOT_SAMPLED = (("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),)


def traceparents(record) -> list[bytes]:
    return [v for k, v in record.headers if k == "traceparent"]


async def test_one_trace_runs_from_the_grpc_call_through_the_outbox_to_each_consumer() -> None:
    tracing, exporter = recording()
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS), metadata=SAMPLED
        )
        [placed] = await harness.wait_published(OrderPlaced)
        [captured] = await harness.wait_published(PaymentCaptured)
        await harness.handled(captured)
    spans = exporter.get_finished_spans()
    [server] = named(spans, "shop.orders.v1.OrderService/PlaceOrder")
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert server.attributes is not None
    assert server.attributes["rpc.method"] == "PlaceOrder"
    assert server.attributes["rpc.service"] == "shop.orders.v1.OrderService"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert {f"{s.context.trace_id:032x}" for s in spans} == {CLIENT_TRACE}
    assert named(spans, "handler PlaceOrder")
    assert named(spans, "unit of work")
    for published in (placed, captured):  # exactly one traceparent, of the client's trace
        [parent] = traceparents(published.record)
        assert parent.decode().split("-")[1] == CLIENT_TRACE
        assert published.attributes.tracestate == "shop=1"
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert {s.attributes["cloudevents.event_type"] for s in consumers if s.attributes} >= {
        "shop.orders.v1.OrderPlaced"
    }
    [consumed] = [s for s in consumers if s.attributes and s.attributes["cloudevents.event_type"]
                  == "shop.orders.v1.OrderPlaced"]  # fmt: skip
    stored = traceparents(placed.record)[0].decode().split("-")[2]
    assert consumed.parent is not None
    assert f"{consumed.parent.span_id:016x}" == stored
    [handler] = named(spans, "handler OrderPlaced")
    assert consumed.context.span_id in ancestors(handler, spans)  # processing inside the span


def ancestors(span, spans) -> list[int]:
    by_id = {s.context.span_id: s for s in spans}
    found: list[int] = []
    while span.parent is not None and span.parent.span_id in by_id:
        found.append(span.parent.span_id)
        span = by_id[span.parent.span_id]
    return found


async def test_a_domain_errors_status_details_reach_the_client_with_tracing_on() -> None:
    tracing, exporter = recording()
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="nope"), metadata=SAMPLED)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "ORDER_NOT_FOUND"
    [server] = named(exporter.get_finished_spans(), "shop.orders.v1.OrderService/GetOrder")
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == 5


async def test_an_unsampled_parent_makes_no_spans_and_its_context_is_passed_on_as_it_came() -> None:
    tracing, exporter = recording()
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS), metadata=NOT_SAMPLED
        )
        [placed] = await harness.wait_published(OrderPlaced)
        [captured] = await harness.wait_published(PaymentCaptured)
    assert traceparents(placed.record) == [NOT_SAMPLED[0][1].encode()]
    assert traceparents(captured.record) == [NOT_SAMPLED[0][1].encode()]
    assert exporter.get_finished_spans() == ()


async def test_without_a_tracer_provider_nothing_is_traced_and_records_carry_no_traceparent() -> (
    None
):
    assert Tracing.configured() is None  # the tests never set a global provider
    app = shop_app(tracing=None)
    assert app.tracing() is None
    assert "  correlation -> " in app.describe(database=True)
    async with AppHarness(app) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS), metadata=SAMPLED
        )
        placed = await wait_until(lambda: harness.published(OrderPlaced) or None, within=5)
    assert traceparents(placed[0].record) == []


def test_a_traced_app_describes_tracing_outermost() -> None:
    tracing, _ = recording()
    pipeline = shop_app(tracing).describe(database=True).splitlines()[2]
    assert pipeline.startswith("  tracing -> examples.shop.app.log_with_correlation_id")
