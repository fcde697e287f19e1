"""Events sent through a publisher (no outbox) carry the trace context of the sending work."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from examples.shop.orders.messages import OrderPlaced
from tests.unit._traced_shop import recording, shop_app
from wirebus.brokers.memory import InMemoryBroker
from wirebus.runtime import Runtime
from wirebus.settings import Settings


def placed(order_id: str) -> OrderPlaced:
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    return OrderPlaced(order_id=order_id, customer_id="c-1", items=(), total_cents=1, placed_at=at)


def traceparents(record) -> list[bytes]:
    return [v for k, v in record.headers if k == "traceparent"]


def traceparent_of(span) -> bytes:
    context = span.get_span_context()
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}".encode()


async def test_a_publisher_with_tracing_sends_exactly_one_traceparent_of_the_current_span() -> None:
    tracing, _ = recording()
    app = shop_app(tracing)
    broker = InMemoryBroker()
    publisher = broker.publisher(app.registry(), source="shop", tracing=tracing)
    with tracing.tracer.start_as_current_span("work") as span:
        await publisher.publish(placed("o-1"))
        await publisher.publish_many([placed("o-2")])
    records = broker.records("shop.orders.v1")
    assert [traceparents(r) for r in records] == [[traceparent_of(span)]] * 2


async def test_a_publisher_without_tracing_sends_no_traceparent() -> None:
    tracing, _ = recording()
    broker = InMemoryBroker()
    publisher = broker.publisher(shop_app(tracing).registry(), source="shop")
    with tracing.tracer.start_as_current_span("work"):
        await publisher.publish(placed("o-1"))
    [record] = broker.records("shop.orders.v1")
    assert traceparents(record) == []


async def test_the_runtimes_publisher_carries_the_apps_trace_context(tmp_path: Path) -> None:
    tracing, _ = recording()
    app = shop_app(tracing)
    broker = InMemoryBroker()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with Runtime(app, settings, broker=broker, consume=False) as runtime:
        assert runtime.relay_worker is not None
        with tracing.tracer.start_as_current_span("work") as span:
            await runtime.relay_worker.publisher.publish(placed("o-1"))
    [record] = broker.records("shop.orders.v1")
    assert traceparents(record) == [traceparent_of(span)]


async def test_an_event_published_outside_any_work_names_its_own_chain_by_its_id() -> None:
    broker = InMemoryBroker()
    publisher = broker.publisher(shop_app().registry(), source="shop")
    await publisher.publish(placed("o-1"))
    await publisher.publish(placed("o-2"))
    first, second = broker.records("shop.orders.v1")
    for record in (first, second):
        headers = dict(record.headers)
        assert headers["ce_correlationid"] == headers["ce_causationid"] == headers["ce_id"]
    assert dict(first.headers)["ce_id"] != dict(second.headers)["ce_id"]
