"""The example shop as an app of its own, with the tracing (or not) a test chooses."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from shop.orders.v1 import orders_pb2

import examples.shop.app as shop
from wirebus import App
from wirebus.tracing import Tracing

ITEMS = (orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250),)


def shop_app(tracing: Tracing | bool | None = False) -> App:
    """A new App with the shop's handlers (the example's own App decides its tracing once)."""
    return App(
        name="shop",
        services=[orders_pb2],
        routers=[shop.orders_router, shop.inventory_router, shop.payments_router],
        providers=[shop.ShopProvider(), shop.PaymentsProvider()],
        behaviours=[shop.log_with_correlation_id],
        metadata=shop.orders_metadata,
        events=[
            shop.OrderPlaced,
            shop.OrderCancelled,
            shop.CapturePayment,
            shop.PaymentCaptured,
            shop.PaymentDeclined,
            shop.OrderStatusChanged,
            shop.OrderSnapshot,
        ],
        sagas=[shop.checkout_saga()],
        tracing=tracing,
    )


def recording() -> tuple[Tracing, InMemorySpanExporter]:
    """A Tracing on a private SDK provider whose spans land in an in-memory exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(tracer_provider=provider), exporter


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]
