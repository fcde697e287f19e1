"""What a traced app does when the trace is not sampled: no spans, and the decision travels."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, SamplingResult, StaticSampler
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.orders.messages import (
    OrderPlaced,
    OrderSnapshot,
    OrderStatus,
    OrderStatusChanged,
)
from examples.shop.payments.messages import PaymentCaptured
from tests.unit._traced_shop import ITEMS, shop_app
from wirebus.testing import AppHarness
from wirebus.tracing import Tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
RANDOM_NOT_SAMPLED = (("traceparent", f"00-{TRACE}-00f067aa0ba902b7-02"),)


class CountingAlwaysOff(StaticSampler):
    """The SDK's ALWAYS_OFF, counting how often it is asked."""

    def __init__(self) -> None:
        super().__init__(Decision.DROP)
        self.asked = 0

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        self.asked += 1
        return super().should_sample(*args, **kwargs)  # type: ignore[arg-type]


def traceparents(record) -> list[str]:
    return [v.decode() for k, v in record.headers if k == "traceparent"]


def dropping(sampler: StaticSampler) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(sampler))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(tracer_provider=provider), exporter


async def test_a_parent_with_only_the_random_flag_is_not_sampled_and_passed_on_as_it_came() -> None:
    tracing, exporter = dropping(CountingAlwaysOff())
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        await stub.PlaceOrder(
            orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS),
            metadata=RANDOM_NOT_SAMPLED,
        )
        [placed] = await harness.wait_published(OrderPlaced)
        [captured] = await harness.wait_published(PaymentCaptured)
    assert traceparents(placed.record) == [RANDOM_NOT_SAMPLED[0][1]]
    assert traceparents(captured.record) == [RANDOM_NOT_SAMPLED[0][1]]
    assert exporter.get_finished_spans() == ()


async def test_with_a_sampler_dropping_every_root_no_sampler_is_asked_and_unsampled_travels() -> (
    None
):
    sampler = CountingAlwaysOff()
    tracing, exporter = dropping(sampler)
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="alice", items=ITEMS))
        [placed] = await harness.wait_published(OrderPlaced)
        [captured] = await harness.wait_published(PaymentCaptured)
        await harness.handled(captured)
    [parent] = traceparents(placed.record)
    version, trace_id, span_id, flags = parent.split("-")
    assert (version, flags) == ("00", "00")  # a new trace, not sampled
    assert int(trace_id, 16) != 0
    assert int(span_id, 16) != 0
    assert traceparents(captured.record) == [parent]  # the consumer passed it on
    assert exporter.get_finished_spans() == ()
    assert sampler.asked == 0  # no SDK span was started for the decision


def _of_the_call(event: object) -> bool:
    """An event PlaceOrder itself emits (not one of the checkout saga that follows)."""
    if isinstance(event, OrderStatusChanged):
        return event.status is OrderStatus.PENDING
    if isinstance(event, OrderSnapshot):
        return event.order.status is OrderStatus.PENDING
    return isinstance(event, OrderPlaced)


async def test_a_dropped_root_is_one_new_trace_per_call_shared_by_all_its_events() -> None:
    tracing, _ = dropping(CountingAlwaysOff())
    async with AppHarness(shop_app(tracing)) as harness:
        stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        for customer in ("alice", "bob"):
            await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id=customer, items=ITEMS))
        # each order: its OrderPlaced, OrderStatusChanged and OrderSnapshot
        await harness.wait_published(OrderPlaced, count=2)
        events = [p for p in harness.published() if _of_the_call(p.event)]

    by_order: dict[str, set[str]] = {}
    for published in events:
        [parent] = traceparents(published.record)
        by_order.setdefault(published.record.key.decode(), set()).add(parent)
    assert len(events) == 6
    assert [len(parents) for parents in by_order.values()] == [1, 1]  # one trace per call
    first, second = (next(iter(p)) for p in by_order.values())
    assert first.split("-")[1] != second.split("-")[1]  # a new trace for each call
    assert first.endswith("-00")  # not sampled
    assert second.endswith("-00")
