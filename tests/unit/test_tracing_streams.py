"""Tracing of a stream of requests: one server span for the whole call, named after the method.

Each stage of the pipeline (tracing, correlation, authentication, validation,
unit of work) wraps a client-streaming or bidirectional call once; the
handler's span is named after the type of the messages it reads, and the
events it emits carry the caller's trace.
"""

from __future__ import annotations

from opentelemetry.trace import SpanKind
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import OrderPlaced
from tests.unit._traced_shop import ITEMS, named, recording, shop_app
from wirebus.testing import AppHarness

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
SAMPLED = (("traceparent", f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"),)


async def test_a_client_stream_and_a_bidi_call_each_get_one_server_span_in_the_callers_trace() -> (
    None
):
    tracing, exporter = recording()
    async with AppHarness(shop_app(tracing), consume=False) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        requests = [orders_pb2.PlaceOrderRequest(customer_id="ann", items=ITEMS)] * 2
        imported = await stub.ImportOrders(iter(requests), metadata=SAMPLED)
        watch = orders_pb2.WatchOrdersRequest(order_id=imported.order_ids[0])
        call = stub.WatchOrders(iter([watch]), metadata=SAMPLED)
        assert [u.order_id async for u in call] == [imported.order_ids[0]]
        published = await harness.wait_published(OrderPlaced, count=2)
    spans = exporter.get_finished_spans()
    for method in ("ImportOrders", "WatchOrders"):
        [server] = named(spans, f"shop.orders.v1.OrderService/{method}")
        assert server.kind is SpanKind.SERVER
        assert f"{server.context.trace_id:032x}" == CLIENT_TRACE
    # named after the messages read, not the stream that carries them
    assert len(named(spans, "handler PlaceOrder")) == 1
    assert len(named(spans, "handler WatchOrders")) == 1
    for event in published:
        [parent] = [v for k, v in event.record.headers if k == "traceparent"]
        assert parent.decode().split("-")[1] == CLIENT_TRACE
