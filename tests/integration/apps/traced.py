"""A traced app for subprocess tests: its finished spans are appended to a file as JSON lines.

Configured by the environment of the test that starts it (read at import,
which is fine for a test fixture app): ``TRACED_SPANS`` (the file each
process appends its spans to, one JSON object a line) and ``TRACED_TOPICS``
(the prefix of its two topics). The tracer provider is built here, before
the runtime builds the app's mediator, so the app traces from its first call.

The chain: ``PlaceOrder`` (gRPC) emits ``Placed``; ``Placed``'s handler
emits ``Captured``; ``Captured``'s handler only runs (its span ends the chain).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from wirebus import App, Command, Context, Event, Message, Router
from wirebus.tracing import Tracing

SPANS = os.environ.get("TRACED_SPANS", "spans.jsonl")
TOPICS = os.environ.get("TRACED_TOPICS", "traced")


class JsonLinesExporter(SpanExporter):
    """Appends each finished span (ids, name, kind, attributes) to ``path``, one JSON line each."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps(_row(span)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _row(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    assert context is not None
    return {
        "pid": os.getpid(),
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "name": span.name,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
    }


class LineItem(Message, proto=orders_pb2.LineItem):
    sku: str
    quantity: int
    price_cents: int


class OrderRef(Message, proto=orders_pb2.PlaceOrderResponse):
    order_id: str


class PlaceOrder(Command[OrderRef], proto=orders_pb2.PlaceOrderRequest):
    customer_id: str
    items: tuple[LineItem, ...]


class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=f"{TOPICS}.placed"):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


class Captured(
    Event, proto=payments_pb2.PaymentCaptured, key="order_id", topic=f"{TOPICS}.captured"
):
    payment_id: str
    order_id: str
    amount_cents: int
    captured_at: dt.datetime


router = Router("traced")


@router.handler
async def place_order(cmd: PlaceOrder, ctx: Context) -> OrderRef:
    total = sum(i.quantity * i.price_cents for i in cmd.items)
    order_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    ctx.emit(
        Placed(order_id=order_id, customer_id=cmd.customer_id, total_cents=total, placed_at=now)
    )
    return OrderRef(order_id=order_id)


@router.handler
async def capture(event: Placed) -> Captured:
    now = dt.datetime.now(dt.UTC)
    return Captured(
        payment_id=str(uuid.uuid4()), order_id=event.order_id, amount_cents=event.total_cents,
        captured_at=now,
    )  # fmt: skip


@router.handler
async def captured(event: Captured) -> None:
    """The end of the chain: only its CONSUMER span (and the handler's) is what the test reads."""


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(SPANS)))
app = App(
    name="traced",
    services=[orders_pb2],
    routers=[router],
    events=[Placed, Captured],
    allow_unbound=True,
    tracing=Tracing(tracer_provider=provider),
)
