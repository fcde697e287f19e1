"""Every kind of handler's travelling events reach Kafka through the PostgreSQL outbox.

The runtime runs the app as ``wirebus run`` does (gateway off, relay and
consumers on) against the real PostgreSQL and Kafka: a request handler, a
streaming handler and an event handler (fed by a consumer) each emit an
event declared as travelling; each one is on its topic, none stays in-process.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
from shop.orders.v1 import orders_pb2

from tests.integration.conftest import read_records
from wirebus import App, Command, Context, Event, Query, Router
from wirebus.cloudevents import Attributes
from wirebus.runtime import Runtime
from wirebus.settings import Settings

pytestmark = pytest.mark.integration

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def pipeline_app(topic: str) -> tuple[App, type, type, type]:
    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str = "c-1"
        total_cents: int = 100
        placed_at: dt.datetime = NOW

    class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id", topic=f"{topic}.c"):
        order_id: str
        reason: str = ""

    class Place(Command[str]):
        order_id: str

    class Feed(Query[int]):
        count: int

    router = Router("pipeline")

    @router.handler
    async def place(cmd: Place, ctx: Context) -> str:
        ctx.emit(Placed(order_id=cmd.order_id))
        return cmd.order_id

    @router.handler
    async def feed(q: Feed, ctx: Context) -> AsyncIterator[int]:
        for i in range(q.count):
            ctx.emit(Placed(order_id=f"stream-{i}"))
            yield i

    @router.handler
    async def on_placed(event: Placed, ctx: Context) -> None:  # consumed from Kafka
        ctx.emit(Cancelled(order_id=event.order_id, reason="handled"))

    app = App(name="pipeline", routers=[router], events=[Placed, Cancelled])
    return app, Place, Feed, Cancelled


async def test_request_stream_and_event_handlers_events_reach_kafka_through_the_outbox(
    pg_url: str, bootstrap: str, fresh: str
) -> None:
    app, Place, Feed, _ = pipeline_app(fresh)
    settings = Settings(database_url=pg_url, kafka_bootstrap=bootstrap)
    async with Runtime(app, settings, consume=True, group=f"{fresh}-g") as runtime:
        assert runtime.mediator is not None
        await runtime.mediator.send(Place(order_id="request"))
        assert [i async for i in runtime.mediator.stream(Feed(count=2))] == [0, 1]
        # the consumer hands each Placed to on_placed, whose event travels too
        cancelled = await read_records(bootstrap, f"{fresh}.c", 3, within=60)

    placed = await read_records(bootstrap, fresh, 3, within=30)
    assert sorted(r.key for r in placed) == [b"request", b"stream-0", b"stream-1"]
    assert sorted(r.key for r in cancelled) == [b"request", b"stream-0", b"stream-1"]
    for record in [*placed, *cancelled]:
        attributes = Attributes.from_headers(record.headers)
        assert attributes.source == "pipeline"
    assert {Attributes.from_headers(r.headers).type for r in cancelled} == {
        "shop.orders.v1.OrderCancelled"
    }
